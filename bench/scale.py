"""Benchmark 7: worker RSS and start-up with 1, 100 and 1,000 enabled extensions, and the time
from `csext enable` (the real CLI: commit, then broadcast on csext.control) to the first event
the newly enabled extension runs, with 100 others enabled."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

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
    try:
        core.wait_log(log, "worker started", proc=proc, offset=offset, timeout=300)
    except BaseException:
        core.stop(proc, timeout=10)
        raise
    elapsed = time.perf_counter() - started
    time.sleep(0.5)
    return elapsed, core.rss_kb(proc.pid), proc


def too_many_for_the_broker(ctx: Ctx, count: int) -> str | None:
    """Why `count` extensions cannot be declared on this broker, if they cannot.

    Every extension has a quorum queue, and RabbitMQ keeps files open per quorum queue: past
    its open-file limit it stops answering (it does not refuse), which would wedge the rest
    of the run. The broker runs on this machine, so its limit is read from /proc (the
    RabbitMQ docs ask for at least 65,536 in production).
    """
    limit = broker_open_files(urlsplit(ctx.amqp_url).port or 5672)
    need = 2 * count + 300
    if limit is not None and limit < need:
        return (
            f"the broker's open-file limit is {limit} and {count} quorum queues need about "
            f"{need}; RabbitMQ stops answering past it (raise its LimitNOFILE, e.g. to 65536)"
        )
    return None


def broker_open_files(port: int) -> int | None:
    """The soft open-file limit of the local RabbitMQ listening on `port`, if found."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"beam.smp" not in (entry / "cmdline").read_bytes():
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
            limits = (entry / "limits").read_text()
        except OSError:
            continue
        ports = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"RABBITMQ_NODE_PORT=")]
        if int(ports[0] if ports else 5672) != port:
            continue
        for line in limits.splitlines():
            if line.startswith("Max open files"):
                value = line.split()[3]
                return int(value) if value.isdigit() else None
    return None


async def b7_scale(ctx: Ctx, section: Section) -> None:
    sizes = (1, 3, 5) if ctx.smoke else (1, 100, 1000)
    for count in sizes:
        reason = too_many_for_the_broker(ctx, count)
        if reason:
            section.skip(f"{count} enabled extensions", reason)
            continue
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
