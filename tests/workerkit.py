"""Helpers for tests that run real workers against real RabbitMQ."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aio_pika
import yaml
from aio_pika.abc import AbstractIncomingMessage

from csext.schemas.errors import CsextError
from csext.worker.amqp import names as c
from csext.worker.amqp import topology
from csext.worker.amqp.rpc_client import RpcClient
from csext.worker.app import Worker
from csext.worker.settings import Settings

PYTHON = "/usr/bin/python3"


def write_extension(
    registry: Path,
    name: str,
    script: str,
    *,
    hook: str = "event",
    patterns: list[str] | None = None,
    spec: dict[str, Any] | None = None,
    entry: str = "run",
) -> Path:
    """An extension folder with an executable entry point and a manifest."""
    folder = registry / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / entry
    path.write_text(script)
    path.chmod(0o755)
    manifest = {
        "apiVersion": "csext/v1",
        "kind": "Extension",
        "metadata": {"name": name, "version": "1.0.0"},
        "spec": {
            "hook": hook,
            "entrypoint": entry,
            "events": {"patterns": patterns if patterns is not None else ["management-server.#"]},
            **(spec or {}),
        },
    }
    (folder / "extension.yaml").write_text(yaml.safe_dump(manifest))
    return folder


def settings_for(amqp_url: str, registry: Path, exchange: str, tmp: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "amqp_url": amqp_url,
        "registry": registry,
        "cloudstack_exchange": exchange,
        "run_dir": tmp / "runs",
        "shutdown_grace": 10.0,
        "kill_grace": 0.5,
        "log_json": True,
    }
    values.update(extra)
    return Settings(**values)


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Worker]:
    worker = Worker(settings, handle_signals=False)
    task = asyncio.create_task(worker.run())
    started = asyncio.create_task(worker.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert started in done, "worker did not start within 30 s"
    try:
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 20.0, what: str = "", interval: float = 0.05
) -> None:
    """Poll `predicate` (plain or async) until it is true; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


async def publish_event(
    amqp_url: str, exchange: str, routing_key: str, body: bytes, content_type: str = "text/plain"
) -> None:
    """As CloudStack publishes: persistent, text/plain, on a topic exchange."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        await ex.publish(
            aio_pika.Message(
                body, content_type=content_type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            ),
            routing_key,
            mandatory=False,
        )


async def collect_dead_letters(
    amqp_url: str, extension: str, count: int, timeout: float = 30.0
) -> list[AbstractIncomingMessage]:
    """Take `count` dead letters of one extension from csext.dead (others are left alone)."""
    found: list[AbstractIncomingMessage] = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        queue = await topology.declare_dead_letter_queue(channel)

        async def on_message(message: AbstractIncomingMessage) -> None:
            if (message.headers or {}).get(c.HEADER_EXTENSION) == extension or _death_of(
                message, extension
            ):
                found.append(message)
                await message.ack()

        tag = await queue.consume(on_message)
        await wait_until(lambda: len(found) >= count, timeout, f"{count} dead letters")
        await queue.cancel(tag)
    return found


def _death_of(message: AbstractIncomingMessage, extension: str) -> bool:
    for death in (message.headers or {}).get("x-death", []) or []:
        if death.get("queue") in (c.events_queue(extension), c.rpc_queue(extension)):
            return True
    return False


async def delete_extension_queues(amqp_url: str, *names: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for name in names:
            for queue in (c.events_queue(name), c.rpc_queue(name)):
                channel = await connection.channel()
                with suppress(Exception):
                    await channel.queue_delete(queue)


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a real worker process run with `settings` (nothing else CSEXT_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    env.update(
        {
            "CSEXT_AMQP_URL": settings.amqp_url,
            "CSEXT_REGISTRY": str(settings.registry),
            "CSEXT_CLOUDSTACK_EXCHANGE": settings.cloudstack_exchange,
            "CSEXT_RUN_DIR": str(settings.run_dir),
            "CSEXT_SHUTDOWN_GRACE": str(settings.shutdown_grace),
            "CSEXT_KILL_GRACE": str(settings.kill_grace),
            "CSEXT_LOG_JSON": "true",
        }
    )
    env.update(extra)
    return env


def start_worker_process(
    settings: Settings,
    *,
    processes: int = 1,
    log: Path | None = None,
    launcher: Path | None = None,
    **extra: str,
) -> subprocess.Popen[bytes]:
    """A real `csext worker` process (or `launcher`, a test script standing in for
    `python -m csext.worker`); its log goes to `log` (default: run_dir/../worker.log)."""
    log = log or settings.run_dir.parent / "worker.log"
    main = [str(launcher)] if launcher else ["-m", "csext.cli"]
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, *main, "worker", "--processes", str(processes)],
            env=worker_env(settings, **extra),
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


async def _declared(amqp_url: str, queue: str) -> Any:
    """The broker's answer to a passive declare of `queue` (raises if it does not exist)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result


async def queue_consumers(amqp_url: str, queue: str) -> int:
    return (await _declared(amqp_url, queue)).consumer_count or 0


async def queue_messages(amqp_url: str, queue: str) -> int:
    """Messages ready in a queue (unacked ones come back when their channel closes)."""
    return (await _declared(amqp_url, queue)).message_count or 0


async def consumers_at_least(amqp_url: str, queue: str, count: int) -> bool:
    """False also while the queue does not exist (yet, or again)."""
    try:
        return await queue_consumers(amqp_url, queue) >= count
    except Exception:
        return False


async def consumers_at_most(amqp_url: str, queue: str, count: int) -> bool:
    return await queue_consumers(amqp_url, queue) <= count


async def keep_calling(
    urls: str,
    name: str,
    calls: list[tuple[float, str]],
    stopping: asyncio.Event,
    timeout: float,
) -> None:
    """Call RPC extension `name` every 0.2 s until `stopping` is set, through an outage;
    record each call's duration and outcome ("reply", a csext error's class name, or
    "unclear ..." for anything else, which the broker-outage scenarios fail on)."""
    client: RpcClient | None = None
    while not stopping.is_set():
        started = time.monotonic()
        try:
            if client is None:
                client = RpcClient(urls)
                await client.connect(timeout=timeout)
            reply = await client.call(name, "status", {}, timeout=timeout)
            outcome = "reply" if reply.exit_code == 0 else f"error reply {reply.error}"
        except CsextError as exc:
            outcome = type(exc).__name__
            client = await _drop(client)
        except Exception as exc:  # not a clear error: recorded, and the test fails on it
            outcome = f"unclear {type(exc).__name__}: {exc} {traceback.format_exc()}"
            client = await _drop(client)
        calls.append((time.monotonic() - started, outcome))
        await asyncio.sleep(0.2)
    await _drop(client)


async def _drop(client: RpcClient | None) -> None:
    if client is not None:
        with suppress(Exception):
            await asyncio.wait_for(client.close(), 5)
