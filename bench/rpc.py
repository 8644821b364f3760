"""RPC benchmarks: 3 (exec), 4 (coprocess vs raw echo and the peers), 8 (curve).

One load generator (bench.loadgen: K calls in flight over direct reply-to, fixed time) drives
csext and the raw floors; the peers are driven by their own clients (bench.peers).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from csext.worker.amqp import names as c

from . import core
from .core import PYTHON, ROOT, Ctx, Row, Section, Stat

STATUS_SH = '#!/bin/sh\necho \'{"status":"success","power_state":"PowerOn"}\'\n'
STATUS_PY = core.NOOP_PY_COPROCESS.replace(
    "return None", 'return {{"status": "success", "power_state": "PowerOn"}}'
)


class RpcSetup:
    """A running csext worker with one orchestrator extension, plus a raw floor queue."""

    def __init__(self, ctx: Ctx, script: str, *, runtime: str, concurrency: int) -> None:
        self.ctx = ctx
        token = uuid.uuid4().hex[:8]
        self.name = ctx.name(f"rpc-{token}")
        self.registry = ctx.tmp / f"registry-{token}"
        folder = core.write_extension(
            self.registry,
            self.name,
            script,
            hook="orchestrator",
            runtime=runtime,
            concurrency=concurrency,
            timeout=30,
        )
        self.entrypoint = folder / "run"
        self.floor_queue = ctx.name(f"rpcfloor-{token}")
        self.log = ctx.tmp / f"{self.name}.log"
        self.procs: list[Any] = []

    async def __aenter__(self) -> RpcSetup:
        connection = await core.connect(self.ctx)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(
                self.floor_queue, durable=True, arguments={"x-message-ttl": 3_600_000}
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        await core.delete_extension(self.ctx, self.name)
        await core.delete_queues(self.ctx, self.floor_queue)

    def start_worker(self) -> None:
        proc = core.start_worker(self.ctx, self.registry, log=self.log)
        self.procs.append(proc)
        core.wait_log(
            self.log,
            "worker started",
            proc=proc,
            count=self.log.read_text().count("worker started") + 1 if self.log.exists() else 1,
        )

    def start_floor(self, mode: str, prefetch: int) -> None:
        argv = core.floor_argv(self.ctx, mode, self.floor_queue, prefetch, self.entrypoint)
        proc = core.spawn(argv, self.ctx.tmp / "floors.log", stdout=-1)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"floor {mode} did not start; see {self.ctx.tmp}/floors.log")
        self.procs.append(proc)

    def stop(self) -> None:
        core.stop(*self.procs)
        self.procs.clear()

    def load(self, target: str, inflight: int, payload_bytes: int = 0) -> dict[str, Any]:
        exchange, key = (c.RPC_EXCHANGE, self.name) if target == "csext" else ("", self.floor_queue)
        return loadgen(self.ctx, exchange, key, inflight, payload_bytes)


def loadgen(
    ctx: Ctx, exchange: str, key: str, inflight: int, payload_bytes: int = 0
) -> dict[str, Any]:
    argv = [
        PYTHON,
        "-m",
        "bench.loadgen",
        "--url",
        ctx.amqp_url,
        "--exchange",
        exchange,
        "--key",
        key,
        "--inflight",
        str(inflight),
        "--seconds",
        str(ctx.seconds),
        "--warmup",
        str(ctx.warmup),
        "--payload-bytes",
        str(payload_bytes),
    ]
    if ctx.smoke:
        argv += ["--count", str(max(4, inflight * 2))]
    result = core.run_json(argv, ctx.tmp / "loadgen.log")
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} calls failed; see {ctx.tmp}")
    return result


def figures(samples: list[dict[str, Any]]) -> dict[str, str]:
    return {
        "req/s": Stat.of(s["rate"] for s in samples).show(),
        "p50": Stat.of(s["p50_ms"] for s in samples).show(2, " ms"),
        "p99": Stat.of(s["p99_ms"] for s in samples).show(2, " ms"),
    }


def median_rate(samples: list[dict[str, Any]]) -> float:
    return Stat.of(rates(samples)).median


def rates(samples: list[dict[str, Any]]) -> list[float]:
    return [s["rate"] for s in samples]


async def measure_pair(
    ctx: Ctx, setup: RpcSetup, floor_mode: str, inflight: int, payload_bytes: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Floor and csext samples at one in-flight level, each server alone on the broker."""
    floors, ours = [], []
    for _ in range(ctx.repeats):
        setup.start_floor(floor_mode, max(inflight, 8))
        floors.append(await asyncio.to_thread(setup.load, "floor", inflight, payload_bytes))
        setup.stop()
        setup.start_worker()
        ours.append(await asyncio.to_thread(setup.load, "csext", inflight, payload_bytes))
        setup.stop()
    return floors, ours


