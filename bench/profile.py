"""`python -m bench.profile [exec|coprocess] [events|rpc] [--count N] [--cprofile FILE]`: the
worker's own CPU per event (or RPC call), in-process.

Wall-clock rates on a shared 2-core machine move with whatever else runs; the worker's CPU time
per event (`time.process_time()` over the drain) moves less, though still by ±15 % between
minutes here: compare changes in alternating runs. This preloads N events, starts a
`Worker` in this process, waits for the queue to drain and prints µs of worker CPU per event
(the extension's own process is not counted) and of the local broker's, optionally with a
cProfile dump to read with `python -m pstats FILE`. How bench/optimisations.md measured each change.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import orjson

from csext.worker.amqp import names as c
from csext.worker.app import Worker
from csext.worker.logs import configure_logging

from . import core
from .events import EventSetup
from .rpc import STATUS_PY, STATUS_SH, RpcSetup


def broker_cpu() -> float:
    """CPU seconds the local RabbitMQ node (beam.smp) has used so far; 0 when not found."""
    found = subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True, text=True)
    total = 0.0
    for pid in found.stdout.split():
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def drained(ctx: core.Ctx, queue: str) -> None:
    connection = await core.connect(ctx)
    async with connection:
        channel = await connection.channel()
        while await core.ready_count(channel, queue):
            await asyncio.sleep(0.005)


class _Target:
    """What one profile run drains: an event extension's queue, or an orchestrator's RPC
    queue of calls (answered into a queue of ours that nobody reads)."""

    def __init__(self, ctx: core.Ctx, args: argparse.Namespace) -> None:
        self.ctx, self.rpc = ctx, args.path == "rpc"
        exec_runtime = args.runtime == "exec"
        setup: EventSetup | RpcSetup
        if self.rpc:
            script = STATUS_SH if exec_runtime else core.coprocess_script(STATUS_PY)
            setup = RpcSetup(ctx, script, runtime=args.runtime, concurrency=args.concurrency)
        else:
            script = core.NOOP_SH if exec_runtime else core.coprocess_script()
            setup = EventSetup(
                ctx,
                script,
                runtime=args.runtime,
                concurrency=args.concurrency,
                prefetch=args.prefetch,
            )
        self.setup = setup
        self.replies = ctx.name("replies")
        self.queue = (c.rpc_queue if self.rpc else c.events_queue)(setup.name)

    async def declare(self) -> None:
        if isinstance(self.setup, EventSetup):
            await self.setup.declare()
        else:
            await core.declare_extension_queues(self.ctx, self.setup.name, [])
        connection = await core.connect(self.ctx)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(self.replies, auto_delete=False)

    async def preload(self, count: int) -> None:
        if isinstance(self.setup, EventSetup):
            setup = self.setup
            await core.preload(self.ctx, self.ctx.exchange, setup.key, setup.body, count)
            return
        body = orjson.dumps({"action": "status", "payload": {}})
        deadline = {c.HEADER_DEADLINE: int((time.time() + 3600) * 1000)}
        await core.preload(
            self.ctx, "", self.queue, body, count, headers=deadline, reply_to=self.replies
        )

    async def cleanup(self) -> None:
        await core.delete_extension(self.ctx, self.setup.name)
        await core.delete_exchange(self.ctx, self.ctx.exchange)
        await core.delete_queues(self.ctx, self.replies)


async def measure(args: argparse.Namespace, tmp: Path) -> None:
    ctx = core.Ctx(amqp_url=args.amqp_url, smoke=False, tmp=tmp)
    target = _Target(ctx, args)
    await target.declare()
    what = f"{args.runtime} {'calls' if target.rpc else 'events'}"
    try:
        for _ in range(args.repeats):
            await target.preload(args.count)
            worker = Worker(
                core.settings(ctx, target.setup.registry, concurrency=64, log_level=args.log_level),
                handle_signals=False,
            )
            profiler = cProfile.Profile() if args.cprofile else None
            cpu, wall, broker = time.process_time(), time.perf_counter(), broker_cpu()
            if profiler:
                profiler.enable()
            running = asyncio.create_task(worker.run())
            await drained(ctx, target.queue)
            if profiler:
                profiler.disable()
                profiler.dump_stats(args.cprofile)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            broker = broker_cpu() - broker
            worker.request_stop()
            await running
            print(
                f"{what}: {args.count}, {cpu / args.count * 1e6:,.0f} µs worker CPU each,"
                f" {broker / args.count * 1e6:,.0f} µs broker CPU (every local node),"
                f" {args.count / wall:,.0f}/s (incl. start-up)"
            )
    finally:
        await target.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runtime", choices=["exec", "coprocess"], nargs="?", default="coprocess")
    parser.add_argument("path", choices=["events", "rpc"], nargs="?", default="events")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--prefetch", type=int, default=None, help="events: spec.prefetch (default: the runtime's)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--cprofile", metavar="FILE")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    args = parser.parse_args()
    configure_logging(args.log_level, json=True)
    logging.getLogger().handlers[0].stream = open("/dev/null", "w")  # noqa: SIM115
    with tempfile.TemporaryDirectory(prefix="csext-profile-") as tmp:
        asyncio.run(measure(args, Path(tmp)))


if __name__ == "__main__":
    main()
