"""Loss recovery: a stack instance vs. the Linux kernel through the
impairment relay, judged apart from raw speed.

Both endpoints sit behind the same impaired wire (tests/support/impaired.py:
peer namespace - relay - PF), in the same run: VF 0 is owned by a
`stackservice run --diag-services` instance (198.18.0.10); another macvlan
of the PF, in a namespace of its own, by the Linux kernel (198.18.0.50,
`tests.support.netns.kernel_host`), which serves the same three services on
kernel sockets (`tests.support.kernel_peer diag`). The client is the Linux
kernel in the peer namespace (`tests.support.kernel_peer`), the same for
both:

    echo      N bytes both ways (port 7)
    upload    N bytes peer -> endpoint (discard, port 9)
    download  N bytes endpoint -> peer (HTTP `GET /N`, port 80)

Scenarios (the relay adds the same 1 ms each way to all of them, so a
slow-down is the cost of the impairments alone):

    clean        10 MB, no impairment
    lossy        10 MB, 2% loss, 5% reordering, 1% duplication, 0.1% corruption
    clean_small  1 MB, no impairment
    loss20       1 MB, 20% loss

Slow-down = median impaired time / median clean time, per endpoint; the
stack passes when it completes as many runs as Linux (every one wherever
Linux completes every one), its slow-down is within 1.5x Linux's (lossy)
or 3x (loss20), and its RTO timeouts stay within a handful (5) per 10 MB
on the lossy wire.

Fair by construction: the relay is restarted before every run with that
run's seed (printed; the same for the stack and Linux in one repetition),
so both meet the same sequence of impairment decisions; runs alternate
stack, Linux, stack, Linux (who goes first alternates by repetition);
every run waits for both ends' closing handshakes before the next.
Offloads: both endpoints are macvlans of the same PF, prepared by the same
`disable_offloads` (recorded in the JSON): GRO, LRO and GSO off. A macvlan
keeps TSO and TX checksumming fixed on and hands both to its lower device,
the PF veth, which has them off, so the kernel cuts and checksums Linux's
segments in software before they leave: the relay sees MTU-sized frames
with real checksums from both (the stack writes whole frames). Both use
the stack's congestion control (cubic; new namespaces here default to
bbr), Linux with tcp_no_metrics_save=1 so no run inherits the last one's
ssthresh. No ARP crosses the relay for the Linux host (pinned both ways)
or for the peer's view of the stack (pinned); the stack resolves the peer
itself, during the warm-up. A run that does not complete within its bound
is reported as failed.

Counters per run (deltas): the stack's own (`timeouts`, `tlp_probes`,
`tlp_recoveries`, `rack_losses`, `lost_retransmits`, ...), Linux's from
/proc/net/netstat and /proc/net/snmp in the Linux host's namespace, and
the peer's the same way. Linux has no counter of RACK-marked losses.

    python3 -m bench.loss [--quick | --smoke] [--json] [--out DIR] [--seed N]   (as root)
        [--scenarios loss20,...] [--workloads upload,...] [--repeats N]

Full: 3 repetitions (seeds N, N+1, N+2), 10 MB and 1 MB; a run fails
after 240 s (10 MB) or 300 s (1 MB, ~3x Linux's slowest at 20% loss
here); `--quick`: 1 repetition of 2 MB and 200 kB; `--smoke`: 200 kB and
20 kB, for the test suite. Writes loss.json (every run) and summary.md
(the tables in markdown) to `--out` (default bench/out/loss-TIME/).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench import _cli as bench_cli
from bench.evaluation import machine
from stackservice.nic.emulate import vf_mac
from stackservice.tcp.settings import TcpSettings
from tests.support.impaired import ImpairedPort, impaired_port
from tests.support.netns import (
    KERNEL_HOST_ADDRESS,
    abort_kernel_connections,
    in_netns,
    kernel_host,
    kernel_live_connections,
    kernel_peer,
    spawn_in_netns,
)
from tests.support.process import stop as stop_process
from tests.support.process import unwind_on_sigterm
from tests.support.stack import StackProcess, live_connections, wait_until

STACK_ADDRESS = "198.18.0.10"
LINUX_ADDRESS = KERNEL_HOST_ADDRESS
ENDPOINTS = {"stack": STACK_ADDRESS, "linux": LINUX_ADDRESS}
CONGESTION_CONTROL = TcpSettings().congestion_control
STACK_OPTIONS = ("--diag-services", "--congestion-control", CONGESTION_CONTROL)
REPO = Path(__file__).resolve().parents[1]
DELAY_US = 1000  # each way, in every scenario
RTO_BUDGET_PER_10_MB = 5  # "a handful"
TEN_MB = 10_000_000
SETTLE_S = 30.0  # at most this long for closing handshakes (FINs back off at 20% loss)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Workload:
    action: str  # tests.support.kernel_peer's
    port: int
    direction: str


WORKLOADS = {
    "echo": Workload("echo", 7, "both ways"),
    "upload": Workload("sink", 9, "peer -> endpoint"),
    "download": Workload("fetch", 80, "endpoint -> peer"),
}


@dataclass(frozen=True)
class Scenario:
    label: str
    impairment: dict  # ImpairedRelay options, less seed and delay
    small: bool  # the profile's small size (and bound), else its bulk size
    baseline: str | None = None  # the clean scenario its slow-down divides by
    target: float | None = None  # most the stack's slow-down may be, in Linux's
    rto_budget: bool = False  # judged on RTO timeouts per 10 MB too


LOSSY = {"loss": 0.02, "reorder": 0.05, "duplicate": 0.01, "corrupt": 0.001}
SCENARIOS = {
    "clean": Scenario("clean", {}, small=False),
    "lossy": Scenario(
        "2% loss, 5% reorder, 1% dup, 0.1% corrupt", LOSSY, False, "clean", 1.5, True
    ),
    "clean_small": Scenario("clean", {}, small=True),
    "loss20": Scenario("20% loss", {"loss": 0.2}, True, "clean_small", 3.0),
}


@dataclass(frozen=True)
class Profile:
    name: str
    repeats: int
    bulk_bytes: int
    small_bytes: int
    bulk_bound_s: float  # a run that takes longer failed
    small_bound_s: float

    def size(self, scenario: Scenario) -> int:
        return self.small_bytes if scenario.small else self.bulk_bytes

    def bound(self, scenario: Scenario) -> float:
        return self.small_bound_s if scenario.small else self.bulk_bound_s


PROFILES = {
    "full": Profile("full", 3, TEN_MB, 1_000_000, 240.0, 300.0),
    "quick": Profile("quick", 1, 2_000_000, 200_000, 120.0, 120.0),
    "smoke": Profile("smoke", 1, 200_000, 20_000, 30.0, 30.0),
}

# The loss-recovery events the table shows, and where each side counts
# them: "section.name" of the stack's counters, "Group.Name" of Linux's
# /proc/net/{netstat,snmp}.
STACK_COUNTERS = {
    "rto": "tcp.timeouts",
    "tlp": "tcp.tlp_probes",
    "tlp_recovered": "tcp.tlp_recoveries",
    "rack_lost": "tcp.rack_losses",
    "lost_retransmits": "tcp.lost_retransmits",
    "fast_retransmits": "tcp.fast_retransmits",
    "sack_recoveries": "tcp.sack_recoveries",
    "retransmits": "tcp.retransmitted_segments",
}
# Sections of the stack's counters a run records (the rest are gauges or
# have nothing to do with a transfer): ARP and drops explain a stray RTO.
STACK_SECTIONS = ("tcp", "tcp_drops", "drops", "events", "nic")
LINUX_COUNTERS = {
    "rto": "TcpExt.TCPTimeouts",
    "tlp": "TcpExt.TCPLossProbes",
    "tlp_recovered": "TcpExt.TCPLossProbeRecovery",
    "rack_lost": None,  # Linux has no counter of RACK-marked losses
    "lost_retransmits": "TcpExt.TCPLostRetransmit",
    "fast_retransmits": "TcpExt.TCPFastRetrans",
    "sack_recoveries": "TcpExt.TCPSackRecovery",
    "retransmits": "Tcp.RetransSegs",
}
OFFLOADS = (
    "tcp-segmentation-offload",
    "generic-segmentation-offload",
    "generic-receive-offload",
    "large-receive-offload",
    "tx-checksumming",
    "rx-checksumming",
)


# ------------------------------------------------------------ the test bed


def linux_counters(netns: str) -> dict[str, int]:
    """Every Tcp and TcpExt counter of a namespace, as "TcpExt.TCPTimeouts"."""
    lines = in_netns(netns, "cat", "/proc/net/netstat", "/proc/net/snmp").stdout.splitlines()
    counters: dict[str, int] = {}
    for names, values in zip(lines[::2], lines[1::2], strict=True):  # header, values
        group, *keys = names.split()
        if group in ("Tcp:", "TcpExt:"):
            counters.update(
                {f"{group[:-1]}.{k}": int(v) for k, v in zip(keys, values.split()[1:], strict=True)}
            )
    return counters


def recovery(delta: dict[str, int], names: dict[str, str | None]) -> dict[str, int | None]:
    """The table's loss-recovery events from one side's counter deltas."""
    return {event: None if name is None else delta.get(name, 0) for event, name in names.items()}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


@dataclass
class Bed:
    """The impaired port with both endpoints on it."""

    port: ImpairedPort
    linux_ns: str
    run_dir: Path  # the stack instance's
    stack: StackProcess | None = None

    def start_stack(self) -> None:
        vf, address = self.port.vf(0), f"{STACK_ADDRESS}/24"
        self.stack = StackProcess(vf, address, self.run_dir, "vf0", *STACK_OPTIONS)

    def stop_stack(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None

    def warm_up(self, endpoints: tuple[str, ...], progress: Progress) -> None:
        """A small echo with each endpoint through a clean relay: the
        stack's ARP for the peer, first-connection costs."""
        self.port.stop_relay()
        self.port.start_relay(delay_us=DELAY_US)
        for endpoint in endpoints:
            progress(f"warm-up: {endpoint} ...")
            transfer(self, endpoint, "echo", 100_000, 0, 60.0)
        self.port.stop_relay()

    def clear_failed_run(self, endpoint: str, progress: Progress) -> None:
        """Leave nothing of a failed run behind: a receiver whose client was
        killed waits forever (no keepalive), and a closing one retransmits
        into the next run. Linux's sockets are aborted; the stack, which
        cannot abort one connection from outside, is replaced."""
        abort_kernel_connections(self.port.netns)
        abort_kernel_connections(self.linux_ns)
        if endpoint == "stack":
            progress("    replacing the stack instance, so nothing of the failed run lives on")
            self.stop_stack()
            self.start_stack()
            self.warm_up(("stack",), progress)

    def counters(self, endpoint: str) -> dict[str, int]:
        if endpoint == "linux":
            return linux_counters(self.linux_ns)
        sections = self.stack.counters()
        return {
            f"{section}.{name}": value
            for section in STACK_SECTIONS
            for name, value in sections[section].items()
        }

    def settled(self, endpoint: str) -> bool:
        """Wait (bounded) until the last run's closing handshakes are over
        at both ends, so no FIN retransmission spills into the next run."""

        def quiet() -> bool:
            if endpoint == "stack":
                here = live_connections(self.stack)
            else:
                here = kernel_live_connections(self.linux_ns)
            return here == 0 and kernel_live_connections(self.port.netns) == 0

        return wait_until(quiet, timeout=SETTLE_S, interval=0.05)

    def offloads(self) -> dict[str, dict[str, str]]:
        """What the endpoints' (and the peer's) interfaces offload."""
        links = in_netns(self.linux_ns, "ip", "-o", "link", "show").stdout.splitlines()
        linux_if = next(
            name.split("@")[0] for name in (line.split(": ")[1] for line in links) if name != "lo"
        )
        return {
            "stack": _offloads(None, self.port.vf(0)),
            "linux": _offloads(self.linux_ns, linux_if),
            "peer": _offloads(self.port.netns, self.port.wire),
        }


