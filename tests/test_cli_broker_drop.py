"""`csext runs` and `csext dead list` when the broker connection drops mid-read.

A TCP proxy of the test's own stands between the CLI and the (shared) broker and cuts the
connection the moment the CLI starts consuming (its first Basic.Consume frame), which is what a
broker restart does to a command that is reading: a clear error and exit 69, no traceback.
"""

from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest

from csext.worker.amqp import names as c
from csext.worker.amqp import topology
from csext.worker.settings import Settings

pytestmark = pytest.mark.broker

BASIC_CONSUME = b"\x00\x3c\x00\x14"
"""class 60 (basic), method 20 (consume): the start of a Basic.Consume method frame payload."""


class CuttingProxy:
    """Forwards to the broker; closes both sides once the client sends Basic.Consume."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.cuts = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        broker_r, broker_w = await asyncio.open_connection(*self.target)
        cut = asyncio.Event()

        async def pipe(reader, writer, watch: bool) -> None:
            try:
                while not cut.is_set() and (data := await reader.read(65536)):
                    writer.write(data)
                    await writer.drain()
                    if watch and BASIC_CONSUME in data:
                        await asyncio.sleep(0.05)  # let the broker start delivering
                        self.cuts += 1
                        cut.set()
            except (ConnectionError, OSError):
                pass
            finally:
                cut.set()

        tasks = [
            asyncio.create_task(pipe(client_r, broker_w, True)),
            asyncio.create_task(pipe(broker_r, client_w, False)),
        ]
        await cut.wait()
        for writer in (client_w, broker_w):
            writer.transport.abort()
        await asyncio.gather(*tasks, return_exceptions=True)


async def csext(*args: str, amqp_url: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    env["CSEXT_AMQP_URL"] = amqp_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "csext.cli", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, stderr.decode()


async def test_a_dropped_connection_is_a_clear_error_not_a_traceback(
    amqp_url: str, unique: str
) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:  # the stream and the dead-letter queue exist, as on a real broker
        channel = await connection.channel()
        await topology.declare_base(channel, Settings(amqp_url=amqp_url))
        dead = aio_pika.Message(b"{}", message_id=unique, headers={"x-csext-reason": "test"})
        await channel.default_exchange.publish(dead, c.DEAD_LETTER_QUEUE)  # one to list
    parts = urlsplit(amqp_url)
    proxy = CuttingProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    port = await proxy.start()
    via_proxy = urlunsplit(parts._replace(netloc=f"guest:guest@127.0.0.1:{port}"))
    try:
        for command in (["runs", "--since", "7d"], ["dead", "list"]):
            code, stderr = await csext(*command, amqp_url=via_proxy)
            assert code == 69, (command, stderr)
            assert stderr.startswith("csext: error: lost the connection to RabbitMQ"), stderr
            assert "\n  fix: check that RabbitMQ is up" in stderr
            assert "Traceback" not in stderr and "guest:guest" not in stderr
        assert proxy.cuts == 2  # each command was cut while it was reading
    finally:
        await proxy.close()
        await remove_dead_letter(amqp_url, unique)


async def remove_dead_letter(amqp_url: str, message_id: str) -> None:
    """Take this test's message out of csext.dead again (the others stay, in order)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(c.DEAD_LETTER_QUEUE)
        held = []
        while (message := await queue.get(fail=False)) is not None:
            if message.message_id == message_id:
                await message.ack()
                break
            held.append(message)
        for message in held:
            await message.nack(requeue=True)
