"""Scenario 1: worker processes killed with SIGKILL mid-run, under load.

A 2-process worker pool (the supervisor restarts what dies) works through a backlog of events
while one worker process is SIGKILLed several times. Every event's extension must have run to
the end at least once; events run twice are bounded by what was in flight at the kills; the
queue ends empty; dead letters are exactly the events designed to fail; and nothing the killed
workers were running is left alive (the restarted worker's start-up cleanup kills it).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import orjson
import pytest
from workerkit import settings_for, write_extension

from csext.worker.amqp import names as c
from csext.worker.runtimes.environment import event_key

from ._kit import (
    DeadLetters,
    children,
    consumers_at_least,
    delete_queues,
    processes_with_env,
    publish_many,
    queue_messages,
    start_worker,
    stop,
    wait_for,
)
from .conftest import FULL, size

SCENARIO = "1 worker killed"
pytestmark = [pytest.mark.broker, pytest.mark.timeout(900 if FULL else 150)]

CONCURRENCY = 4
KILLS = 3
FAIL_EVERY = 50

# Records start and end; sleeps a little so kills land mid-run; events with "fail" exit 3
# (a permanent failure: no retries, dead-lettered once).
SCRIPT = """#!/bin/sh
echo "$CSEXT_EVENT_KEY" >> {out}/started
sleep 0.02
if grep -q '"fail":true' "$2"; then exit 3; fi
echo "$CSEXT_EVENT_KEY" >> {out}/done
"""


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_kill_9_workers_mid_run(tmp_path, amqp_url, unique, report):
    events = size(300, 5000)
    registry, out = tmp_path / "registry", tmp_path / "out"
    registry.mkdir()
    out.mkdir()
    pattern = f"management-server.ActionEvent.VM-START.{unique}.*"
    spec = {"concurrency": CONCURRENCY, "timeout": 30, "retry": {"attempts": 1}}
    write_extension(registry, unique, SCRIPT.format(out=out), patterns=[pattern], spec=spec)
    settings = settings_for(amqp_url, registry, f"{unique}-ex", tmp_path)
    keyed = [
        (
            f"management-server.ActionEvent.VM-START.{unique}.vm-{i}",
            orjson.dumps({"id": i, "fail": i % FAIL_EVERY == 0}),
        )
        for i in range(events)
    ]
    keys = {event_key(key, body): body for key, body in keyed}
    failing = {k for k, body in keys.items() if b'"fail":true' in body}
    report.load(
        f"{events} events, 2 worker processes x {CONCURRENCY} concurrent runs, {KILLS} x kill -9"
    )
    pool = start_worker(settings, tmp_path / "worker.log", processes=2)
    try:
        async with DeadLetters(amqp_url, f"*.*.*.{unique}.*") as dead:
            queue = c.events_queue(unique)
            await wait_for(lambda: consumers_at_least(amqp_url, queue, 2), 60, "2 consumers")
            assert await publish_many(amqp_url, settings.cloudstack_exchange, keyed) == events
            killed = await _kill_during_run(pool.pid, out, events)
            await wait_for(
                lambda: set(lines(out / "done")) | failing >= set(keys), 600, "every event done"
            )
            await wait_for(
                lambda: len({_key(m) for m in dead.found}) >= len(failing),
                60,
                "dead letters of the failing events",
            )
            stop(pool)
            done = Counter(lines(out / "done"))
            started = Counter(lines(out / "started"))
            assert set(done) == set(keys) - failing
            report.check(
                f"all {events - len(failing)} succeeding events ran to the end at least once"
            )
            duplicates = sum(n - 1 for n in started.values())
            assert duplicates <= killed * CONCURRENCY, (duplicates, killed)
            report.check(
                f"{duplicates} re-runs after {killed} kills "
                f"(bound: kills x in flight = {killed * CONCURRENCY})"
            )
            assert await queue_messages(amqp_url, queue) == 0
            letters = Counter(_key(m) for m in dead.found)
            assert set(letters) == failing
            assert set(dead.reasons()) <= {"extension-failed", "retries-exhausted"}, dead.reasons()
            report.check(
                f"queue empty; dead letters = exactly the {len(failing)} failing events "
                f"({sum(letters.values())} letters incl. duplicates)"
            )
            left = processes_with_env(f"CSEXT_EXTENSION={unique}")
            assert not left, f"extension processes left running: {left}"
            report.check("no extension process left alive")
    finally:
        stop(pool)
        await delete_queues(amqp_url, unique)


def _key(message) -> str:
    return event_key(message.headers[c.HEADER_ORIGINAL_ROUTING_KEY], message.body)


async def _kill_during_run(supervisor: int, out: Path, events: int) -> int:
    """SIGKILL one worker process at 20 %, 45 % and 70 % of the work; the kill count."""
    killed = 0
    for step in range(KILLS):
        target = events * (20 + 25 * step) // 100
        await wait_for(lambda t=target: len(lines(out / "started")) >= t, 300, f"{target} runs")
        workers = children(supervisor)
        busy = [pid for pid in workers if children(pid)] or workers
        if not busy:
            continue
        os.kill(busy[0], signal.SIGKILL)
        killed += 1
        await wait_for(lambda: len(children(supervisor)) >= 2, 60, "the pool restarted a worker")
        await asyncio.sleep(0)
    return killed
