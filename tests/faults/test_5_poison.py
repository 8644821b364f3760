"""Scenario 5: a poison message, one that crashes the handler path every time it is handled.

The crash is injected by tests/faults/poison_worker.py (a real worker process with a patched
event path): an exception that requeues the delivery, and, at full size, a hard process exit.
The quorum queue's delivery limit must dead-letter it (broker `x-death`, reason
`delivery_limit`) after a bounded number of attempts instead of looping forever, while the
good events around it are processed.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from workerkit import settings_for, write_extension

from csext.worker.amqp import names as c

from ._kit import (
    DeadLetters,
    consumers_at_least,
    delete_queues,
    publish_many,
    queue_messages,
    start_worker,
    stop,
    wait_for,
)
from .conftest import FULL

SCENARIO = "5 poison message"
pytestmark = [pytest.mark.timeout(300 if FULL else 90)]

LIMIT = 3
SCRIPT = """#!/bin/sh
echo "$CSEXT_EVENT_KEY" >> {out}/done
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.mark.parametrize("crash", ["raise", "exit"])
async def test_poison_message_ends_in_the_dlq(tmp_path, amqp_url, unique, crash, report):
    registry, out = tmp_path / "registry", tmp_path / "out"
    registry.mkdir()
    out.mkdir()
    pattern = f"management-server.ActionEvent.VM-START.{unique}.*"
    # A worker crash returns *every* delivery it held, and each return counts against the
    # delivery limit: with one run at a time only the poison itself is in flight at each crash.
    spec = {"concurrency": 1 if crash == "exit" else 4}
    write_extension(registry, unique, SCRIPT.format(out=out), patterns=[pattern], spec=spec)
    settings = settings_for(amqp_url, registry, f"{unique}-ex", tmp_path)
    env = {"CSEXT_DELIVERY_LIMIT": str(LIMIT)}
    log = tmp_path / "worker.log"
    report.load(f"1 poison event ({crash}) among 20 good ones, delivery limit {LIMIT}")
    worker = start_worker(settings, log, launcher="poison_worker.py", **env)
    starts = 1
    try:
        queue = c.events_queue(unique)
        await wait_for(lambda: consumers_at_least(amqp_url, queue, 1), 60, "consumer")
        key = f"management-server.ActionEvent.VM-START.{unique}.vm"
        good = [(f"{key}-{i}", orjson.dumps({"id": i})) for i in range(20)]
        poison = (f"{key}-poison", orjson.dumps({"poison": crash}))
        async with DeadLetters(amqp_url, f"*.*.*.{unique}.*") as dead:
            await publish_many(
                amqp_url, settings.cloudstack_exchange, [*good[:10], poison, *good[10:]]
            )
            while not dead.found:
                if worker.poll() is not None:  # the poison killed it: restart, as a pool would
                    worker = start_worker(settings, log, launcher="poison_worker.py", **env)
                    starts += 1
                    assert starts <= LIMIT + 3, "the poison message keeps coming back"
                await wait_for(_dead_or_exited(dead, worker), 60, "DLQ or exit")
            if worker.poll() is not None:
                worker = start_worker(settings, log, launcher="poison_worker.py", **env)
                starts += 1
            await wait_for(lambda: len(set(_lines(out / "done"))) >= 20, 60, "good events done")
            letter = dead.found[0]
            assert letter.body == poison[1], "the dead letter keeps the body byte for byte"
            deaths = letter.headers.get("x-death") or []
            assert deaths and deaths[0]["reason"] == "delivery_limit", letter.headers
            report.check(
                f"dead-lettered by the queue's delivery limit (x-death reason "
                f"delivery_limit) once {LIMIT} redeliveries were used up; body byte for byte"
            )
            assert len(dead.found) == 1
            assert await queue_messages(amqp_url, queue) == 0 or worker.poll() is not None
            report.check(
                "all 20 good events processed; nothing else dead-lettered; "
                "the queue drained" + (f"; {starts} worker starts" if crash == "exit" else "")
            )
    finally:
        stop(worker)
        await delete_queues(amqp_url, unique)


def _dead_or_exited(dead: DeadLetters, worker):  # type: ignore[no-untyped-def]
    return lambda: bool(dead.found) or worker.poll() is not None
