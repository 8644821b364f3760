"""The RPC path end to end: replies, errors, deadlines, caps."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aio_pika
import orjson
import pytest
from workerkit import (
    delete_extension_queues,
    running_worker,
    settings_for,
    start_worker_process,
    stop_process,
    write_extension,
)

from csext.schemas.errors import CallTimeout
from csext.worker.amqp import names as c
from csext.worker.amqp import topology
from csext.worker.amqp.rpc_client import RpcClient

pytestmark = pytest.mark.broker

ECHO = """#!/bin/sh
echo "action=$1 timeout=$3"
cat "$2"
echo "note" >&2
exit 7
"""


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry"
    path.mkdir()
    return path


@pytest.fixture
def settings(amqp_url, registry, unique, tmp_path):
    return settings_for(amqp_url, registry, f"{unique}-rpc", tmp_path)


async def test_reply_carries_output_exit_code_and_correlation_id(
    settings, registry, unique, amqp_url
):
    write_extension(registry, unique, ECHO, hook="orchestrator", patterns=[], spec={"timeout": 30})
    try:
        async with running_worker(settings):
            connection = await aio_pika.connect(amqp_url)
            async with connection:
                reply = await _raw_call(
                    connection, unique, {"action": "status", "payload": {"a": 1}}
                )
        message, body = reply
        assert message.correlation_id == "corr-123"
        assert body["exit_code"] == 7
        assert body["stdout"].startswith("action=status timeout=")
        assert '"a"' in body["stdout"]
        assert body["stderr"] == "note\n"
        assert body["truncated"] == {"stdout": False, "stderr": False}
        assert "duration_ms" in body and "error" in body
    finally:
        await delete_extension_queues(amqp_url, unique)


async def test_works_with_an_ordinary_reply_queue(settings, registry, unique, amqp_url):
    write_extension(registry, unique, "#!/bin/sh\necho ok\n", hook="orchestrator", patterns=[])
    try:
        async with running_worker(settings):
            connection = await aio_pika.connect(amqp_url)
            async with connection:
                channel = await connection.channel()
                replies = await channel.declare_queue(exclusive=True)
                exchange = await topology.declare_rpc_exchange(channel)
                await exchange.publish(
                    aio_pika.Message(
                        b'{"action":"start","payload":{}}',
                        reply_to=replies.name,
                        correlation_id="c2",
                    ),
                    unique,
                )
                reply = await _get(replies)
        assert reply.correlation_id == "c2"
        assert orjson.loads(reply.body)["stdout"] == "ok\n"
    finally:
        await delete_extension_queues(amqp_url, unique)


async def test_unknown_extension_is_answered_at_once(settings, amqp_url, unique):
    async with running_worker(settings), RpcClient(amqp_url) as client:
        started = time.monotonic()
        reply = await client.call(f"{unique}-missing", "start", {}, timeout=10)
        elapsed = time.monotonic() - started
    assert reply.error is not None and reply.error.kind == "unknown-extension"
    assert unique in reply.error.message
    assert elapsed < 5, "an unknown extension must be answered, not time out"


async def test_disabled_and_broken_extensions_are_explained(settings, registry, unique, amqp_url):
    write_extension(
        registry,
        f"{unique}d",
        "#!/bin/sh\n",
        hook="orchestrator",
        patterns=[],
        spec={"enabled": False},
    )
    broken = registry / f"{unique}b"
    broken.mkdir()
    (broken / "extension.yaml").write_text(
        "metadata: {name: " + f"{unique}b" + "}\nspec: {hook: nope}\n"
    )
    async with running_worker(settings), RpcClient(amqp_url) as client:
        disabled = await client.call(f"{unique}d", "start", {}, timeout=10)
        bad = await client.call(f"{unique}b", "start", {}, timeout=10)
    assert disabled.error.kind == "disabled"
    assert bad.error.kind == "invalid-manifest"
    assert "spec" in bad.error.message and "extension.yaml" in bad.error.message


async def test_bad_request_body_gets_a_clear_error(settings, registry, unique, amqp_url):
    write_extension(registry, unique, "#!/bin/sh\necho ran\n", hook="orchestrator", patterns=[])
    try:
        async with running_worker(settings):
            connection = await aio_pika.connect(amqp_url)
            async with connection:
                _, body = await _raw_call(connection, unique, None, raw=b"{not json")
        assert body["error"]["kind"] == "bad-request"
        assert "action" in body["error"]["message"]
    finally:
        await delete_extension_queues(amqp_url, unique)


async def test_expired_request_is_not_run(settings, registry, unique, amqp_url, tmp_path):
    log = tmp_path / "actions"
    write_extension(
        registry, unique, f"#!/bin/sh\necho $1 >> {log}\n", hook="orchestrator", patterns=[]
    )
    try:
        async with running_worker(settings):
            connection = await aio_pika.connect(amqp_url)
            async with connection:
                channel = await connection.channel()
                replies = await channel.declare_queue(exclusive=True)
                exchange = await topology.declare_rpc_exchange(channel)
                past = int((time.time() - 5) * 1000)
                await exchange.publish(
                    aio_pika.Message(
                        b'{"action":"expired"}',
                        reply_to=replies.name,
                        headers={c.HEADER_DEADLINE: past},
                        correlation_id="late",
                    ),
                    unique,
                )
                # A later call on the same queue is answered: the late one was consumed unrun.
                async with RpcClient(amqp_url) as client:
                    reply = await client.call(unique, "fresh", {}, timeout=10)
                late = await replies.get(fail=False)
        assert reply.exit_code == 0
        assert log.read_text() == "fresh\n"
        assert late is None, "nobody waits for an expired call: no reply"
    finally:
        await delete_extension_queues(amqp_url, unique)


async def test_timeout_is_cut_to_the_callers_deadline(settings, registry, unique, amqp_url):
    write_extension(
        registry,
        unique,
        '#!/bin/sh\necho "$3"\nexec sleep 30\n',
        hook="orchestrator",
        patterns=[],
        spec={"timeout": 600},
    )
    try:
        async with running_worker(settings), RpcClient(amqp_url) as client:
            started = time.monotonic()
            reply = await client.call(unique, "start", {}, timeout=4)
            elapsed = time.monotonic() - started
        assert reply.error is not None and reply.error.kind == "timeout"
        assert int(reply.stdout.strip()) <= 4, "argv[3] is the time left, not the manifest's 600"
        assert elapsed < 4
    finally:
        await delete_extension_queues(amqp_url, unique)


async def test_no_worker_means_a_clear_timeout(amqp_url, unique):
    async with RpcClient(amqp_url) as client:
        # No queue is bound and no worker consumes the unrouted queue's copy in time? A worker of
        # another test may; use a name no worker knows and rely on either outcome being prompt.
        try:
            reply = await client.call(f"{unique}-nobody", "start", {}, timeout=1.5)
        except CallTimeout as exc:
            assert "no reply" in str(exc)
        else:
            assert reply.error is not None


async def test_huge_stdout_is_capped_and_worker_memory_stays_bounded(
    settings, registry, unique, amqp_url
):
    write_extension(
        registry,
        unique,
        "#!/bin/sh\nhead -c 100000000 /dev/zero\necho done >&2\n",
        hook="orchestrator",
        patterns=[],
        spec={"timeout": 60},
    )
    proc = start_worker_process(settings)
    try:
        async with RpcClient(amqp_url) as client:
            await _wait_consumer(amqp_url, c.rpc_queue(unique))
            reply = await client.call(unique, "start", {}, timeout=60)
        assert reply.truncated.stdout is True
        assert len(reply.stdout) == settings.output_cap
        assert reply.stderr == "done\n"
        peak_kb = _peak_rss_kb(proc.pid)
        assert peak_kb < 250_000, f"worker peak RSS {peak_kb} kB after 100 MB of output"
    finally:
        stop_process(proc)
        await delete_extension_queues(amqp_url, unique)


async def _wait_consumer(amqp_url: str, queue: str) -> None:
    from workerkit import queue_consumers

    async def count() -> int:
        try:
            return await queue_consumers(amqp_url, queue)
        except Exception:
            return 0

    deadline = time.monotonic() + 30
    while await count() < 1:
        assert time.monotonic() < deadline, f"no consumer on {queue}"
        await asyncio.sleep(0.1)


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


async def _get(queue, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            return message
        assert time.monotonic() < deadline, "no reply"
        await asyncio.sleep(0.05)


async def _raw_call(connection, name, request, raw: bytes | None = None):
    channel = await connection.channel()
    replies = await channel.get_queue(c.DIRECT_REPLY_TO, ensure=False)
    future = asyncio.get_running_loop().create_future()

    async def on_reply(message):
        if not future.done():
            future.set_result(message)

    await replies.consume(on_reply, no_ack=True)
    exchange = await topology.declare_rpc_exchange(channel)
    body = raw if raw is not None else orjson.dumps(request)
    await exchange.publish(
        aio_pika.Message(
            body,
            reply_to=c.DIRECT_REPLY_TO,
            correlation_id="corr-123",
            headers={c.HEADER_DEADLINE: int((time.time() + 20) * 1000)},
        ),
        name,
    )
    message = await asyncio.wait_for(future, 20)
    return message, orjson.loads(message.body)
