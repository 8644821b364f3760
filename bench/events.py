"""Event-path benchmarks: 1 (exec), 2 (coprocess vs raw and Celery), 5 (horizontal), 8 (curve).

Method (the same for csext, the floors and Celery): preload N events into the consumer's
queue, start the consumer process(es), and time the drain (core.drain_rate).
"""

from __future__ import annotations

import uuid

from csext.schemas.manifest import Spec
from csext.worker.amqp import names as c

from . import core
from .core import PYTHON, ROOT, Ctx, Row, Section, Stat


class EventSetup:
    """One csext event extension and one floor queue, reused across repeats."""

    def __init__(
        self,
        ctx: Ctx,
        script: str,
        *,
        runtime: str = "exec",
        concurrency: int = 8,
        body_size: int = 0,
        timeout: float = 30,
        prefetch: int | None = None,
    ) -> None:
        self.ctx = ctx
        self.token = uuid.uuid4().hex[:8]
        self.name = ctx.name(f"ev-{self.token}")
        self.registry = ctx.tmp / f"registry-{self.token}"
        self.pattern, self.key = core.routing(self.token)
        folder = core.write_extension(
            self.registry,
            self.name,
            script,
            runtime=runtime,
            concurrency=concurrency,
            timeout=timeout,
            patterns=[self.pattern],
            **({} if prefetch is None else {"prefetch": prefetch}),
        )
        self.entrypoint = folder / "run"
        self.concurrency = concurrency
        self.prefetch = Spec(
            hook="event",
            entrypoint="run",
            runtime=runtime,
            concurrency=concurrency,
            prefetch=prefetch,
        ).effective_prefetch
        self.last_busy = float("nan")
        """Fraction of the machine's CPU busy during the last drain (core.drain_rate)."""
        self.body = core.event_body(body_size)
        self.floor_queue = ctx.name(f"floor-{self.token}")
        self.log = ctx.tmp / f"{self.name}.log"

    async def declare(self) -> None:
        await core.declare_extension_queues(self.ctx, self.name, [self.pattern])
        connection = await core.connect(self.ctx)
        async with connection:
            channel = await connection.channel()
            # The floor's queue is declared exactly like csext's events queue (quorum).
            await channel.declare_queue(
                self.floor_queue, durable=True, arguments={"x-queue-type": "quorum"}
            )

    async def csext_rate(self, count: int, processes: int = 1, **env: str) -> float:
        await core.preload(self.ctx, self.ctx.exchange, self.key, self.body, count)
        procs: list = []

        def start() -> list:
            procs.append(
                core.start_worker(self.ctx, self.registry, processes=processes, log=self.log, **env)
            )
            return procs

        try:
            rate, self.last_busy = await core.drain_rate(
                self.ctx, c.events_queue(self.name), count, self.prefetch * processes, start
            )
        finally:
            core.stop(*procs)
        return rate

    async def floor_rate(self, mode: str, count: int, prefetch: int, processes: int = 1) -> float:
        await core.preload(self.ctx, "", self.floor_queue, self.body, count)
        procs: list = []

        def start() -> list:
            for _ in range(processes):
                argv = core.floor_argv(self.ctx, mode, self.floor_queue, prefetch, self.entrypoint)
                procs.append(core.spawn(argv, self.ctx.tmp / "floors.log"))
            return procs

        try:
            rate, self.last_busy = await core.drain_rate(
                self.ctx, self.floor_queue, count, prefetch * processes, start
            )
        finally:
            core.stop(*procs)
        return rate

    async def cleanup(self) -> None:
        await core.delete_extension(self.ctx, self.name)
        await core.delete_queues(self.ctx, self.floor_queue)


def percent(fractions: list[float]) -> str:
    """The median of the measured fractions (a drain shorter than a clock tick has none)."""
    measured = [f for f in fractions if f == f]
    return f"{Stat.of(measured).median:.0%}" if measured else "n/a"


def rate_figures(stat: Stat) -> dict[str, str]:
    return {"events/s": stat.show()}


