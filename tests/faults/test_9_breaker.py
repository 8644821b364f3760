"""Scenario 9: a flapping extension behind a circuit breaker (`spec.circuitBreaker`).

RPC: a two-factor extension whose backend hangs (every run times out) on a 2-process worker.
Each process's breaker opens after `failures` timeouts; from then on calls are answered at once
with the hook's failure policy (fail-closed: not passed, error `circuit-open`) without running
the extension, `csext show` says where it is open and `csext runs` has `circuit-open` records.
When the backend is back, one trial call per process closes the breakers again.

Events: an event extension whose backend fails. The breaker opens during the first event's
retries; the events are then held in the queue (not run, not dead-lettered, no requeue loop:
at most one trial run per cooldown) and all run once the backend is back.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from workerkit import settings_for, write_extension

from csext.worker.amqp import names as c
from csext.worker.amqp.rpc_client import RpcClient
from csext.worker.runtimes.environment import event_key

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
from .conftest import FULL, size

SCENARIO = "9 circuit breaker"
pytestmark = [pytest.mark.broker, pytest.mark.timeout(600 if FULL else 180)]

PROCESSES = 2
FAILURES = 3
COOLDOWN = 10.0
TIMEOUT = 0.5

TWO_FACTOR = """#!/bin/sh
echo run >> {out}/runs
if [ -e {out}/down ]; then sleep 5; fi
echo '{{"passed": true}}'
"""

EVENT = """#!/bin/sh
echo "$CSEXT_EVENT_KEY" >> {out}/runs
[ -e {out}/down ] && exit 1
echo "$CSEXT_EVENT_KEY" >> {out}/done
"""

CHECK = {"code": "123456", "user_account": {"username": "alice"}}


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def cli(*args: str) -> str:
    """The real CLI a user types; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "csext.cli", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


async def test_flapping_rpc_extension(tmp_path, amqp_url, unique, report):
    registry, out = tmp_path / "registry", tmp_path / "out"
    registry.mkdir()
    out.mkdir()
    breaker = {"failures": FAILURES, "window": "30s", "cooldown": f"{COOLDOWN:g}s"}
    write_extension(
        registry,
        unique,
        TWO_FACTOR.format(out=out),
        hook="two-factor",
        patterns=[],
        spec={"timeout": TIMEOUT, "circuitBreaker": breaker},
    )
    settings = settings_for(amqp_url, registry, f"{unique}-ex", tmp_path)
    runs = out / "runs"
    report.load(
        f"{PROCESSES} worker processes, a two-factor extension that times out "
        f"({TIMEOUT:g} s) while down; breaker {FAILURES} failures / 30 s, cooldown {COOLDOWN:g} s"
    )
    worker = start_worker(settings, tmp_path / "worker.log", processes=PROCESSES)
    client = RpcClient(amqp_url)
    try:
        await wait_for(
            lambda: consumers_at_least(amqp_url, c.rpc_queue(unique), PROCESSES), 60, "consumers"
        )
        await client.connect(timeout=10)
        (out / "down").touch()
        ran, refused = await _call_until_refused(client, unique, runs)
        assert len(lines(runs)) <= PROCESSES * FAILURES, lines(runs)
        report.check(
            f"every process's breaker opened after at most {FAILURES} timeouts: "
            f"{len(lines(runs))} runs in all with {PROCESSES} processes (bound "
            f"{PROCESSES} x {FAILURES}, the cost of per-process breakers)"
        )
        before = len(lines(runs))
        answers = []
        for _ in range(size(8, 40)):
            started = time.monotonic()
            reply = await client.call(unique, "check", CHECK, timeout=10)
            answers.append(time.monotonic() - started)
            assert reply.error is not None and reply.error.kind == "circuit-open", reply
            assert reply.result == {**reply.result, "passed": False, "fallback": "circuit-open"}
        assert len(lines(runs)) == before
        report.check(
            f"{len(answers)} calls while open: none ran, each answered with the fail-closed "
            f"policy (passed false, error circuit-open); median "
            f"{statistics.median(answers) * 1000:.0f} ms vs {statistics.median(ran) * 1000:.0f} "
            "ms for a call that ran into the timeout"
        )
        show = cli("show", unique, "--registry", str(registry), "--amqp-url", amqp_url)
        assert "circuit breaker: open on" in show, show
        recorded = orjson.loads(cli("runs", unique, "--json", "--amqp-url", amqp_url))
        assert any(r["outcome"] == "circuit-open" for r in recorded), recorded
        report.check("`csext show` says where it is open; `csext runs` has circuit-open records")
        (out / "down").unlink()
        opened_at = time.monotonic()
        await wait_for(lambda: _passes(client, unique, 2 * PROCESSES), 120, "breakers closed")
        report.check(
            f"backend back: one trial call per process closed the breakers; calls pass again "
            f"{time.monotonic() - opened_at:.0f} s later (cooldown {COOLDOWN:g} s)"
        )
        show = cli("show", unique, "--registry", str(registry), "--amqp-url", amqp_url)
        assert "circuit breaker: closed" in show, show
        report.check("`csext show` says closed again")
        assert refused >= 1
    finally:
        await client.close()
        stop(worker)
        await delete_queues(amqp_url, unique)


