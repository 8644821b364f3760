"""The worker's log around a real broker restart: lost, reconnecting, reconnected, once each.

The broker restarted is a private node of this test (tests/private_broker.py), never the shared
one. The worker is a real `csext worker` process; its JSON log is read line by line.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from private_broker import available, private_broker
from workerkit import (
    consumers_at_least,
    settings_for,
    start_worker_process,
    stop_process,
    wait_until,
    write_extension,
)

from csext.worker.amqp import names as c

ready, why = available()
pytestmark = [
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not ready, reason=why),
]

OUTAGE = 2.5


def records(log: Path) -> list[dict]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.loads(line) for line in lines if line.startswith("{")]


def messages(log: Path, start: str) -> list[dict]:
    return [r for r in records(log) if r["msg"].startswith(start)]


async def test_reconnect_is_logged_once_each_in_plain_words(tmp_path: Path) -> None:
    with private_broker() as broker:
        registry = tmp_path / "registry"
        write_extension(registry, "on-event", "#!/bin/sh\nexit 0\n")
        write_extension(registry, "on-call", "#!/bin/sh\nexit 0\n", hook="orchestrator")
        settings = settings_for(broker.url, registry, "cloudstack-events", tmp_path)
        log = tmp_path / "worker.log"
        worker = start_worker_process(settings, log=log, CSEXT_LOG_LEVEL="INFO")
        try:
            await wait_until(lambda: messages(log, "worker started"), 60, "the worker to start")
            await asyncio.to_thread(broker.stop_app)
            await wait_until(lambda: messages(log, "connection to RabbitMQ"), 30, "'lost'")
            await wait_until(lambda: messages(log, "reconnecting to RabbitMQ"), 30, "an attempt")
            await asyncio.sleep(OUTAGE)  # a few failed attempts: they must not flood the log
            await asyncio.to_thread(broker.start_app)
            await wait_until(lambda: messages(log, "reconnected"), 90, "'reconnected'")
            for queue in (c.events_queue("on-event"), c.rpc_queue("on-call")):
                assert await consumers_at_least(broker.url, queue, 1), queue
        finally:
            stop_process(worker)

    started = messages(log, "worker started")
    assert len(started) == 1 and started[0]["version"], started
    [lost] = messages(log, "connection to RabbitMQ")
    assert lost["level"] == "warning" and lost["msg"].endswith("; reconnecting"), lost
    assert "127.0.0.1" in lost["msg"] and "guest:guest" not in lost["msg"]
    assert "shutdown" in lost["msg"] or "CONNECTION_FORCED" in lost["msg"], lost
    attempts = messages(log, "reconnecting to RabbitMQ")
    numbers = [a["attempt"] for a in attempts]
    assert numbers[0] == 1 and numbers == sorted(set(numbers)), numbers
    assert all(n <= 3 or n & (n - 1) == 0 for n in numbers), numbers  # 1, 2, 3, 4, 8...
    assert "next attempt in" in attempts[0]["msg"]
    [back] = messages(log, "reconnected to RabbitMQ")
    assert back["level"] == "info" and back["restored"] == back["consumers"] == 4, back
    assert "consumers restored: 4 of 4" in back["msg"] and " attempts)" in back["msg"]
    everything = records(log)
    assert not [r for r in everything if r["logger"].startswith(("aiormq", "aio_pika"))]
    assert "Traceback" not in log.read_text()