def _offloads(netns: str | None, ifname: str) -> dict[str, str]:
    argv = ("ethtool", "-k", ifname)
    if netns:
        out = in_netns(netns, *argv).stdout
    else:
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    features = (line.strip().partition(": ") for line in out.splitlines()[1:])
    return {name: state.split()[0] for name, _, state in features if name in OFFLOADS}


@contextlib.contextmanager
def kernel_diag(netns: str) -> Iterator[subprocess.Popen]:
    """`kernel_peer diag` (echo, discard, HTTP on kernel sockets) in `netns`."""
    proc = spawn_in_netns(
        netns, sys.executable, "-m", "tests.support.kernel_peer", "diag",
        "--congestion", CONGESTION_CONTROL, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        if "listening" not in proc.stdout.readline():
            raise RuntimeError("kernel_peer diag did not start")
        yield proc
    finally:
        stop_process(proc)


@contextlib.contextmanager
def test_bed(progress: Progress) -> Iterator[Bed]:
    with (
        impaired_port(vfs=1, delay_us=DELAY_US) as port,
        kernel_host(port, address=LINUX_ADDRESS) as linux_ns,
        kernel_diag(linux_ns),
        tempfile.TemporaryDirectory(prefix="vfstack-run-") as run_dir,
    ):
        for netns in (port.netns, linux_ns):
            in_netns(netns, "sysctl", "-qw", "net.ipv4.tcp_no_metrics_save=1")
        in_netns(
            port.netns, "ip", "neigh", "replace", STACK_ADDRESS,
            "lladdr", vf_mac(0), "dev", port.wire,
        )  # fmt: skip
        bed = Bed(port, linux_ns, Path(run_dir))
        try:
            bed.start_stack()
            bed.warm_up(tuple(ENDPOINTS), progress)
            yield bed
        finally:
            bed.stop_stack()


# ------------------------------------------------------------------- a run


def _completed(workload: str, size: int, result: dict) -> bool:
    """Every byte arrived intact and the endpoint closed cleanly (the
    client's time runs until it sees the endpoint's FIN, in every workload)."""
    if workload == "echo":
        exact = result.get("received_sha256") == result.get("sent_sha256")
        return exact and result.get("bytes") == size and result["clean_eof"]
    if workload == "upload":
        return bool(result.get("clean_eof"))
    return result.get("status") == "200" and result.get("bytes") == size and result["body_ok"]


def transfer(bed: Bed, endpoint: str, workload: str, size: int, seed: int, bound: float) -> dict:
    """One client run; its result, or {"error": ...} if it failed or ran
    past `bound` seconds."""
    w = WORKLOADS[workload]
    try:
        return kernel_peer(
            bed.port.netns, w.action, "--host", ENDPOINTS[endpoint], "--port", str(w.port),
            "--bytes", str(size), "--seed", str(seed), "--congestion", CONGESTION_CONTROL,
            timeout=bound, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {bound:.0f} s"}


def one_run(bed: Bed, scenario: str, workload: str, endpoint: str, seed: int, profile: Profile):
    """Restart the relay with this run's impairment and seed, run the
    transfer, wait for the closing handshakes if it completed; the run's
    record."""
    sc = SCENARIOS[scenario]
    size, bound = profile.size(sc), profile.bound(sc)
    bed.port.stop_relay()
    bed.port.start_relay(seed=seed, delay_us=DELAY_US, **sc.impairment)
    before, peer_before = bed.counters(endpoint), linux_counters(bed.port.netns)
    result = transfer(bed, endpoint, workload, size, seed, bound)
    ok = "error" not in result and _completed(workload, size, result)
    settled = ok and bed.settled(endpoint)
    delta = _delta(before, bed.counters(endpoint))
    peer_delta = _delta(peer_before, linux_counters(bed.port.netns))
    relay = bed.port.stop_relay()
    return {
        "scenario": scenario,
        "workload": workload,
        "endpoint": endpoint,
        "seed": seed,
        "bytes": size,
        "bound_s": bound,
        "ok": ok,
        "seconds": result["seconds"] if ok else None,
        "client": result,
        "recovery": recovery(delta, STACK_COUNTERS if endpoint == "stack" else LINUX_COUNTERS),
        "peer_recovery": recovery(peer_delta, LINUX_COUNTERS),
        "counters": delta,
        "peer_counters": peer_delta,
        "relay": asdict(relay) if relay else None,
        "settled": settled,
    }


def _brief(run: dict) -> str:
    if not run["ok"]:
        why = str(run["client"].get("error", run["client"])).strip().splitlines()
        return f"FAILED: {why[-1] if why else 'no output'}"
    r = run["recovery"]
    rack = "-" if r["rack_lost"] is None else r["rack_lost"]
    return (
        f"{run['seconds']:.2f} s, RTO {r['rto']}, TLP {r['tlp']}, RACK {rack}, "
        f"retransmits {r['retransmits']}" + ("" if run["settled"] else " (not settled)")
    )


def plan(
    profile: Profile, base_seed: int, scenarios: tuple[str, ...], workloads: tuple[str, ...]
) -> Iterator[tuple[int, int, str, str, str]]:
    """(repetition, seed, scenario, workload, endpoint) of every run, in
    order: the endpoints interleaved, who goes first alternating by
    repetition so drifting machine load hits both. A chosen impaired
    scenario brings its clean baseline along (its slow-down divides by it)."""
    chosen = [
        name
        for name, sc in SCENARIOS.items()
        if name in scenarios or any(SCENARIOS[s].baseline == name for s in scenarios)
    ]
    for rep in range(profile.repeats):
        order = list(ENDPOINTS) if rep % 2 == 0 else list(ENDPOINTS)[::-1]
        for scenario, workload, endpoint in itertools.product(chosen, workloads, order):
            yield rep, base_seed + rep, scenario, workload, endpoint


def run(
    profile: Profile,
    base_seed: int,
    progress: Progress,
    scenarios: tuple[str, ...] = tuple(SCENARIOS),
    workloads: tuple[str, ...] = tuple(WORKLOADS),
) -> dict:
    report: dict = {
        "profile": asdict(profile),
        "params": {
            "delay_us_each_way": DELAY_US,
            "scenarios": {name: asdict(sc) for name, sc in SCENARIOS.items()},
            "workloads": {name: asdict(w) for name, w in WORKLOADS.items()},
            "congestion_control": CONGESTION_CONTROL,
            "base_seed": base_seed,
            "rto_budget_per_10_mb": RTO_BUDGET_PER_10_MB,
        },
        "machine": machine(),
        "runs": [],
    }
    started = time.monotonic()
    with test_bed(progress) as bed:
        report["offloads"] = bed.offloads()
        for rep, seed, scenario, workload, endpoint in plan(
            profile, base_seed, scenarios, workloads
        ):
            size = _size(profile.size(SCENARIOS[scenario]))
            progress(
                f"[{rep + 1}/{profile.repeats}] {scenario} {workload} {size} seed {seed}: "
                f"{endpoint} ..."
            )
            record = one_run(bed, scenario, workload, endpoint, seed, profile) | {"repeat": rep}
            report["runs"].append(record)
            progress(f"    {_brief(record)}")
            if not record["ok"]:
                bed.clear_failed_run(endpoint, progress)
    report["machine"]["loadavg_at_end"] = machine()["loadavg"]
    report["elapsed_s"] = time.monotonic() - started
    return report


# ----------------------------------------------------------------- summary


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _side(runs: list[dict], clean: list[dict]) -> dict:
    """One endpoint's figures for one scenario and workload: times of the
    completed runs, counters of all."""
    clean_s = _median([r["seconds"] for r in clean])
    impaired_s = _median([r["seconds"] for r in runs])
    return {
        "clean_s": clean_s,
        "impaired_s": impaired_s,
        "slowdown": impaired_s / clean_s if clean_s and impaired_s else None,
        "completed": sum(r["ok"] for r in runs),
        "runs": len(runs),
        "recovery": {k: _median([r["recovery"][k] for r in runs]) for k in STACK_COUNTERS},
        "peer_recovery": {
            k: _median([r["peer_recovery"][k] for r in runs]) for k in STACK_COUNTERS
        },
    }


def summarize(report: dict) -> list[dict]:
    """A row per scenario and workload: both endpoints' times, slow-downs
    and loss-recovery medians, the stack's verdict where a target applies."""

    def select(scenario: str, workload: str, endpoint: str) -> list[dict]:
        return [
            r
            for r in report["runs"]
            if (r["scenario"], r["workload"], r["endpoint"]) == (scenario, workload, endpoint)
        ]

    rows = []
    for name, sc in SCENARIOS.items():
        for workload in WORKLOADS:
            row: dict = {"scenario": name, "label": sc.label, "workload": workload}
            for endpoint in ENDPOINTS:
                runs = select(name, workload, endpoint)
                row["bytes"] = runs[0]["bytes"] if runs else None
                row[endpoint] = _side(runs, select(sc.baseline or name, workload, endpoint))
            if row["bytes"] is not None:  # a scenario or workload not run has no row
                rows.append(_verdict(row, sc))
    return rows


def _verdict(row: dict, sc: Scenario) -> dict:
    """done_passed: the stack completed as many runs as Linux (so every run
    wherever Linux completed every one); ratio_passed: its slow-down is
    within the target times Linux's; both None when Linux completed no run
    within the bound (nothing to compare with). Why not every run always: at 20% loss
    the Linux client's own RTO backoff (up to 120 s) decides whether an
    upload ends within the bound, against Linux as much as against the
    stack (RESULTS.md: each missed two of six seeds' 1 MB uploads). The
    count, not the seed: the two endpoints' runs meet the same impairment
    decisions only until their packets first differ. rto_passed: at most
    RTO_BUDGET_PER_10_MB timeouts per 10 MB. passed: all that apply."""
    stack, linux = row["stack"], row["linux"]
    if sc.baseline is None:
        return row
    ratio = (
        stack["slowdown"] / linux["slowdown"] if stack["slowdown"] and linux["slowdown"] else None
    )
    row["ratio"] = ratio
    row["target"] = sc.target
    compared = bool(linux["completed"])
    row["done_passed"] = stack["completed"] >= linux["completed"] if compared else None
    row["ratio_passed"] = (ratio is not None and ratio <= sc.target) if compared else None
    row["passed"] = (row["done_passed"] and row["ratio_passed"]) if compared else None
    if sc.rto_budget:
        rto = stack["recovery"]["rto"]
        per_10_mb = rto * TEN_MB / row["bytes"] if rto is not None else None
        row["stack_rto_per_10_mb"] = per_10_mb
        row["rto_passed"] = per_10_mb is not None and per_10_mb <= RTO_BUDGET_PER_10_MB
        if not row["rto_passed"]:
            row["passed"] = False
    return row


# ------------------------------------------------------------------ tables


def _size(size: int) -> str:
    return f"{size / 1e6:g} MB" if size >= 1_000_000 else f"{size / 1e3:g} kB"


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:g}"  # a count; a median of an even number may end in .5
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.{digits}f}"