async def b3_exec_rpc(ctx: Ctx, section: Section) -> None:
    async with RpcSetup(ctx, STATUS_SH, runtime="exec", concurrency=32) as setup:
        for inflight in (1, 32):
            floors, ours = await measure_pair(ctx, setup, "rpc-spawn", inflight)
            section.add(Row(f"raw RPC + spawn the script, {inflight} in flight", figures(floors)))
            core.ratio_row(
                section,
                f"csext exec runtime, {inflight} in flight",
                figures(ours),
                rates(ours),
                rates(floors),
                0.9,
            )
    section.notes.append(
        "The extension is an orchestrator whose script prints "
        '`{"status":"success","power_state":"PowerOn"}`; the floor spawns that same '
        "script per request and replies with its stdout. spec.concurrency 32."
    )


async def b4_coprocess_rpc(ctx: Ctx, section: Section) -> None:
    peers = await asyncio.to_thread(peer_samples, ctx)
    async with RpcSetup(
        ctx, core.coprocess_script(STATUS_PY), runtime="coprocess", concurrency=8
    ) as setup:
        for inflight in (1, 64):
            floors, ours = await measure_pair(ctx, setup, "echo", inflight)
            section.add(
                Row(f"raw aio-pika echo (direct reply-to), {inflight} in flight", figures(floors))
            )
            core.ratio_row(
                section,
                f"csext coprocess runtime, {inflight} in flight",
                figures(ours),
                rates(ours),
                rates(floors),
                0.8,
            )
            for peer, by_inflight in peers.items():
                samples = by_inflight.get(inflight)
                if isinstance(samples, str):
                    section.skip(f"{peer}, {inflight} in flight", samples)
                    continue
                section.add(Row(f"{peer}, {inflight} in flight", figures(samples)))
                goal = 1.5 if peer.startswith("FastStream") else None
                core.ratio_row(
                    section,
                    f"csext coprocess ÷ {peer.split(' ')[0]}, {inflight} in flight",
                    {},
                    median_rate(ours),
                    median_rate(samples),
                    goal,
                )
    section.notes.append(
        "csext: an orchestrator coprocess (Python, stdlib helper) answering status, "
        "spec.concurrency 8. Peers echo the payload with their own client and server: "
        "FastStream `broker.request` to a `@subscriber` returning the body; Celery "
        "`send_task().get()` on the rpc:// backend, worker `-c 2` prefork; nameko "
        "`ClusterRpcProxy` to an `@rpc` method. Sync clients (Celery, nameko) reach 64 in "
        "flight by sending 64 and then collecting 64."
    )


def peer_samples(ctx: Ctx) -> dict[str, dict[int, Any]]:
    """Every peer's samples by in-flight level, or a skip reason string per level."""
    found: dict[str, dict[int, Any]] = {}
    runs = (
        ("FastStream RPC", "faststream", run_faststream),
        ("Celery rpc backend", "celery", run_celery),
        ("nameko RPC", "nameko", run_nameko),
    )
    for label, module, runner in runs:
        if not core.has(module):
            reason = f"{module} not installed (pip install -e '.[bench]')"
            found[label] = {1: reason, 64: reason}
            continue
        try:
            found[label] = runner(ctx)
        except Exception as exc:  # a peer that cannot run here is reported, not fatal
            found[label] = {1: f"failed: {exc}", 64: f"failed: {exc}"}
    return found


