"""Scenario 10: the worker's channel is killed between the run and the ack of an RPC call.

An orchestrator extension with `spec.idempotentReplies: true` signals through a file that it
runs, then blocks. The test closes the worker's consuming connection with `rabbitmqctl
close_connection` (a real broker action): RabbitMQ requeues the unacked call and, once the
worker has reconnected, redelivers it. Then the extension is let go. The call must run once;
the caller's reply queue gets one or two replies, identical (the run's own, if its channel was
still there, and the recorded one for the redelivery), and the caller's client takes the first.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aio_pika
import pytest
from workerkit import settings_for, write_extension

from csext.worker.amqp import names as c

from ._kit import consumers_at_least, delete_queues, queue_messages, start_worker, stop, wait_for
from .conftest import FULL

SCENARIO = "10 redelivered call"
pytestmark = [pytest.mark.broker, pytest.mark.timeout(300 if FULL else 120)]

# Each run says it started, waits for the test's go, then answers with its own run id: two runs
# would give two different replies.
SCRIPT = """#!/bin/sh
echo "$CSEXT_RUN_ID" >> {out}/ran
i=0
while [ ! -e {out}/go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
echo "{{\\"status\\": \\"success\\", \\"message\\": \\"started by run $CSEXT_RUN_ID\\"}}"
"""


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def vhost_of(amqp_url: str) -> str:
    return unquote(urlsplit(amqp_url).path[1:]) or "/"


def worker_connections(vhost: str) -> list[str]:
    """Pids of csext worker connections in `vhost` that consume (not its publishing one)."""
    listed = subprocess.run(
        ["rabbitmqctl", "list_connections", "-q", "pid", "vhost", "client_properties"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = []
    for line in listed.stdout.splitlines()[1:]:
        pid, conn_vhost, props = [*line.split("\t"), "", ""][:3]
        name = re.search(r'\{"connection_name","([^"]*)"\}', props)
        if conn_vhost != vhost or name is None:
            continue
        if name.group(1).startswith("csext ") and "publish" not in name.group(1):
            found.append(pid)
    return found


async def test_channel_killed_between_run_and_ack(tmp_path, amqp_url, unique, report):
    registry, out = tmp_path / "registry", tmp_path / "out"
    registry.mkdir()
    out.mkdir()
    write_extension(
        registry,
        unique,
        SCRIPT.format(out=out),
        hook="orchestrator",
        patterns=[],
        spec={"idempotentReplies": True, "timeout": 60},
    )
    settings = settings_for(amqp_url, registry, f"{unique}-ex", tmp_path)
    report.load("one `start` call; the worker's consuming connection closed mid-run")
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    connection = await aio_pika.connect(amqp_url)
    try:
        queue = c.rpc_queue(unique)
        await wait_for(lambda: consumers_at_least(amqp_url, queue, 1), 60, "consumer")
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        correlation_id = uuid.uuid4().hex
        deadline_ms = int((time.time() + 60) * 1000)
        body = json.dumps({"action": "start", "payload": {"virtual_machine": {}}}).encode()
        rpc = await channel.get_exchange(c.RPC_EXCHANGE)
        await rpc.publish(
            aio_pika.Message(
                body,
                correlation_id=correlation_id,
                reply_to=replies.name,
                headers={c.HEADER_DEADLINE: deadline_ms},
                content_type="application/json",
            ),
            routing_key=unique,
        )
        await wait_for(lambda: lines(out / "ran"), 30, "the run to start")
        pids = worker_connections(vhost_of(amqp_url))
        assert pids, "no csext worker connection found"
        for pid in pids:
            subprocess.run(
                ["rabbitmqctl", "close_connection", pid, "csext fault suite: lost channel"],
                capture_output=True,
                timeout=60,
                check=True,
            )
        await wait_for(lambda: consumers_at_least(amqp_url, queue, 1), 60, "consumer back")
        report.check(
            "consuming connection closed by rabbitmqctl while the extension ran; "
            "the worker consumed again"
        )
        (out / "go").touch()
        got: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            got.append(message)

        await replies.consume(take, no_ack=True)
        await wait_for(lambda: got, 60, "a reply")
        await wait_for(lambda: _settled(amqp_url, queue), 60, "the call acked")
        assert _redelivery_answered(log), "the worker never saw the redelivery"
        assert worker.poll() is None
        bodies = {m.body for m in got}
        assert all(m.correlation_id == correlation_id for m in got)
        assert len(lines(out / "ran")) == 1, lines(out / "ran")
        assert len(bodies) == 1 and 1 <= len(got) <= 2, [m.body for m in got]
        answer = json.loads(got[0].body)
        assert answer["exit_code"] == 0 and "started by run" in answer["stdout"], answer
        report.check(
            f"the extension ran once; the redelivered call got the recorded reply; "
            f"{len(got)} identical repl{'y' if len(got) == 1 else 'ies'} reached the reply "
            "queue (a caller takes the first by correlation id)"
        )
    finally:
        (out / "go").touch()
        await connection.close()
        stop(worker)
        await delete_queues(amqp_url, unique)


async def _settled(amqp_url: str, queue: str) -> bool:
    """Nothing ready, and nothing unacked: an unacked call comes back when its channel closes,
    so a passive declare (ready only) is checked twice, a moment apart."""
    if await queue_messages(amqp_url, queue):
        return False
    await asyncio.sleep(0.2)
    return await queue_messages(amqp_url, queue) == 0


def _redelivery_answered(log: Path) -> bool:
    return "answered with its recorded reply" in log.read_text(errors="replace")