def _times(side: dict) -> list[str]:
    """ "clean -> impaired" seconds (completed runs if not all), slow-down."""
    done = (
        "" if side["completed"] == side["runs"] else f" ({side['completed']}/{side['runs']} done)"
    )
    times = f"{_num(side['clean_s'])} -> {_num(side['impaired_s'])}{done}"
    return [times, _num(side["slowdown"], 1)]


_MARK = {True: "pass", False: "FAIL", None: "n/a (Linux did not complete)"}


def slowdown_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["scenario", "workload", "size", "stack s", "stack x", "Linux s", "Linux x"]
    header += ["stack x / Linux x", "verdict"]
    cells = []
    for r in rows:
        if "ratio" not in r:
            continue
        done = f"{r['stack']['completed']}/{r['stack']['runs']}"
        verdict = (
            f"{_MARK[r['passed']]}: done {done} {_MARK[r['done_passed']]} "
            f"(>= Linux's {r['linux']['completed']}), "
            f"x/x {_MARK[r['ratio_passed']]} (<= {r['target']:g})"
        )
        if "rto_passed" in r:
            rto = _num(r["stack_rto_per_10_mb"], 0)
            verdict += f", RTOs/10 MB {rto} {_MARK[r['rto_passed']]} (<= {RTO_BUDGET_PER_10_MB})"
        stack, linux = _times(r["stack"]), _times(r["linux"])
        ratio = _num(r["ratio"], 1)
        cells.append([r["label"], r["workload"], _size(r["bytes"]), *stack, *linux, ratio, verdict])
    return header, cells


