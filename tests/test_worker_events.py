"""The event path end to end: real RabbitMQ, a real worker, real extension processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from workerkit import (
    PYTHON,
    collect_dead_letters,
    delete_extension_queues,
    publish_event,
    queue_consumers,
    queue_messages,
    running_worker,
    settings_for,
    wait_until,
    write_extension,
)

from csext.schemas.event import build_routing_key
from csext.worker.amqp import names as c

pytestmark = pytest.mark.broker

RECORDER = f"""#!{PYTHON}
import json, os, sys
out = os.environ["OUT"]
payload = sys.argv[2]
record = {{
    "argv": sys.argv[1:],
    "payload": json.load(open(payload)),
    "payload_mode": oct(os.stat(payload).st_mode & 0o777),
    "dir_mode": oct(os.stat(os.path.dirname(payload)).st_mode & 0o777),
    "env": dict(os.environ),
    "stdin": sys.stdin.read(),
}}
with open(os.path.join(out, os.environ["CSEXT_RUN_ID"] + ".json"), "w") as f:
    json.dump(record, f)
"""

STATE_BODY = {
    "resource": "VirtualMachine",
    "id": "2b7a768a-3bc2-4c3c-ae05-2b3480b53478",
    "old-state": "Starting",
    "new-state": "Running",
    "status": "postStateTransitionEvent",
    "eventDateTime": "2026-01-15 10:22:31 +0000",
}


@pytest.fixture
def env(tmp_path: Path, amqp_url: str, unique: str):
    registry = tmp_path / "registry"
    registry.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    settings = settings_for(amqp_url, registry, f"{unique}-events", tmp_path)
    return registry, out, settings


async def test_event_runs_extension_under_cloudstack_contract(env, unique, amqp_url, monkeypatch):
    registry, out, settings = env
    monkeypatch.setenv("CSEXT_TEST_SENTINEL", "must-not-leak")
    write_extension(
        registry,
        unique,
        RECORDER,
        patterns=["management-server.ResourceStateEvent.#"],
        spec={"env": {"OUT": str(out)}, "timeout": 20},
    )
    key = build_routing_key(
        "ResourceStateEvent", "OperationSucceeded", "VirtualMachine", STATE_BODY["id"]
    )
    try:
        async with running_worker(settings) as worker:
            await publish_event(
                amqp_url, settings.cloudstack_exchange, key, json.dumps(STATE_BODY).encode()
            )
            await wait_until(lambda: len(list(out.iterdir())) == 1, what="one run")
            await wait_until(lambda: worker.runner.running == 0 and not _busy(worker))
        record = json.loads(next(out.iterdir()).read_text())
        action, payload_file, timeout = record["argv"]
        assert action == "ResourceStateEvent"
        assert timeout == "20"
        assert record["payload_mode"] == "0o600" and record["dir_mode"] == "0o700"
        assert not os.path.exists(payload_file), "payload file must be removed after the run"
        assert record["payload"]["routing_key"] == key
        assert record["payload"]["body"]["old-state"] == "Starting"
        assert record["stdin"] == ""
        child_env = record["env"]
        assert "CSEXT_TEST_SENTINEL" not in child_env
        assert not any(v == settings.amqp_url for v in child_env.values())
        assert child_env["CSEXT_EXTENSION"] == unique
        assert child_env["CSEXT_HOOK"] == "event"
        assert child_env["CSEXT_ATTEMPT"] == "1"
        assert child_env["CSEXT_EVENT_KEY"]
        assert set(child_env) <= {"PATH", "LANG", "OUT"} | {
            k for k in child_env if k.startswith("CSEXT_")
        }
        # Acked: nothing left in the queue, even after the worker's channel closed.
        assert await queue_messages(amqp_url, c.events_queue(unique)) == 0
    finally:
        await delete_extension_queues(amqp_url, unique)


async def test_failing_extension_is_retried_then_dead_lettered(env, unique, amqp_url):
    registry, out, settings = env
    script = f"#!/bin/sh\necho run >> {out}/runs\necho 'disk on fire' >&2\nexit 3\n"
    write_extension(
        registry,
        unique,
        script,
        spec={
            "retry": {
                "attempts": 3,
                "retryableExitCodes": [3],
                "backoff": {"initial": 0.05, "max": 0.1, "jitter": 0},
            }
        },
    )
    body = b'{"resource":"VirtualMachine","id":"x","new-state":"Running"}'
    key = build_routing_key("ResourceStateEvent", "OperationSucceeded", "VirtualMachine", "x")
    try:
        async with running_worker(settings):
            await publish_event(amqp_url, settings.cloudstack_exchange, key, body)
            [dead] = await collect_dead_letters(amqp_url, unique, 1)
        assert (out / "runs").read_text().count("run") == 3
        assert dead.body == body, "dead letter keeps the body byte for byte"
        headers = dead.headers
        assert headers[c.HEADER_REASON] == "retries-exhausted"
        assert headers[c.HEADER_ATTEMPTS] == 3
        assert headers[c.HEADER_EXIT_CODE] == 3
        assert "disk on fire" in headers[c.HEADER_STDERR_TAIL]
        assert headers[c.HEADER_ORIGINAL_ROUTING_KEY] == key
        assert dead.content_type == "text/plain"
    finally:
        await delete_extension_queues(amqp_url, unique)


@pytest.mark.parametrize("body", [b"not json {", b"[1, 2]", b"\xff\xfe\x00binary", b""])
async def test_bad_body_is_dead_lettered_at_once_with_reason(env, unique, amqp_url, body):
    registry, out, settings = env
    write_extension(registry, unique, f"#!/bin/sh\ntouch {out}/ran\n")
    key = build_routing_key("ActionEvent", "VM.START", "VirtualMachine", "u1")
    try:
        async with running_worker(settings):
            await publish_event(amqp_url, settings.cloudstack_exchange, key, body)
            [dead] = await collect_dead_letters(amqp_url, unique, 1)
            # The worker keeps going: a good event after the bad one still runs.
            await publish_event(
                amqp_url, settings.cloudstack_exchange, key, b'{"event":"VM.START"}'
            )
            await wait_until(lambda: (out / "ran").exists(), what="the good event")
        assert dead.body == body
        assert dead.headers[c.HEADER_REASON] == "invalid-body"
        assert dead.headers[c.HEADER_DETAIL]
    finally:
        await delete_extension_queues(amqp_url, unique)


async def test_events_reach_only_matching_extension(env, unique, amqp_url):
    registry, out, settings = env
    a, b = f"{unique}a", f"{unique}b"
    write_extension(
        registry,
        a,
        f"#!/bin/sh\ntouch {out}/a-$CSEXT_RUN_ID\n",
        patterns=["management-server.ActionEvent.VM-START.*.*"],
    )
    write_extension(
        registry,
        b,
        f"#!/bin/sh\ntouch {out}/b-$CSEXT_RUN_ID\n",
        patterns=["management-server.AlertEvent.#"],
    )
    try:
        async with running_worker(settings):
            key = build_routing_key("ActionEvent", "VM.START", "VirtualMachine", "u2")
            assert key == "management-server.ActionEvent.VM-START.VirtualMachine.u2"
            await publish_event(
                amqp_url, settings.cloudstack_exchange, key, b'{"event":"VM.START"}'
            )
            alert = build_routing_key("AlertEvent", "ALERT.MEMORY", None, None)
            assert alert == "management-server.AlertEvent.ALERT-MEMORY.*.*"
            await publish_event(amqp_url, settings.cloudstack_exchange, alert, b'{"subject":"low"}')
            await wait_until(lambda: len(list(out.iterdir())) == 2, what="two runs")
        names = sorted(p.name[0] for p in out.iterdir())
        assert names == ["a", "b"]
    finally:
        await delete_extension_queues(amqp_url, a, b)


def _busy(worker) -> bool:
    return any(not t.done() for t in worker.tasks)


async def test_deleted_queues_are_declared_again_and_consumed(env, unique, amqp_url):
    """Someone deletes an extension's queues under a running worker: the broker cancels the
    consumers, the worker declares the queues (and bindings) again and goes on consuming."""
    registry, out, settings = env
    write_extension(
        registry,
        unique,
        f'#!/bin/sh\necho "$1" >> {out}/runs\n',
        patterns=["management-server.ResourceStateEvent.#"],
    )
    key = build_routing_key("ResourceStateEvent", "Op", "VirtualMachine", STATE_BODY["id"])
    body = json.dumps(STATE_BODY).encode()
    runs = out / "runs"
    try:
        async with running_worker(settings):
            await publish_event(amqp_url, settings.cloudstack_exchange, key, body)
            await wait_until(runs.exists, what="the first run")
            await delete_extension_queues(amqp_url, unique)

            async def both_consumed_once() -> bool:
                try:
                    counts = [
                        await queue_consumers(amqp_url, c.events_queue(unique)),
                        await queue_consumers(amqp_url, c.rpc_queue(unique)),
                    ]
                except Exception:  # not declared again yet
                    return False
                return counts == [1, 1]

            await wait_until(both_consumed_once, what="both queues declared and consumed again")
            await publish_event(amqp_url, settings.cloudstack_exchange, key, body)
            await wait_until(lambda: runs.read_text().count("\n") == 2, what="the second run")
    finally:
        await delete_extension_queues(amqp_url, unique)
