"""Benchmark 9: does adding workers add throughput? 1, 2, 3 and 4 workers, each on its own
CPU budget, as if each ran on a host of its own.

This machine has 2 cores shared by the broker and the workers, so "2 processes vs 1" only
measures who wins the contention (benchmark 5). Here each `csext worker` process, with the
coprocesses it starts, runs in a cgroup of its own limited to BUDGET cores (`cpu.max` on
cgroup v2, `cpu.cfs_quota_us` on a v1 cpu hierarchy: the same CFS bandwidth limit): four
workers use at most one core, so the broker always has headroom, and N workers should do N
times the work of one. Measured per N on the same two extensions (coprocess runtime):

- events: N workers consuming the extension's queue are paused (SIGSTOP), the backlog is
  preloaded, then they are resumed and the drain is timed, so start-up skew between workers
  does not count;
- RPC: bench.loadgen keeps 8 x N calls in flight for a fixed time.

The ratio is throughput(N) ÷ (N x throughput(1)); the goal is ≥ 0.9 up to 4 workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import aio_pika

from csext.worker.amqp import names as c

from . import core
from .core import CSEXT, Ctx, Row, Section, Stat
from .rpc import STATUS_PY

BUDGET = 0.25
"""Cores per worker (its cgroup's CPU bandwidth)."""
PERIOD_US = 10_000
"""A short CFS period: with 100 ms, a worker runs 25 ms then stalls 75 ms, and a pipeline of
round trips (broker, worker, coprocess) pays those stalls; 10 ms spreads the quarter core evenly."""
WORKERS = (1, 2, 3, 4)
GOAL = 0.9
WARMUP = 5.0
"""Seconds of RPC load before timing: each worker starts its 8 warm coprocesses on a quarter
core."""


class CpuBudgets:
    """One cgroup per worker with a CPU bandwidth limit; v2 `cpu.max`, else v1 CFS quota."""

    def __init__(self, token: str) -> None:
        self.kind, self.root = self.detect()
        self.token = token
        self.groups: list[Path] = []

    @staticmethod
    def detect() -> tuple[str, Path]:
        """('v2' | 'v1', the hierarchy's root); RuntimeError saying why there is none."""
        for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
            controllers = root / "cgroup.controllers"
            writable = os.access(root / "cgroup.subtree_control", os.W_OK)
            if writable and controllers.exists() and "cpu" in controllers.read_text().split():
                return "v2", root
        v1 = Path("/sys/fs/cgroup/cpu")
        if (v1 / "cpu.cfs_quota_us").exists() and os.access(v1, os.W_OK):
            return "v1", v1
        raise RuntimeError(
            "no writable cgroup with the cpu controller (cgroup v2 cpu.max or a v1 cpu "
            "hierarchy): run as root, or in a systemd unit with Delegate=yes"
        )

    def make(self, index: int, cores: float = BUDGET) -> Path:
        """A cgroup allowing `cores` CPUs; returns its cgroup.procs file."""
        group = self.root / f"csext-bench-{self.token}-w{index}"
        if self.kind == "v2":
            with contextlib.suppress(OSError):  # already enabled, or set by the system
                (self.root / "cgroup.subtree_control").write_text("+cpu")
        group.mkdir(exist_ok=True)
        quota = int(cores * PERIOD_US)
        if self.kind == "v2":
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        self.groups.append(group)
        return group / "cgroup.procs"

    def describe(self) -> str:
        what = "cpu.max" if self.kind == "v2" else "cpu.cfs_quota_us / cpu.cfs_period_us"
        return f"cgroup {self.kind} ({what} = {int(BUDGET * PERIOD_US)} / {PERIOD_US} µs)"

    def throttled(self) -> float:
        """Seconds the workers spent throttled so far (all groups): proof the limit bites."""
        total = 0.0
        for group in self.groups:
            with contextlib.suppress(OSError):
                for line in (group / "cpu.stat").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "throttled_usec":
                        total += int(value) / 1e6
                    elif key == "throttled_time":
                        total += int(value) / 1e9
        return total

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) used so far by the live processes of every group."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for group in self.groups:
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        stat = Path(f"/proc/{pid}/stat").read_text()
                        fields = stat[stat.rfind(")") + 2 :].split()
                        total += int(fields[11]) + int(fields[12])
        return total / tick

    def remove(self) -> None:
        for group in self.groups:
            for _ in range(50):
                try:
                    group.rmdir()
                    break
                except OSError:  # processes still leaving
                    time.sleep(0.1)
        self.groups.clear()


