"""`python -m bench.metrics_cost [coprocess|exec] [events|rpc] [--count N] [--pairs P]`: what
the Prometheus metrics cost per run.

Two measures, both against a floor taken in the same run:

1. The instrumentation alone, in µs per run (`timeit` of exactly what the run path calls per
   run: bind lookup, in-flight inc/dec, queue wait, the finished run's counters and histogram),
   in this process (in-memory values) and in a child with PROMETHEUS_MULTIPROC_DIR set (the mmap
   values a `--processes N` pool uses); the floor is the same loop with metrics off (`None`).
2. Worker CPU per event (as bench.profile measures it: in-process `Worker`, preloaded queue,
   `time.process_time()` over the drain) with metrics off and on, in alternating pairs; the
   ratio on/off of each pair, and their median.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

from csext.worker.app import Worker
from csext.worker.logs import configure_logging

from . import core
from .profile import _Target, drained

MICRO = """
import datetime, time
from csext.schemas.run import RunResult
from csext.worker.metrics import RunMetrics
metrics = RunMetrics()
run = RunResult(exit_code=0, duration_ms=3)
headers = {}
stamp = datetime.datetime.now(datetime.UTC)
class Ext:
    name = "bench"
    class hook: value = "event"
    class spec:
        class runtime: value = "coprocess"
ext = Ext()
bound = metrics.of(ext)
def instrumented():
    b = metrics.of(ext)
    b.flying += 1
    b.flying -= 1
    wait = time.time() - stamp.timestamp()
    b.queue_wait.observe(wait)
    b.finished(run, "success", 1)
    if b.runs["success"].n >= 1000:  # what the worker's once-a-second flush does
        metrics.flush()
off = None
def floor():
    b = off.of(ext) if off is not None else None
    if b is None:
        return
"""


def micro(number: int) -> tuple[float, float]:
    """(µs per run instrumented, µs per run with metrics off) in this process."""
    namespace: dict[str, object] = {}
    exec(MICRO, namespace)
    on = min(timeit.repeat("instrumented()", globals=namespace, number=number, repeat=5))
    off = min(timeit.repeat("floor()", globals=namespace, number=number, repeat=5))
    return on / number * 1e6, off / number * 1e6


def micro_multiprocess(number: int) -> tuple[float, float]:
    """The same in a child whose prometheus_client writes mmap files (pool mode)."""
    with tempfile.TemporaryDirectory(prefix="csext-bench-metrics-") as directory:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        code = f"from bench.metrics_cost import micro; print(*micro({number}))"
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=core.ROOT,
        )
    on, off = (float(x) for x in done.stdout.split())
    return on, off


async def cpu_per_run(args: argparse.Namespace, tmp: Path, metrics: bool) -> float:
    """µs of worker CPU per event or call, metrics off or on (one drain of `args.count`)."""
    ctx = core.Ctx(amqp_url=args.amqp_url, smoke=False, tmp=tmp)
    target = _Target(ctx, args)
    await target.declare()
    try:
        await target.preload(args.count)
        extra: dict[str, object] = {"concurrency": 64, "log_level": "WARNING"}
        if metrics:
            extra.update(metrics_port=0, metrics_host="127.0.0.1")
        worker = Worker(core.settings(ctx, target.setup.registry, **extra), handle_signals=False)
        cpu = time.process_time()
        running = asyncio.create_task(worker.run())
        await drained(ctx, target.queue)
        cpu = time.process_time() - cpu
        worker.request_stop()
        await running
        return cpu / args.count * 1e6
    finally:
        await target.cleanup()


async def pairs(args: argparse.Namespace, tmp: Path) -> list[tuple[float, float]]:
    found = []
    for i in range(args.pairs):
        order = (False, True) if i % 2 == 0 else (True, False)  # alternate who goes first
        figures = {on: await cpu_per_run(args, tmp, on) for on in order}
        found.append((figures[False], figures[True]))
        print(
            f"pair {i + 1}: off {figures[False]:,.0f} µs, on {figures[True]:,.0f} µs, "
            f"ratio {figures[True] / figures[False]:.3f}",
            flush=True,
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runtime", choices=["exec", "coprocess"], nargs="?", default="coprocess")
    parser.add_argument("path", choices=["events", "rpc"], nargs="?", default="events")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--prefetch", type=int, default=None)
    parser.add_argument("--micro", type=int, default=100_000, help="timeit loops per repeat")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    args = parser.parse_args()
    configure_logging("WARNING", json=True)
    logging.getLogger().handlers[0].stream = open("/dev/null", "w")  # noqa: SIM115
    on, off = micro(args.micro)
    print(f"instrumentation, in-memory values: {on:.2f} µs per run (floor {off:.2f} µs)")
    mon, moff = micro_multiprocess(args.micro)
    print(f"instrumentation, multiprocess (mmap) values: {mon:.2f} µs per run (floor {moff:.2f})")
    with tempfile.TemporaryDirectory(prefix="csext-metrics-cost-") as tmp:
        found = asyncio.run(pairs(args, Path(tmp)))
    ratios = [on_ / off_ for off_, on_ in found]
    spread = [off_ for off_, _ in found]
    print(
        f"{args.runtime} {args.path}: worker CPU per run, metrics on ÷ off, median of "
        f"{len(ratios)} pairs: {statistics.median(ratios):.3f} (range {min(ratios):.3f}-"
        f"{max(ratios):.3f}); off alone ranged {min(spread):,.0f}-{max(spread):,.0f} µs"
    )


if __name__ == "__main__":
    main()
