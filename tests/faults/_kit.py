"""Helpers shared by the fault scenarios: worker processes, bulk publishing, process scans."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from workerkit import (
    consumers_at_least as consumers_at_least,  # re-exported for the scenarios
)
from workerkit import (
    queue_messages as queue_messages,
)
from workerkit import (
    start_worker_process,
    stop_process,
    wait_until,
)

from csext.worker.amqp import names as c
from csext.worker.amqp import topology
from csext.worker.runtimes.cgroups import Cgroups
from csext.worker.settings import Settings

HERE = Path(__file__).resolve().parent


def cgroups_available() -> tuple[bool, str]:
    """Whether a worker started from this process could use per-run cgroups, and why."""
    layer, reason = Cgroups.detect("auto")
    if layer is not None:
        os.close(layer._home)
    return layer is not None, reason


def start_worker(
    settings: Settings,
    log: Path,
    *,
    processes: int = 1,
    launcher: str | None = None,
    **extra: str,
) -> subprocess.Popen[bytes]:
    """A real worker process (`python -m csext.worker worker`, or a test launcher script)."""
    script = HERE / launcher if launcher else None
    return start_worker_process(settings, processes=processes, log=log, launcher=script, **extra)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    stop_process(proc, timeout)


def children(pid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if int(fields[1]) == pid and fields[0] != b"Z":
                found.append(int(entry.name))
    return found


def processes_with_env(marker: str) -> list[int]:
    """Live processes whose environment holds `marker` (e.g. `CSEXT_EXTENSION=<name>`)."""
    wanted = marker.encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry.name}/environ").read_bytes()
            stat = Path(f"/proc/{entry.name}/stat").read_bytes()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"Z":
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


async def wait_for(predicate, timeout: float, what: str, interval: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    """`workerkit.wait_until` with the timeout first, as the scenarios read best."""
    await wait_until(predicate, timeout, what, interval)


async def publish_many(
    amqp_url: str,
    exchange: str,
    messages: Iterable[tuple[str, bytes]],
    *,
    content_type: str = "text/plain",
) -> int:
    """Publish (routing key, body) pairs persistently with confirms; the count confirmed."""
    connection = await aio_pika.connect(amqp_url)
    confirmed = 0
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        ex = await topology.declare_cloudstack_exchange(channel, exchange)
        batch = []
        for key, body in messages:
            message = aio_pika.Message(
                body, content_type=content_type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )
            batch.append(ex.publish(message, key, mandatory=False))
            if len(batch) >= 200:
                await asyncio.gather(*batch)
                confirmed += len(batch)
                batch = []
        await asyncio.gather(*batch)
        confirmed += len(batch)
    return confirmed


class DeadLetters:
    """A private tap on csext.dlx: every dead letter whose routing key matches `keys`.

    Dead letters keep their original routing key (events: the CloudStack key; RPC: the
    extension name), so a scenario that uses its own key words sees only its own letters,
    whatever other tests leave in the shared csext.dead.
    """

    def __init__(self, amqp_url: str, *keys: str) -> None:
        self._url = amqp_url
        self._keys = keys
        self.found: list[AbstractIncomingMessage] = []

    async def __aenter__(self) -> DeadLetters:
        self._connection = await aio_pika.connect(self._url)
        channel = await self._connection.channel()
        exchange = await topology.declare_dead_letters(channel)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in self._keys:
            await queue.bind(exchange, key)
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.found.append(message)

    def reasons(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for message in self.found:
            headers = message.headers or {}
            reason = headers.get(c.HEADER_REASON) or ("x-death" in headers and "delivery-limit")
            counts[str(reason)] = counts.get(str(reason), 0) + 1
        return counts

    async def __aexit__(self, *exc: object) -> None:
        await self._connection.close()


async def delete_queues(amqp_url: str, *names: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for name in names:
            for queue in (c.events_queue(name), c.rpc_queue(name)):
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    await channel.queue_delete(queue)


async def purge_dead_letters(amqp_url: str, token: str) -> int:
    """Remove from the shared csext.dead the letters whose routing key or headers name `token`.

    Scenarios dead-letter thousands of messages; left in csext.dead they would bury other
    tests' letters. Others' letters are only held (unacked) while scanning, then returned.
    """
    removed = 0
    mark = token.encode()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await topology.declare_dead_letter_queue(channel)
        for _ in range(queue.declaration_result.message_count or 0):
            message = await queue.get(no_ack=False, fail=False, timeout=5)
            if message is None:
                break
            text = f"{message.routing_key} {message.headers!r}".encode()
            if mark in text:
                await message.ack()
                removed += 1
    return removed
