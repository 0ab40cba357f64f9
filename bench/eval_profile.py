"""Where the vfstack path spends its time on short transactions (the
workload of mTCP's Fig. 7a): py-spy samples the stack process and the
SDK app (`http_server`, 64 B) while ab runs in the peer namespace.

Shares are of the samples in which a thread was busy (py-spy leaves out
idle threads): `self` counts the function on top of the stack, `total`
every function on it. py-spy pauses a process for each sample, so the
rate under profiling is lower than without it.

    pip install py-spy          (or the `bench` extra)
    python3 -m bench.eval_profile [--seconds 15] [--concurrency 64] [--native] [--json]   (as root)
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.evaluation import APP_PORT, QUICK, REPO, STACK_ADDRESS, Bed, ab
from tests.support.netns import private_port
from tests.support.stack import running_stack


def hot_spots(raw: str, top: int) -> dict:
    """Top functions and files by self and total samples, from py-spy's raw
    (collapsed) format: `frame;frame;...;frame count`, root first."""
    self_by: collections.Counter = collections.Counter()
    file_by: collections.Counter = collections.Counter()
    total_by: collections.Counter = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        samples += n
        self_by[frames[-1]] += n
        file_by[frames[-1].rpartition("(")[2].rstrip(")") or "?"] += n
        for frame in set(frames):
            total_by[frame] += n

    def shares(counter: collections.Counter) -> list[dict]:
        return [
            {"frame": frame, "samples": n, "share": n / samples}
            for frame, n in counter.most_common(top)
        ]

    return {
        "samples": samples,
        "self": shares(self_by),
        "self_by_file": shares(file_by),
        "total": shares(total_by),
    }


def record(
    pids: dict[str, int], seconds: float, out: Path, native: bool
) -> dict[str, subprocess.Popen]:
    """Start one `py-spy record` per process (raw format, by function);
    `native` also samples C frames, without which the compiled unit's time
    is charged to its interpreted caller."""
    procs = {}
    for name, pid in pids.items():
        argv = ["py-spy", "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200"]
        argv += ["-f", "raw", "--nolineno", "-o", str(out / f"{name}.txt")]
        argv += ["--native"] if native else []
        procs[name] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return procs


def run(seconds: int, concurrency: int, top: int, out: Path, native: bool, progress) -> dict:
    if shutil.which("py-spy") is None:
        sys.exit("py-spy is not installed: pip install py-spy (or the `bench` extra)")
    out.mkdir(parents=True, exist_ok=True)
    options = argparse.Namespace(pin=None, profile=QUICK, no_wrk=True)
    with (
        private_port(vfs=1) as port,
        running_stack(port.vf(0), f"{STACK_ADDRESS}/24", "vf0") as stack,
    ):
        bed = Bed(port, "", stack, options, progress)
        with bed.server("stack", "http_server", "--port", str(APP_PORT), "--size", "64") as app:
            progress("warm-up ...")
            ab(bed, app, concurrency, 1)
            progress(f"ab -c {concurrency} for {seconds} s under py-spy (stack and app) ...")
            pids = {"stack": stack.proc.pid, "app": app.pids[0]}
            spies = record(pids, seconds + 1, out, native)
            time.sleep(0.5)  # py-spy attached
            load = ab(bed, app, concurrency, seconds)
            for name, spy in spies.items():
                if spy.wait(timeout=60) != 0:
                    raise RuntimeError(f"py-spy on {name} failed: {spy.stderr.read()}")
    report = {
        "workload": f"ab -c {concurrency} -t {seconds}, GET / -> 64 B, one request per connection",
        "requests_per_s_under_profiling": load["requests_per_s"],
        "processes": {name: hot_spots((out / f"{name}.txt").read_text(), top) for name in pids},
        "raw_files": {name: str(out / f"{name}.txt") for name in pids},
    }
    (out / "profile.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def text(report: dict, top: int) -> str:
    lines = [
        f"{report['workload']}: {report['requests_per_s_under_profiling']:.0f} requests/s "
        "under profiling"
    ]
    for name, spots in report["processes"].items():
        lines.append(f"\n{name} process ({spots['samples']} busy samples)")
        for kind in ("self", "self_by_file", "total"):
            lines.append(f"  top {kind}:")
            lines += [f"    {s['share']:6.1%}  {s['frame']}" for s in spots[kind][:top]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.eval_profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--out", type=Path, help="default bench/out/profile-TIME")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--native", action="store_true", help="sample C frames too (the compiled unit's own)"
    )
    args = parser.parse_args(argv)
    out = args.out or REPO / "bench" / "out" / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    report = run(
        args.seconds, args.concurrency, args.top, out, args.native,
        lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    print(json.dumps(report, indent=2) if args.json else text(report, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