class Fleet:
    """N `csext worker` processes, each in its own budget cgroup, on one registry."""

    def __init__(self, ctx: Ctx, budgets: CpuBudgets, registry: Path, count: int) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        log = ctx.tmp / "scaling-workers.log"
        env = core.worker_env(ctx, registry)
        for index in range(count):
            procs_file = budgets.make(index)
            # The shell moves itself into the cgroup, then becomes the worker: the worker and
            # every process it starts (its coprocesses) are born inside the budget.
            argv = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs_file)]
            self.procs.append(core.spawn([*argv, CSEXT, "worker"], log, env))

    def signal(self, signum: int) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signum)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        core.stop(*self.procs)


async def consumers(ctx: Ctx, queue: str) -> int:
    """Consumers on `queue`; 0 while it does not exist yet (no worker has declared it)."""
    connection = await core.connect(ctx)
    async with connection:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return 0
        return declared.declaration_result.consumer_count or 0


async def wait_consumers(ctx: Ctx, fleet: Fleet, queues: list[str], count: int) -> None:
    give_up = time.monotonic() + 180
    for queue in queues:
        while await consumers(ctx, queue) < count:
            if time.monotonic() > give_up or any(p.poll() is not None for p in fleet.procs):
                raise RuntimeError(f"{count} workers did not start; see {ctx.tmp}")
            await asyncio.sleep(0.1)


async def event_rate(
    ctx: Ctx, fleet: Fleet, name: str, key: str, count: int
) -> tuple[float, float]:
    """Pause the workers, preload `count` events, resume them, time the drain: (events/s,
    seconds from the resume to the empty queue)."""
    queue = c.events_queue(name)
    fleet.signal(signal.SIGSTOP)
    resumed = time.monotonic()
    try:
        await core.preload(ctx, ctx.exchange, key, core.event_body(0), count)
        connection = await core.connect(ctx)
        async with connection:
            channel = await connection.channel()
            backlog = await core.ready_count(channel, queue)
            fleet.signal(signal.SIGCONT)
            resumed = time.monotonic()
            first = None
            give_up = time.monotonic() + 300
            while True:
                ready = await core.ready_count(channel, queue)
                now = time.perf_counter()
                if first is None and ready < backlog:
                    first = now
                if ready == 0:
                    break
                if time.monotonic() > give_up:
                    raise RuntimeError(f"{queue} did not drain ({ready} left); see {ctx.tmp}")
                await asyncio.sleep(0.005)
    finally:
        fleet.signal(signal.SIGCONT)
    assert first is not None
    return backlog / max(now - first, 1e-6), time.monotonic() - resumed


async def b9_scaling(ctx: Ctx, section: Section) -> None:
    try:
        budgets = CpuBudgets(ctx.token)
    except RuntimeError as exc:
        section.skip("workers on their own CPU budget", str(exc))
        return
    token = uuid.uuid4().hex[:8]
    registry = ctx.tmp / f"registry-scaling-{token}"
    event_name, rpc_name = ctx.name(f"sc-ev-{token}"), ctx.name(f"sc-rpc-{token}")
    pattern, key = core.routing(token)
    script = core.coprocess_script()
    core.write_extension(
        registry, event_name, script, runtime="coprocess", concurrency=8, patterns=[pattern]
    )
    core.write_extension(
        registry,
        rpc_name,
        core.coprocess_script(STATUS_PY),
        hook="orchestrator",
        runtime="coprocess",
        concurrency=8,
    )
    counts = (1, 2) if ctx.smoke else WORKERS  # smoke: only that the figures come out
    events: dict[int, list[float]] = {n: [] for n in counts}
    calls: dict[int, list[float]] = {n: [] for n in counts}
    cpu: dict[tuple[str, int], list[float]] = {}
    throttled = 0.0
    repeats = min(ctx.repeats, 3)
    try:
        for _ in range(repeats):
            for n in counts:
                fleet = Fleet(ctx, budgets, registry, n)
                try:
                    queues = [c.events_queue(event_name), c.rpc_queue(rpc_name)]
                    await wait_consumers(ctx, fleet, queues, n)
                    rate, used = rpc_rate(ctx, budgets, rpc_name, n)
                    calls[n].append(rate)
                    cpu.setdefault(("RPC", n), []).append(used)
                    await warm_events(ctx, event_name, key, n)
                    count = ctx.n(1500 * n, 40 * n)
                    before = budgets.cpu_seconds()
                    rate, seconds = await event_rate(ctx, fleet, event_name, key, count)
                    events[n].append(rate)
                    used = (budgets.cpu_seconds() - before) / seconds / n
                    cpu.setdefault(("events", n), []).append(used)
                finally:
                    fleet.stop()
                    throttled += budgets.throttled()
                    budgets.remove()
    finally:
        await core.delete_extension(ctx, event_name, rpc_name)
    report(section, events, calls, cpu, budgets, throttled, repeats)