async def b1_exec_events(ctx: Ctx, section: Section) -> None:
    """csext exec runtime vs raw consume-and-spawn, same no-op script, same prefetch."""
    setup = EventSetup(ctx, core.NOOP_SH, concurrency=8)
    await setup.declare()
    count = ctx.n(4000)
    floors, ours = [], []
    try:
        for _ in range(ctx.repeats):
            floors.append(await setup.floor_rate("spawn", count, setup.concurrency))
            ours.append(await setup.csext_rate(count))
    finally:
        await setup.cleanup()
    floor, mine = Stat.of(floors), Stat.of(ours)
    section.add(
        Row("raw aio-pika: consume, spawn the script, ack (prefetch 8)", rate_figures(floor))
    )
    core.ratio_row(
        section,
        "csext worker, exec runtime (concurrency 8)",
        rate_figures(mine),
        ours,
        floors,
        0.9,
    )
    section.notes.append(
        f"{count} events per sample; the extension is `{core.NOOP_SH.strip()!r}` and the floor "
        "spawns that same file (argv, piped stdout/stderr, own session, pidfd watcher)."
    )


async def celery_event_rate(ctx: Ctx, count: int) -> float:
    queue = ctx.name(f"celery-{uuid.uuid4().hex[:6]}")
    env = celery_env(ctx, queue)
    log = ctx.tmp / "celery.log"
    core.run_json(
        [PYTHON, "-m", "bench.peers", "celery-preload", "--count", str(count)], log, env=env
    )
    await wait_ready_count(ctx, queue, count)
    procs: list = []

    def start() -> list:
        argv = core.celery_worker_argv(queue, "warning")
        procs.append(core.spawn(argv, log, env))
        return procs

    try:
        rate, _ = await core.drain_rate(ctx, queue, count, 8, start)
    finally:
        core.stop(*procs)
        await core.delete_queues(ctx, queue)
    return rate