def recovery_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["scenario", "workload", "endpoint", "done", "RTO", "TLP", "TLP rec.", "RACK lost"]
    header += ["lost rexmit", "fast rexmit", "SACK rec.", "rexmit segs", "peer RTO", "peer rexmit"]
    cells = []
    for r in rows:
        for endpoint in ENDPOINTS:
            side = r[endpoint]
            counts = [_num(side["recovery"][k], 0) for k in STACK_COUNTERS]
            peer = [_num(side["peer_recovery"][k], 0) for k in ("rto", "retransmits")]
            label = r["label"] + (f" ({_size(r['bytes'])})" if r["bytes"] else "")
            done = f"{side['completed']}/{side['runs']}"
            cells.append([label, r["workload"], endpoint, done, *counts, *peer])
    return header, cells


def render(table: tuple[list[str], list[list[str]]], markdown: bool = False) -> str:
    """A table as aligned text, or as markdown. Figures are right-aligned,
    words (the first three columns, and a verdict) are not."""
    header, cells = table

    def is_text(i: int) -> bool:
        return i < 3 or header[i] == "verdict"

    if markdown:
        rule = ["---" if is_text(i) else "--:" for i in range(len(header))]
        return "\n".join("| " + " | ".join(row) + " |" for row in [header, rule, *cells])
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if is_text(i) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *cells]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def footer(report: dict) -> list[str]:
    p, params = report["profile"], report["params"]
    seeds = sorted({r["seed"] for r in report["runs"]})
    unsettled = sum(r["ok"] and not r["settled"] for r in report["runs"])
    replaced = sum(not r["ok"] for r in report["runs"] if r["endpoint"] == "stack")
    offloads = {
        who: ", ".join(f"{k} {v}" for k, v in features.items())
        for who, features in report["offloads"].items()
    }
    return [
        f"profile {p['name']}: {p['repeats']} repetition(s), medians; seeds {seeds} "
        f"(repetition i uses seed {params['base_seed']}+i for every run); "
        f"{params['delay_us_each_way']} µs each way in every scenario; congestion control "
        f"{params['congestion_control']} on both; {len(report['runs'])} runs in "
        f"{report['elapsed_s']:.0f} s ({unsettled} completed runs not settled within "
        f"{SETTLE_S:.0f} s; stack instance replaced after each of its {replaced} failed runs)",
        f"offloads of the stack's VF: {offloads['stack']}",
        f"offloads of the Linux host: {offloads['linux']}",
        f"offloads of the peer's wire: {offloads['peer']}",
        f"machine: {report['machine']['nproc']} CPUs, loadavg {report['machine']['loadavg']} "
        f"at start, {report['machine']['loadavg_at_end']} at end",
    ]