def rpc_rate(ctx: Ctx, budgets: CpuBudgets, name: str, n: int) -> tuple[float, float]:
    """(req/s with 8 x n calls in flight, CPU cores used per worker meanwhile). The first
    seconds start the workers' warm coprocesses (slow on a quarter core) and are not timed."""
    argv = [
        *(core.PYTHON, "-m", "bench.loadgen", "--url", ctx.amqp_url, "--exchange"),
        *(c.RPC_EXCHANGE, "--key", name, "--inflight", str(8 * n)),
        *("--seconds", str(ctx.seconds), "--warmup", str(0.5 if ctx.smoke else WARMUP)),
    ]
    if ctx.smoke:
        argv += ["--count", str(16 * n)]
    before, started = budgets.cpu_seconds(), time.monotonic()
    result = core.run_json(argv, ctx.tmp / "loadgen.log")
    used = (budgets.cpu_seconds() - before) / (time.monotonic() - started) / n
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} calls failed; see {ctx.tmp}")
    return float(result["rate"]), used


async def warm_events(ctx: Ctx, name: str, key: str, n: int) -> None:
    """Enough events at once for every worker to start all its warm coprocesses, drained."""
    await core.preload(ctx, ctx.exchange, key, core.event_body(0), 32 * n)
    connection = await core.connect(ctx)
    async with connection:
        channel = await connection.channel()
        give_up = time.monotonic() + 120
        while await core.ready_count(channel, c.events_queue(name)):
            if time.monotonic() > give_up:
                raise RuntimeError(f"the warm-up events did not drain; see {ctx.tmp}")
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # the last ones finish


def report(
    section: Section,
    events: dict[int, list[float]],
    calls: dict[int, list[float]],
    cpu: dict[tuple[str, int], list[float]],
    budgets: CpuBudgets,
    throttled: float,
    repeats: int,
) -> None:
    for what, unit, samples in (("events", "events/s", events), ("RPC", "req/s", calls)):
        one = Stat.of(samples[1]).median
        for n in samples:
            stat = Stat.of(samples[n])
            used = Stat.of(cpu.get((what, n), [])).median
            figures = {unit: stat.show(), "CPU/worker": f"{used:.2f} of {BUDGET:g}"}
            label = f"{what}, {n} worker{'s' if n > 1 else ''}"
            if n == 1:
                section.add(Row(label, figures))
                continue
            core.ratio_row(
                section, f"{label} (÷ {n} x 1 worker)", figures, stat.median, n * one, GOAL
            )
    section.notes.append(
        f"Each worker process is limited to {BUDGET:g} core by its own {budgets.describe()}; "
        f"{repeats} repeats per figure (medians; ratios of medians). CPU/worker: the cores each "
        "worker (with its coprocesses) used while measured; below the budget, the machine, not "
        "the budget, was the limit (other load), and the ratio measures contention again. "
        f"Workers were throttled {throttled:.0f} s in total. Events: 1,500 x N per sample, "
        "after a warm-up, workers paused while the backlog is preloaded. RPC: bench.loadgen, "
        f"8 x N calls in flight over direct reply-to after {WARMUP:g} s of warm-up, a Python "
        "coprocess answering a status."
    )