async def _call_until_refused(client: RpcClient, name: str, runs: Path) -> tuple[list[float], int]:
    """Call until 2 x PROCESSES answers in a row say circuit-open; the durations of the calls
    that ran, and how many were refused on the way."""
    ran: list[float] = []
    refused = streak = 0
    for _ in range(10 * PROCESSES * FAILURES):
        started = time.monotonic()
        reply = await client.call(name, "check", CHECK, timeout=10)
        if reply.error is not None and reply.error.kind == "circuit-open":
            refused += 1
            streak += 1
            if streak >= 2 * PROCESSES:
                return ran, refused
        else:
            assert reply.error is not None and reply.error.kind == "timeout", reply
            assert reply.result and reply.result["passed"] is False  # fail-closed
            ran.append(time.monotonic() - started)
            streak = 0
    raise AssertionError(f"the breakers did not open: {len(lines(runs))} runs")


async def _passes(client: RpcClient, name: str, count: int) -> bool:
    for _ in range(count):
        reply = await client.call(name, "check", CHECK, timeout=10)
        if reply.error is not None or not (reply.result or {}).get("passed"):
            await asyncio.sleep(0.5)
            return False
    return True


async def test_events_wait_while_open(tmp_path, amqp_url, unique, report):
    events = size(12, 200)
    registry, out = tmp_path / "registry", tmp_path / "out"
    registry.mkdir()
    out.mkdir()
    pattern = f"management-server.ActionEvent.VM-START.{unique}.*"
    spec = {
        "concurrency": 1,
        "circuitBreaker": {"failures": FAILURES, "window": "30s", "cooldown": "3s"},
        "retry": {"attempts": 10, "backoff": {"initial": 0.05, "max": 0.2, "jitter": 0}},
    }
    write_extension(registry, unique, EVENT.format(out=out), patterns=[pattern], spec=spec)
    settings = settings_for(amqp_url, registry, f"{unique}-ex", tmp_path)
    keyed = [
        (f"management-server.ActionEvent.VM-START.{unique}.vm-{i}", orjson.dumps({"id": i}))
        for i in range(events)
    ]
    keys = {event_key(key, body) for key, body in keyed}
    report.load(f"{events} events to an event extension whose backend fails, then recovers")
    (out / "down").touch()
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        queue = c.events_queue(unique)
        await wait_for(lambda: consumers_at_least(amqp_url, queue, 1), 60, "consumer")
        async with DeadLetters(
            amqp_url, f"management-server.ActionEvent.VM-START.{unique}.#"
        ) as dl:
            assert await publish_many(amqp_url, settings.cloudstack_exchange, keyed) == events
            await wait_for(lambda: len(lines(out / "runs")) >= FAILURES, 60, "failing runs")
            held_since = time.monotonic()
            await wait_for(
                lambda: _is_open(amqp_url, unique), 30, "a circuit-open record in the runs log"
            )
            ready = await queue_messages(amqp_url, queue)
            assert ready >= events - 1, ready
            report.check(
                f"breaker opened during the first event's retries; {ready} of {events} events "
                "wait in the queue (the held one is unacked in the worker)"
            )
            await wait_for(lambda: len(lines(out / "runs")) >= FAILURES + 2, 30, "two trials")
            held = time.monotonic() - held_since
            runs_while_open = len(lines(out / "runs")) - FAILURES
            assert runs_while_open <= held / 3 + 2, (runs_while_open, held)
            assert not dl.found, dl.reasons()
            report.check(
                f"while open: {runs_while_open} trial runs in {held:.0f} s (one per 3 s "
                "cooldown, no requeue loop), 0 dead letters"
            )
            (out / "down").unlink()
            await wait_for(lambda: set(lines(out / "done")) >= keys, 120, "every event done")
            await wait_for(lambda: _drained(amqp_url, queue), 30, "queue empty")
            assert not dl.found, dl.reasons()
            report.check(f"backend back: all {events} events ran, 0 dead-lettered, queue empty")
    finally:
        stop(worker)
        await delete_queues(amqp_url, unique)


async def _is_open(amqp_url: str, name: str) -> bool:
    from csext.worker.amqp.runlog import recent_runs

    records = await recent_runs(amqp_url, name, limit=50, since=600, timeout=5)
    return any(r["outcome"] == "circuit-open" for r in records)


async def _drained(amqp_url: str, queue: str) -> bool:
    return await queue_messages(amqp_url, queue) == 0