def text(report: dict) -> str:
    rows = report["summary"]
    return "\n\n".join(
        [
            "Slow-down from impairment (x = impaired time / clean time, medians of seconds)",
            render(slowdown_table(rows)),
            "Loss recovery per run (medians; peer = the Linux client's kernel)",
            render(recovery_table(rows)),
            "\n".join(footer(report)),
        ]
    )


def write(report: dict, out: Path) -> dict[str, str]:
    """loss.json and summary.md in `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    outputs = {"json": str(out / "loss.json"), "summary": str(out / "summary.md")}
    report["outputs"] = outputs
    rows = report["summary"]
    markdown = [
        "# Loss recovery: stack vs. Linux through the impairment relay",
        "`python3 -m bench.loss"
        + ("" if report["profile"]["name"] == "full" else f" --{report['profile']['name']}")
        + "`",
        render(slowdown_table(rows), markdown=True),
        render(recovery_table(rows), markdown=True),
        "\n".join(f"- {line.strip()}" for line in footer(report)),
    ]
    Path(outputs["summary"]).write_text("\n\n".join(markdown) + "\n")
    Path(outputs["json"]).write_text(json.dumps(report, indent=2) + "\n")
    return outputs


def _names(known: dict) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n for n in text.split(",") if n)
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            given = ", ".join(unknown) or "none"
            raise argparse.ArgumentTypeError(f"{given}: choose from {', '.join(known)}")
        return names

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = bench_cli.parser(__doc__)
    parser.add_argument("--smoke", action="store_true", help="a tiny run for the test suite")
    parser.add_argument("--out", type=Path, help="output folder (default bench/out/loss-TIME)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first repetition")
    parser.add_argument(
        "--report", type=Path, metavar="LOSS_JSON", help="summarize a saved run again, run nothing"
    )
    parser.add_argument(
        "--scenarios", type=_names(SCENARIOS), default=tuple(SCENARIOS),
        help=f"comma-separated, of {', '.join(SCENARIOS)} (default all)",
    )  # fmt: skip
    parser.add_argument(
        "--workloads", type=_names(WORKLOADS), default=tuple(WORKLOADS),
        help=f"comma-separated, of {', '.join(WORKLOADS)} (default all)",
    )  # fmt: skip
    parser.add_argument(
        "--repeats", type=int, help="repetitions, seeds N, N+1, ... (default: the profile's)"
    )
    args = parser.parse_args(argv)
    if args.report:
        report = json.loads(args.report.read_text())
        report["summary"] = summarize(report)
        write(report, args.report.parent)
        print(json.dumps(report, indent=2) if args.json else text(report))
        return 0
    profile = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.repeats:
        profile = replace(profile, repeats=args.repeats)
    out = args.out or REPO / "bench" / "out" / f"loss-{time.strftime('%Y%m%d-%H%M%S')}"
    unwind_on_sigterm()
    report = run(profile, args.seed, bench_cli.progress, args.scenarios, args.workloads)
    report["summary"] = summarize(report)
    write(report, out)
    bench_cli.progress(f"wrote {out}")
    print(json.dumps(report, indent=2) if args.json else text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