def celery_env(ctx: Ctx, queue: str, backend: str = "") -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(
        {
            "BENCH_CELERY": "1",
            "BENCH_AMQP_URL": ctx.amqp_url,
            "BENCH_QUEUE": queue,
            "BENCH_CELERY_BACKEND": backend,
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


async def wait_ready_count(ctx: Ctx, queue: str, count: int, timeout: float = 60) -> None:
    import asyncio
    import time

    connection = await core.connect(ctx)
    async with connection:
        channel = await connection.channel()
        give_up = time.monotonic() + timeout
        while await core.ready_count(channel, queue) < count:
            if time.monotonic() > give_up:
                raise RuntimeError(f"{queue}: the preloaded tasks did not arrive")
            await asyncio.sleep(0.05)


async def b2_coprocess_events(ctx: Ctx, section: Section) -> None:
    setup = EventSetup(ctx, core.coprocess_script(), runtime="coprocess", concurrency=8)
    unheld = EventSetup(
        ctx, core.coprocess_script(), runtime="coprocess", concurrency=8, prefetch=8
    )
    await setup.declare()
    await unheld.declare()
    raw_count, count = ctx.n(20000), ctx.n(10000)
    raws, pipes, ours, chatty, bare, celeries = [], [], [], [], [], []
    celery = core.has("celery")
    try:
        for _ in range(ctx.repeats):
            raws.append(await setup.floor_rate("ack", raw_count, 100))
            pipes.append(await setup.floor_rate("pipe", count, setup.prefetch))
            ours.append(await setup.csext_rate(count))
            chatty.append(await setup.csext_rate(count, CSEXT_LOG_SUCCESSFUL_RUNS="true"))
            bare.append(await unheld.csext_rate(count))
            if celery:
                celeries.append(await celery_event_rate(ctx, count))
    finally:
        await setup.cleanup()
        await unheld.cleanup()
    raw, mine = Stat.of(raws), Stat.of(ours)
    section.add(Row("raw aio-pika: consume and ack (prefetch 100)", rate_figures(raw)))
    core.ratio_row(
        section,
        "csext worker, coprocess runtime (Python, concurrency 8, default prefetch 16)",
        rate_figures(mine),
        ours,
        raws,
        0.6,
    )
    section.add(
        Row(
            "raw aio-pika: consume, one line to a warm process over a pipe and back, ack "
            f"(8 warm processes, prefetch {setup.prefetch})",
            rate_figures(Stat.of(pipes)),
        )
    )
    core.ratio_row(
        section,
        "csext coprocess ÷ the pipe floor (the same work: like with like)",
        {},
        ours,
        pipes,
        None,
    )
    for label, samples in (
        ("same, log_successful_runs: true (a JSON log line per run)", chatty),
        ("same, spec.prefetch: 8 (no delivery held beyond the running ones)", bare),
    ):
        stat = Stat.of(samples)
        core.ratio_row(section, label, rate_figures(stat), samples, raws, None)
    if celery:
        cel = Stat.of(celeries)
        section.add(Row("Celery worker -c 2 prefork, no result backend", rate_figures(cel)))
        core.ratio_row(section, "csext coprocess ÷ Celery", {}, ours, celeries, 2.0)
    else:
        section.skip(
            "Celery worker -c 2 prefork", "celery not installed (pip install -e '.[bench]')"
        )
    section.notes.append(
        f"{raw_count} events per raw sample, {count} per csext/Celery sample. The coprocess is "
        "a Python `handle` returning None on the stdlib helper (sdk/coprocess.py). "
        "Celery runs its own default: a classic queue, acks before the task, prefetch 4 x 2. "
        "The pipe floor (bench/floors.py `pipe`) drives the same coprocess file with csext's "
        "wire protocol and nothing else: no run record, no deadline timer, no validation; "
        "the ack-only floor does no work at all, so it is the broker's ceiling, not a like "
        "for like."
    )


async def b5_horizontal(ctx: Ctx, section: Section) -> None:
    setup = EventSetup(ctx, core.coprocess_script(), runtime="coprocess", concurrency=8)
    await setup.declare()
    count, raw_count = ctx.n(10000), ctx.n(20000)
    samples: dict[str, tuple[list[float], list[float]]] = {
        key: ([], []) for key in ("raw1", "raw2", "one", "two")
    }

    def keep(key: str, rate: float) -> None:
        samples[key][0].append(rate)
        samples[key][1].append(setup.last_busy)

    try:
        for _ in range(ctx.repeats):
            keep("raw1", await setup.floor_rate("ack", raw_count, 100))
            keep("raw2", await setup.floor_rate("ack", raw_count, 100, processes=2))
            keep("one", await setup.csext_rate(count, processes=1))
            keep("two", await setup.csext_rate(count, processes=2))
    finally:
        await setup.cleanup()

    def figures(key: str) -> dict[str, str]:
        rates, busy = samples[key]
        return rate_figures(Stat.of(rates)) | {"CPU busy": percent(busy)}

    section.add(Row("raw aio-pika ack-only, 1 process", figures("raw1")))
    core.ratio_row(
        section,
        "raw aio-pika ack-only, 2 processes (÷ 1 process)",
        figures("raw2"),
        samples["raw2"][0],
        samples["raw1"][0],
        None,
    )
    section.add(Row("csext coprocess events, `csext worker --processes 1`", figures("one")))
    core.ratio_row(
        section,
        "csext coprocess events, `--processes 2` (÷ 1 process)",
        figures("two"),
        samples["two"][0],
        samples["one"][0],
        1.25,
    )
    section.notes.append(
        f"{count} events per csext sample, {raw_count} per raw sample. CPU busy: the share of "
        "the whole machine's CPU time (every process, the broker's included, /proc/stat) used "
        "during the drain. What one csext process leaves idle is all a second process on this "
        "machine can use: more workers scale with more cores or more hosts."
    )


async def b8_event_curve(ctx: Ctx, section: Section) -> None:
    sizes = [(1024, ctx.n(5000)), (64 * 1024, ctx.n(2000)), (1024 * 1024, ctx.n(200, 5))]
    for size, count in sizes:
        setup = EventSetup(
            ctx, core.coprocess_script(), runtime="coprocess", concurrency=8, body_size=size
        )
        await setup.declare()
        try:
            raws, ours = [], []
            for _ in range(ctx.repeats):
                raws.append(await setup.floor_rate("ack", count, 100))
                ours.append(await setup.csext_rate(count))
        finally:
            await setup.cleanup()
        raw, mine = Stat.of(raws), Stat.of(ours)
        label = f"{size // 1024} KB" if size < 1 << 20 else "1 MB"
        core.ratio_row(
            section,
            f"events, coprocess, body {label} (raw ack-only {raw.show()})",
            rate_figures(mine),
            ours,
            raws,
            None,
        )
    for concurrency in (1, 4, 16):
        setup = EventSetup(
            ctx, core.coprocess_script(), runtime="coprocess", concurrency=concurrency
        )
        await setup.declare()
        count = ctx.n(5000)
        try:
            ours = [await setup.csext_rate(count) for _ in range(ctx.repeats)]
        finally:
            await setup.cleanup()
        section.add(
            Row(
                f"events, coprocess, 1 KB body, spec.concurrency {concurrency}",
                rate_figures(Stat.of(ours)),
            )
        )