def _peer_load(ctx: Ctx, command: str, env: dict[str, str], inflight: int) -> dict[str, Any]:
    argv = [
        PYTHON,
        "-m",
        "bench.peers",
        command,
        "--inflight",
        str(inflight),
        "--seconds",
        str(ctx.seconds),
        "--warmup",
        str(ctx.warmup),
    ]
    if ctx.smoke:
        argv += ["--count", str(max(4, inflight * 2))]
    return core.run_json(argv, ctx.tmp / "peers.log", env=env)


def _peer_env(ctx: Ctx, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"BENCH_AMQP_URL": ctx.amqp_url, "PYTHONPATH": str(ROOT)}, **extra)
    return env


def _per_level(ctx: Ctx, start: Any, command: str, env: dict[str, str]) -> dict[int, Any]:
    found: dict[int, Any] = {}
    for inflight in (1, 64):
        samples = []
        for _ in range(ctx.repeats):
            procs = start()
            try:
                samples.append(_peer_load(ctx, command, env, inflight))
            finally:
                core.stop(*procs)
        found[inflight] = samples
    return found


def run_faststream(ctx: Ctx) -> dict[int, Any]:
    queue = ctx.name("faststream")
    env = _peer_env(ctx, BENCH_QUEUE=queue)

    def start() -> list[Any]:
        proc = core.spawn(
            [PYTHON, "-m", "bench.peers", "faststream-server"],
            ctx.tmp / "peers.log",
            env,
            stdout=-1,
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the FastStream server did not start")
        return [proc]

    try:
        return _per_level(ctx, start, "faststream-client", env)
    finally:
        asyncio.run(core.delete_queues(ctx, queue))


def run_celery(ctx: Ctx) -> dict[int, Any]:
    queue = ctx.name("celery-rpc")
    env = _peer_env(ctx, BENCH_CELERY="1", BENCH_QUEUE=queue, BENCH_CELERY_BACKEND="rpc://")
    log = ctx.tmp / "celery-rpc.log"

    def start() -> list[Any]:
        argv = core.celery_worker_argv(queue, "info")
        offset = log.stat().st_size if log.exists() else 0
        proc = core.spawn(argv, log, env)
        core.wait_log(log, "ready.", proc=proc, offset=offset)
        return [proc]

    try:
        return _per_level(ctx, start, "celery-client", env)
    finally:
        asyncio.run(core.delete_queues(ctx, queue))


def run_nameko(ctx: Ctx) -> dict[int, Any]:
    service = ctx.name("nameko").replace("-", "_")
    env = _peer_env(ctx, BENCH_NAMEKO_SERVICE=service)
    log = ctx.tmp / "nameko.log"

    def start() -> list[Any]:
        argv = [
            PYTHON,
            "-m",
            "nameko",
            "run",
            "bench.peers_nameko",
            "--broker",
            ctx.amqp_url,
        ]
        offset = log.stat().st_size if log.exists() else 0
        proc = core.spawn(argv, log, env, stdout=None)
        core.wait_log(log, "starting services", proc=proc, offset=offset)
        return [proc]

    try:
        return _per_level(ctx, start, "nameko-client", env)
    finally:
        asyncio.run(core.delete_queues(ctx, f"rpc-{service}"))


async def b8_rpc_curve(ctx: Ctx, section: Section) -> None:
    async with RpcSetup(
        ctx, core.coprocess_script(STATUS_PY), runtime="coprocess", concurrency=8
    ) as setup:
        setup.start_worker()
        try:
            for size, label in ((1024, "1 KB"), (64 * 1024, "64 KB"), (1024 * 1024, "1 MB")):
                samples = [
                    await asyncio.to_thread(setup.load, "csext", 1, size)
                    for _ in range(ctx.repeats)
                ]
                section.add(Row(f"RPC, coprocess, payload {label}, 1 in flight", figures(samples)))
            for inflight in (1, 4, 16, 64):
                samples = [
                    await asyncio.to_thread(setup.load, "csext", inflight)
                    for _ in range(ctx.repeats)
                ]
                section.add(
                    Row(
                        f"RPC, coprocess, {inflight} in flight (spec.concurrency 8)",
                        figures(samples),
                    )
                )
        finally:
            setup.stop()
