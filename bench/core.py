"""Shared machinery: run context, statistics, broker helpers, processes, extensions on disk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import yaml

from csext.worker.amqp import names as c
from csext.worker.amqp import topology
from csext.worker.settings import Settings, redact_url

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CSEXT = str(Path(sys.executable).parent / "csext")
NOOP_SH = "#!/bin/sh\nexit 0\n"
"""The no-op shell extension of the exec benchmarks (and what their floors spawn)."""
NOOP_PY_COPROCESS = """#!{python}
import sys
sys.path.insert(0, {sdk_dir!r})
from coprocess import serve

def handle(action, payload):
    return None

if __name__ == "__main__":
    serve(handle)
"""
VM = "2b7a768a-3bc2-4c3c-ae05-2b3480b53478"


def routing(token: str) -> tuple[str, str]:
    """(pattern, routing key) of events only one extension of this run binds."""
    return (
        f"management-server.ResourceStateEvent.T{token}.#",
        f"management-server.ResourceStateEvent.T{token}.VirtualMachine.{VM}",
    )


@dataclass
class Ctx:
    """What every benchmark needs: the broker, the size of the run, a scratch folder."""

    amqp_url: str
    smoke: bool
    tmp: Path
    repeats: int = 5
    seconds: float = 3.0
    """Measured seconds per RPC sample (after `warmup`)."""
    warmup: float = 0.5
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    notes: list[str] = field(default_factory=list)

    def n(self, full: int, smoke: int = 20) -> int:
        return smoke if self.smoke else full

    @property
    def exchange(self) -> str:
        """The CloudStack exchange of this run (unique, deleted at the end)."""
        return f"bench-{self.token}-events"

    def name(self, what: str) -> str:
        return f"bench-{self.token}-{what}"


# --- statistics ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        data = sorted(values)
        if not data:
            return cls(float("nan"), float("nan"), float("nan"))
        return cls(statistics.median(data), data[0], data[-1])

    def show(self, digits: int = 0, unit: str = "") -> str:
        if self.median != self.median:
            return "n/a"
        fmt = f"{{:,.{digits}f}}"
        text = fmt.format(self.median) + unit
        if len({round(self.low, digits), round(self.high, digits)}) > 1:
            text += f" ({fmt.format(self.low)}-{fmt.format(self.high)})"
        return text


# --- report rows --------------------------------------------------------------------------


@dataclass
class Row:
    """One line of a result table: what, its figures, and its ratio against the floor."""

    label: str
    figures: dict[str, str]
    ratio: float | None = None
    goal: str = ""
    met: bool | None = None


@dataclass
class Section:
    key: str
    title: str
    what: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(
            f"  {row.label:<58} "
            + "  ".join(f"{k} {v}" for k, v in row.figures.items())
            + (f"  ratio {row.ratio:.2f}" if row.ratio is not None else ""),
            flush=True,
        )
        return row

    def skip(self, label: str, reason: str) -> None:
        self.rows.append(Row(label, {"": f"skipped: {reason}"}))
        print(f"  {label:<58} skipped: {reason}", flush=True)


def paired_ratio(values: Sequence[float], floors: Sequence[float]) -> float:
    """The median of per-repeat ratios. Each repeat runs the floor and csext back to back, so
    a shared machine that slows down between repeats moves both sides of a ratio together; a
    ratio of two medians would divide samples taken minutes apart."""
    ratios = [v / f for v, f in zip(values, floors, strict=True) if f]
    return statistics.median(ratios) if ratios else float("nan")


def ratio_row(
    section: Section,
    label: str,
    figures: dict[str, str],
    value: float | Sequence[float],
    floor: float | Sequence[float],
    goal: float | None,
    goal_text: str = "",
) -> Row:
    """A row with `value ÷ floor`: per-repeat samples (paired, see `paired_ratio`) or two
    figures measured apart (e.g. a peer measured before csext)."""
    if isinstance(value, Sequence) and isinstance(floor, Sequence):
        value, floor = paired_ratio(value, floor), 1.0
    assert isinstance(value, float | int) and isinstance(floor, float | int)
    ratio = value / floor if floor and floor == floor and value == value else None
    met = None if goal is None or ratio is None else ratio >= goal
    text = goal_text or (f"≥ {goal:g}x" if goal is not None else "")
    return section.add(Row(label, figures, ratio, text, met))


# --- broker -------------------------------------------------------------------------------


async def connect(ctx: Ctx) -> aio_pika.abc.AbstractConnection:
    return await aio_pika.connect(ctx.amqp_url)


def settings(ctx: Ctx, registry: Path, **extra: Any) -> Settings:
    return Settings(
        amqp_url=ctx.amqp_url, registry=registry, cloudstack_exchange=ctx.exchange, **extra
    )


async def declare_extension_queues(ctx: Ctx, name: str, patterns: Sequence[str]) -> None:
    """The queues a worker would declare, bound, so a backlog can wait before it starts."""
    connection = await connect(ctx)
    async with connection:
        channel = await connection.channel()
        await topology.declare_base(channel, settings(ctx, ctx.tmp))
        await topology.declare_rpc_queue(channel, name)
        queue = await topology.declare_events_queue(channel, name, settings(ctx, ctx.tmp))
        for pattern in patterns:
            await queue.bind(ctx.exchange, pattern)


def event_body(size: int = 0) -> bytes:
    body: dict[str, Any] = {
        "resource": "VirtualMachine",
        "id": VM,
        "old-state": "Starting",
        "new-state": "Running",
        "status": "postStateTransitionEvent",
        "eventDateTime": "2026-01-15 10:22:31 +0000",
    }
    raw = json.dumps(body).encode()
    if size > len(raw):
        body["details"] = "x" * (size - len(raw) - 14)
        raw = json.dumps(body).encode()
    return raw


async def preload(
    ctx: Ctx,
    exchange: str,
    routing_key: str,
    body: bytes,
    count: int,
    *,
    persistent: bool = True,
    headers: dict[str, Any] | None = None,
    reply_to: str | None = None,
) -> None:
    """Publish `count` copies with confirms (as CloudStack does: persistent text/plain);
    `reply_to` makes them RPC calls answered into that queue."""
    connection = await connect(ctx)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = (
            channel.default_exchange
            if not exchange
            else await channel.get_exchange(exchange, ensure=False)
        )
        mode = (
            aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT
        )
        batch = max(1, min(500, (4 << 20) // max(1, len(body))))
        for start in range(0, count, batch):
            await asyncio.gather(
                *(
                    target.publish(
                        aio_pika.Message(
                            body,
                            content_type="text/plain",
                            delivery_mode=mode,
                            headers=headers,
                            reply_to=reply_to,
                        ),
                        routing_key,
                        mandatory=False,
                    )
                    for _ in range(min(batch, count - start))
                )
            )


async def ready_count(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far, from /proc/stat; (0, 0) elsewhere."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


async def drain_rate(
    ctx: Ctx,
    queue: str,
    count: int,
    prefetch: int,
    start: Callable[[], list[subprocess.Popen[bytes]]],
    timeout: float = 300.0,
) -> tuple[float, float]:
    """Start the consumer(s) on a queue holding `count` messages: (messages/s while draining,
    the fraction of the machine's CPU time that was busy meanwhile, every process counted).

    The window runs from the first poll that sees the backlog shrink to the first that sees it
    empty (polled every 5 ms on a separate connection); at the start the consumer has taken
    up to `prefetch` messages and at the end up to `prefetch` are still running, so
    `count - prefetch` messages finished inside the window.
    """
    connection = await connect(ctx)
    async with connection:
        channel = await connection.channel()
        assert await ready_count(channel, queue) >= count, f"{queue}: backlog missing"
        procs = start()
        give_up = time.monotonic() + timeout
        first = None
        jiffies = (0, 0)
        while True:
            ready = await ready_count(channel, queue)
            now = time.perf_counter()
            if first is None and ready < count:
                first, jiffies = now, cpu_jiffies()
            if ready == 0:
                break
            if time.monotonic() > give_up or any(p.poll() is not None for p in procs):
                raise RuntimeError(
                    f"{queue} did not drain ({ready} left); see the logs in {ctx.tmp}"
                )
            await asyncio.sleep(0.005)
        assert first is not None
        elapsed = max(now - first, 1e-6)
        busy, total = (end - begin for end, begin in zip(cpu_jiffies(), jiffies, strict=True))
        return max(1, count - prefetch) / elapsed, busy / total if total > 0 else float("nan")


async def delete_queues(ctx: Ctx, *queues: str) -> None:
    connection = await connect(ctx)
    async with connection:
        for queue in queues:
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)


async def delete_extension(ctx: Ctx, *names: str) -> None:
    await delete_queues(ctx, *(q for n in names for q in (c.events_queue(n), c.rpc_queue(n))))


async def delete_exchange(ctx: Ctx, name: str) -> None:
    connection = await connect(ctx)
    async with connection:
        channel = await connection.channel()
        with contextlib.suppress(Exception):
            await channel.exchange_delete(name)


# --- extensions and workers ---------------------------------------------------------------


def write_extension(
    registry: Path,
    name: str,
    script: str,
    *,
    hook: str = "event",
    entry: str = "run",
    enabled: bool = True,
    patterns: Sequence[str] = ("management-server.#",),
    **spec: Any,
) -> Path:
    folder = registry / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / entry
    path.write_text(script)
    path.chmod(0o755)
    body: dict[str, Any] = {"hook": hook, "entrypoint": entry, "enabled": enabled}
    if hook == "event":
        body["events"] = {"patterns": list(patterns)}
    body.update(spec)
    manifest = {
        "apiVersion": "csext/v1",
        "kind": "Extension",
        "metadata": {"name": name, "version": "1.0.0"},
        "spec": body,
    }
    (folder / "extension.yaml").write_text(yaml.safe_dump(manifest))
    return folder


def coprocess_script(template: str = NOOP_PY_COPROCESS) -> str:
    return template.format(python=PYTHON, sdk_dir=str(ROOT / "sdk"))


def worker_env(ctx: Ctx, registry: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    env.update(
        {
            "CSEXT_AMQP_URL": ctx.amqp_url,
            "CSEXT_REGISTRY": str(registry),
            "CSEXT_CLOUDSTACK_EXCHANGE": ctx.exchange,
            "CSEXT_LOG_JSON": "true",
            "CSEXT_CONFIG": str(ctx.tmp / "no-config.yaml"),
            # The worker-wide cap (default 16) must not undercut an extension's concurrency:
            # the floors run as many at once as the extension may.
            "CSEXT_CONCURRENCY": "64",
        }
    )
    env.update(extra)
    return env


def spawn(
    argv: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    stdout: int | None = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as sink:
        return subprocess.Popen(argv, env=env, stdout=stdout, stderr=sink, start_new_session=True)


def floor_argv(ctx: Ctx, mode: str, queue: str, prefetch: int, exe: Path) -> list[str]:
    """The command line of a raw floor (bench/floors.py) on `queue`."""
    return [
        *(PYTHON, "-m", "bench.floors", mode, "--url", ctx.amqp_url, "--queue", queue),
        *("--prefetch", str(prefetch), "--exe", str(exe)),
    ]


def start_worker(
    ctx: Ctx, registry: Path, *, processes: int = 1, log: Path | None = None, **extra: str
) -> subprocess.Popen[bytes]:
    log = log or ctx.tmp / "worker.log"
    argv = [CSEXT, "worker", "--processes", str(processes)]
    return spawn(argv, log, worker_env(ctx, registry, **extra))


def wait_log(
    log: Path,
    needle: str,
    count: int = 1,
    timeout: float = 60.0,
    proc: subprocess.Popen[bytes] | None = None,
    offset: int = 0,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")[offset:] if log.exists() else ""
        if text.count(needle) >= count:
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}; see {log}")
        time.sleep(0.02)
    raise RuntimeError(f"{needle!r} not seen {count}x in {log} within {timeout:g}s")


def stop(*procs: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def run_json(
    argv: list[str], log: Path, timeout: float = 300.0, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run a load generator; its last stdout line is a JSON object."""
    with open(log, "ab") as sink:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=sink, timeout=timeout, env=env)
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(argv[:5])}... failed ({done.returncode}); see {log}")
    return dict(json.loads(lines[-1]))


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def has(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


# --- machine facts ------------------------------------------------------------------------


def machine_facts(
    server_version: str, amqp_url: str = "", open_files: int | None = None
) -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, IndexError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores visible",
        "memory": mem,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "RabbitMQ": f"{server_version} at {redact_url(amqp_url)}"
        + (f", open-file limit {open_files}" if open_files else ""),
        "packages": ", ".join(f"{p} {v}" for p, v in package_versions().items()),
        "conditions": "a machine shared with other jobs gives ratios that move by up to ±0.1 "
        "between runs; read single ratios near a goal with that in mind",
    } | (
        {
            "broker": "the second node of scripts/bench-broker.sh (started by `make bench` as "
            "root): the reliability suite restarts the default node, whose open-file limit "
            "(1024 with the Debian package) cannot hold benchmark 7's 1,000 quorum queues"
        }
        if ":5673" in amqp_url
        else {}
    )


def package_versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in (
        "aio-pika",
        "aiormq",
        "orjson",
        "pydantic",
        "celery",
        "kombu",
        "faststream",
        "nameko",
        "eventlet",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def celery_worker_argv(queue: str, level: str) -> list[str]:
    """Celery's worker as the benchmarks run it: `-c 2` prefork on one queue, no gossip,
    mingle or heartbeat (peers run as real processes against the same broker)."""
    return [
        PYTHON, "-m", "celery", "-A", "bench.peers:celery_app", "worker",
        "-c", "2", "-P", "prefork", "-Q", queue,
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", level,
    ]  # fmt: skip
