"""An instance of several workers: `stackservice run --workers N`, N > 1.

mTCP runs a stack thread per core, with the NIC's RSS keeping each flow
on one core and nothing shared on the data path. A Python stack gets
cores only through processes, so the instance's process becomes a
supervisor of N worker processes:

- It prepares the interface, then opens one PacketPort per worker,
  joined in worker order to the instance's fanout group
  (stackservice.nic.fanout): the join order is the steering index, so
  it keeps every port open for the instance's life. Each worker also
  gets a counters file and a control link of its own.
- It starts the control process with every link and counters file
  (stackservice.control.workers asks the workers as one; statistics and
  /metrics add the files up).
- It forks the workers. Each builds its own Instance (engine, host,
  sessions, diag services) for its share of the ephemeral ports and of
  the TCP memory, pinned to its CPU of `--cpus` if given, and runs the
  packet loop on its port. Worker 0 answers ARP and ICMP for all.
- A worker that ends unasked (a crash, a kill) is forked again, on the
  same port, link and counters, at most once per RESTART_INTERVAL_S: its
  connections are gone (the peers' next segments get resets), the other
  workers never notice. The new worker drops what its predecessor left
  in the ring (PacketPort.recover), starts its gauges from zero, and
  counts the restart (`loop.worker_restarts`).
- On SIGTERM/SIGINT every worker resets its connections and exits, then
  the control process stops and the files go.

One worker keeps the single process of stackservice.instance: no
supervisor, no fanout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from stackservice.clock import monotonic_us
from stackservice.config import InstanceConfig
from stackservice.control.link import LinkServer, link_pair, send_event
from stackservice.control.requests import ControlRequests
from stackservice.diag import DiagServices
from stackservice.instance import (
    Instance,
    apps_path,
    control_server,
    counters_path,
    identity,
    run_loop,
    say,
    start_line,
    stop_on_signals,
    stopped_line,
)
from stackservice.metrics.apps import AppStatsTable
from stackservice.metrics.counters import CounterBlock, read_counters
from stackservice.metrics.layout import INSTANCE_LAYOUT, LoopCounter
from stackservice.nic.netconf import detect_mode, prepare_interface
from stackservice.nic.packet_io import PacketPort
from stackservice.parent import die_with_parent

log = logging.getLogger(__name__)

RESTART_INTERVAL_S = 1.0  # a worker that keeps dying is started at most this often
STOP_TIMEOUT_S = 10.0  # then a worker that has not exited is killed


@dataclass
class _Worker:
    """What the supervisor keeps of one worker across its restarts."""

    index: int
    counters: CounterBlock
    port: PacketPort
    link: socket.socket | None  # the loop's end of its control link
    pid: int = 0
    pidfd: int = -1
    started_at: float = 0.0
    restart_at: float | None = None  # when it died: when to start it again
    exits: list[int] = field(default_factory=list)  # wait statuses, for the log


def serve_workers(config: InstanceConfig, stop_fd: int) -> int:
    """Run `config.workers` workers until `stop_fd` is readable."""
    mode = detect_mode(config.iface)
    mac = prepare_interface(config.iface, config.mac)
    with _worker_parts(config) as workers:
        links = [link_pair() for _ in workers] if config.control is not None else []
        for worker, (ours, _) in zip(workers, links, strict=False):
            worker.link = ours
        paths = [counters_path(config.run_dir, config.name, w.index) for w in workers]
        control = (
            control_server(
                config, identity(config, mode, mac), [theirs for _, theirs in links], paths
            )
            if links
            else contextlib.nullcontext()
        )
        supervisor = Supervisor(config, mode, mac, workers)
        with control:
            for worker in workers:
                supervisor.start(worker, restarted=False)
            say(start_line(config, mac, mode))
            supervisor.supervise(stop_fd)
            supervisor.stop()
            if links:
                send_event(workers[0].link, "stopping")
        counters = read_counters(paths, INSTANCE_LAYOUT)
    say(stopped_line(config, counters))
    return 0


@contextlib.contextmanager
def _worker_parts(config: InstanceConfig) -> Iterator[list[_Worker]]:
    """Each worker's counters file and port, the ports joined in worker
    order; all closed (the files removed) on exit."""
    group = socket.if_nametoindex(config.iface)
    with contextlib.ExitStack() as stack:
        workers = []
        for index in range(config.workers):
            counters = CounterBlock(
                INSTANCE_LAYOUT, counters_path(config.run_dir, config.name, index)
            )
            stack.callback(counters.close)
            stack.callback(apps_path(config.run_dir, config.name, index).unlink, missing_ok=True)
            port = PacketPort(
                config.iface, counters.section("nic"), fanout=(group, index, config.workers)
            )
            stack.callback(port.close)
            workers.append(_Worker(index, counters, port, None))
        try:
            yield workers
        finally:
            for worker in workers:
                if worker.link is not None:
                    worker.link.close()


class Supervisor:
    """Starts, restarts and stops the workers of one instance."""

    def __init__(self, config: InstanceConfig, mode: str, mac: str, workers: list[_Worker]):
        self.config = config
        self.mode = mode
        self.mac = mac
        self.workers = workers

    def start(self, worker: _Worker, restarted: bool) -> None:
        worker.started_at = time.monotonic()
        worker.restart_at = None
        pid = os.fork()
        if pid == 0:
            self._worker_process(worker, restarted)
        worker.pid = pid
        worker.pidfd = os.pidfd_open(pid)

    def _worker_process(self, worker: _Worker, restarted: bool) -> None:
        """The forked worker: never returns."""
        config = self.config
        status = 1
        try:
            # SIGTERM rather than SIGKILL: with the supervisor gone (kill -9)
            # the worker still resets its connections, so peers know.
            die_with_parent(signal.SIGTERM)
            for other in self.workers:  # the supervisor keeps them; a worker its own
                if other is not worker:
                    other.port.close()
                    other.counters.close(unlink=False)
                    if other.link is not None:
                        other.link.close()
                if other.pidfd >= 0:
                    os.close(other.pidfd)
            if config.cpus:
                os.sched_setaffinity(0, {config.cpus[worker.index % len(config.cpus)]})
            if restarted:
                worker.port.recover()
                worker.counters.reset_gauges()
                worker.counters.section("loop")[LoopCounter.WORKER_RESTARTS] += 1
            # Its own app table, new: a successor's sessions start afresh
            # (the control process reads every worker's, adding them up).
            apps = AppStatsTable(path=apps_path(config.run_dir, config.name, worker.index))
            instance = Instance(
                config, self.mode, self.mac, worker.counters, worker.port, apps, worker.index
            )
            if config.diag_services:
                DiagServices(instance.engine)
            link = None
            if worker.link is not None:
                requests = ControlRequests(instance.engine, instance.fastpath, monotonic_us)
                link = LinkServer(worker.link, requests, instance.contain)
            with stop_on_signals() as stop_fd:
                status = run_loop(instance, stop_fd, link)
        except BaseException:
            log.critical("worker %d failed to start", worker.index, exc_info=True)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)

    def supervise(self, stop_fd: int) -> None:
        """Restart workers that end until `stop_fd` is readable."""
        workers = self.workers
        poller = select.poll()
        poller.register(stop_fd, select.POLLIN)
        for worker in workers:
            poller.register(worker.pidfd, select.POLLIN)
        while True:
            now = time.monotonic()
            due = [w.restart_at for w in workers if w.restart_at is not None]
            timeout = None if not due else max(0, int((min(due) - now) * 1000) + 1)
            for fd, _ in poller.poll(timeout):
                if fd == stop_fd:
                    return
                worker = next(w for w in workers if w.pidfd == fd)
                poller.unregister(fd)
                pid = worker.pid
                _reap(worker)
                log.error(
                    "worker %d (pid %d) ended (%s): its connections are lost; starting it again",
                    worker.index, pid, _describe(worker.exits[-1]),
                )  # fmt: skip
                worker.restart_at = max(time.monotonic(), worker.started_at + RESTART_INTERVAL_S)
            now = time.monotonic()
            for worker in workers:
                if worker.restart_at is not None and worker.restart_at <= now:
                    self.start(worker, restarted=True)
                    poller.register(worker.pidfd, select.POLLIN)

    def stop(self) -> None:
        """SIGTERM to every live worker (each resets its connections), then
        wait; a worker still there after STOP_TIMEOUT_S is killed."""
        live = [w for w in self.workers if w.pid]
        for worker in live:
            os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in live:
            poller = select.poll()
            poller.register(worker.pidfd, select.POLLIN)
            if not poller.poll(max(0, int((deadline - time.monotonic()) * 1000))):
                log.error("worker %d did not stop in %.0f s: killed", worker.index, STOP_TIMEOUT_S)
                os.kill(worker.pid, signal.SIGKILL)
            _reap(worker)


def _reap(worker: _Worker) -> None:
    _, status = os.waitpid(worker.pid, 0)
    worker.exits.append(status)
    os.close(worker.pidfd)
    worker.pidfd = -1
    worker.pid = 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"status {os.waitstatus_to_exitcode(status)}"
