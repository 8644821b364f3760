"""Benchmark 7: worker RSS and start-up with 1, 100 and 1,000 enabled extensions, and the time
from `csext enable` (the real CLI: commit, then broadcast on csext.control) to the first event
the newly enabled extension runs, with 100 others enabled."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

from . import core
from .core import CSEXT, Ctx, Row, Section


def write_registry(ctx: Ctx, count: int) -> tuple[Path, list[str]]:
    token = uuid.uuid4().hex[:6]
    registry = ctx.tmp / f"scale-{token}"
    names = [ctx.name(f"s{token}-{i}") for i in range(count)]
    for name in names:
        pattern, _ = core.routing(f"{token}x{name[-4:]}")
        core.write_extension(registry, name, core.NOOP_SH, patterns=[pattern])
    return registry, names


def start_and_measure(ctx: Ctx, registry: Path, log: Path) -> tuple[float, int, object]:
    """(seconds from exec to `worker started`, RSS KiB once started, the process)."""
    offset = log.stat().st_size if log.exists() else 0
    started = time.perf_counter()
    proc = core.start_worker(ctx, registry, log=log)
    core.wait_log(log, "worker started", proc=proc, offset=offset, timeout=300)
    elapsed = time.perf_counter() - started
    time.sleep(0.5)
    return elapsed, core.rss_kb(proc.pid), proc


async def b7_scale(ctx: Ctx, section: Section) -> None:
    sizes = (1, 3, 5) if ctx.smoke else (1, 100, 1000)
    for count in sizes:
        registry, names = write_registry(ctx, count)
        log = ctx.tmp / f"scale-{count}.log"
        try:
            cold, _, proc = start_and_measure(ctx, registry, log)
            core.stop(proc)
            warm, rss, proc = start_and_measure(ctx, registry, log)
            core.stop(proc)
        finally:
            await core.delete_extension(ctx, *names)
        figures = {
            "start (new queues)": f"{cold:.2f} s",
            "restart": f"{warm:.2f} s",
            "RSS": f"{rss / 1024:.0f} MB",
        }
        row = section.add(Row(f"{count} enabled extensions", figures))
        if count == sizes[1]:
            row.goal, row.met = "RSS ≤ 80 MB", rss / 1024 <= 80
    await enable_latency(ctx, section, sizes[1])
    section.notes.append(
        "Start-up is from exec of `csext worker` to its `worker started` log line (imports, "
        "connection, every extension's queues, bindings, channel and consumers); RSS is VmRSS "
        "of the worker 0.5 s later. One sample per size."
    )


async def enable_latency(ctx: Ctx, section: Section, others: int) -> None:
    registry, names = write_registry(ctx, others)
    token = uuid.uuid4().hex[:6]
    name = ctx.name(f"late-{token}")
    marker = ctx.tmp / f"marker-{token}"
    pattern, key = core.routing(token)
    core.write_extension(
        registry, name, f"#!/bin/sh\n: > '{marker}'\n", enabled=False, patterns=[pattern]
    )
    log = ctx.tmp / "enable.log"
    samples = []
    proc = None
    try:
        _, _, proc = start_and_measure(ctx, registry, log)
        # As if enabled before: its queue and binding exist, so the event waits for it.
        await core.declare_extension_queues(ctx, name, [pattern])
        await core.preload(ctx, ctx.exchange, key, core.event_body(), 1)
        started = time.perf_counter()
        done = subprocess.run(
            [CSEXT, "enable", name, "--registry", str(registry), "--amqp-url", ctx.amqp_url],
            capture_output=True,
            env=core.worker_env(ctx, registry),
        )
        cli = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"csext enable failed: {done.stderr.decode()}")
        give_up = time.monotonic() + 30
        while not marker.exists():
            if time.monotonic() > give_up:
                raise RuntimeError(f"{name} never ran after csext enable; see {log}")
            time.sleep(0.002)
        total = time.perf_counter() - started
        samples.append((cli, total))
    finally:
        if proc is not None:
            core.stop(proc)
        await core.delete_extension(ctx, name, *names)
    cli, total = samples[0]
    section.add(
        Row(
            f"`csext enable` → first event run, {others} others enabled",
            {
                "total": f"{total:.2f} s",
                "the CLI itself": f"{cli:.2f} s",
                "worker reload after the CLI": f"{total - cli:.2f} s",
            },
            goal="reload ≤ 1 s",
            met=total - cli <= 1.0,
        )
    )
