"""Scenario 3: a generated corpus of malformed input against a real worker process.

Events that are not a usable JSON object must be dead-lettered at once with a reason; RPC
calls that are not `{"action", "payload"}` JSON get an immediate `bad-request` reply carrying
their correlation id (whatever it is); calls without reply_to are dead-lettered; calls past
their deadline are dropped unrun. The extension never runs for any of them, the worker stays
up and answers a good call afterwards, and its memory stays bounded. A hypothesis property
test drives the parsing path itself with arbitrary bytes and JSON values.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from types import SimpleNamespace

import aio_pika
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workerkit import settings_for, write_extension

from csext.schemas.errors import DeadLetter
from csext.worker.amqp import names as c
from csext.worker.amqp import topology
from csext.worker.amqp.rpc_client import RpcClient
from csext.worker.events import parse_event
from csext.worker.rpc import BadCall, parse_call

from ._kit import (
    DeadLetters,
    consumers_at_least,
    delete_queues,
    rss_kb,
    start_worker,
    stop,
    wait_for,
)
from .conftest import FULL, size

SCENARIO = "3 malformed input"
pytestmark = [pytest.mark.timeout(600 if FULL else 150)]

RAN = """#!/bin/sh
echo "$CSEXT_ACTION" >> {out}/ran
echo '{{"status":"success"}}'
"""
MEMORY_BOUND_MB = 150


def nested(depth: int) -> bytes:
    return b'{"a":' + b"[" * depth + b"]" * depth + b"}"


def bad_bodies(rng: random.Random, huge: int) -> list[tuple[str, bytes]]:
    """(category, body) pairs; none is a JSON object a worker could use."""
    text = "".join(rng.choice('abc{}[]":, \n\\') for _ in range(rng.randint(1, 200)))
    return [
        ("not JSON", text.encode()),
        ("not JSON", b"{" + text.encode()),
        ("wrong shape", orjson.dumps(rng.choice([[1, 2], 3, "s", None, True, [{}], 1.5]))),
        ("huge", b"[" * 1 + b"1," * (huge // 2) + b"1"),  # unterminated, ~huge bytes
        ("deep nesting", nested(rng.choice([300, 600, 1000]))),
        ("deep nesting", nested(rng.choice([1100, 5000]))),
        ("invalid UTF-8", b'{"a":"' + bytes([0xFF, 0xFE, rng.randint(0x80, 0xBF)]) + b'"}'),
        ("binary", rng.randbytes(rng.randint(1, 512))),
        ("empty", b""),
        ("out-of-range number", b'{"a":1' + b"0" * rng.randint(310, 400) + b"}"),
        ("NaN", b'{"a":NaN}'),
    ]


def bad_calls(rng: random.Random) -> list[tuple[str, bytes]]:
    """RPC bodies that are not {"action": str, "payload": ...}."""
    return [
        ("not JSON", bytes(rng.choice(b"abc{}[]") for _ in range(rng.randint(1, 100)))),
        ("wrong shape", orjson.dumps(rng.choice([[], 1, "x", None, {"payload": {}}]))),
        (
            "action not a string",
            orjson.dumps({"action": rng.choice([1, None, [], {}]), "payload": {}}),
        ),
        ("deep nesting", b'{"action":"start","payload":' + nested(rng.choice([300, 2000])) + b"}"),
        ("invalid UTF-8", b'{"action":"\xff\xfe","payload":{}}'),
        ("binary", rng.randbytes(rng.randint(1, 256))),
        ("empty", b""),
    ]


def bogus_correlation_id(rng: random.Random, index: int) -> str:
    decoration = rng.choice(["", " ", "é☃", "\t", "x" * 200, "null", "-1"])
    return f"{index}:{decoration}"


async def test_malformed_corpus(tmp_path, amqp_url, unique, report):
    rounds = size(100, 500)
    rng = random.Random(7)
    registry, out = tmp_path / "registry", tmp_path / "out"
    registry.mkdir()
    out.mkdir()
    pattern = f"management-server.ActionEvent.VM-START.{unique}.*"
    write_extension(
        registry, unique, RAN.format(out=out), patterns=[pattern], spec={"concurrency": 8}
    )
    rpc_name = f"{unique}-rpc"
    write_extension(registry, rpc_name, RAN.format(out=out), hook="orchestrator", patterns=[])
    settings = settings_for(amqp_url, registry, f"{unique}-ex", tmp_path)
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        await wait_for(lambda: consumers_at_least(amqp_url, c.rpc_queue(rpc_name), 1), 60, "rpc")
        await wait_for(lambda: consumers_at_least(amqp_url, c.events_queue(unique), 1), 60, "ev")
        async with RpcClient(amqp_url) as client:  # warm up, then measure memory
            assert (await client.call(rpc_name, "status", {}, timeout=20)).exit_code == 0
        before = rss_kb(worker.pid)
        async with DeadLetters(amqp_url, f"*.*.*.{unique}.*", rpc_name) as dead:
            events, calls, expired, no_reply = await _send_corpus(
                amqp_url, settings.cloudstack_exchange, unique, rpc_name, rounds, rng
            )
            total = len(events) + len(calls) + expired + no_reply
            report.load(
                f"{total} malformed bodies ({len(events)} events, {len(calls)} RPC calls, "
                f"{expired} expired, {no_reply} without reply_to)"
            )
            replies = calls.pop("__replies__")
            await wait_for(lambda: len(dead.found) >= len(events) + no_reply, 120, "dead letters")
            await wait_for(lambda: len(replies) >= len(calls), 120, "error replies")
            reasons = dead.reasons()
            assert reasons.get("no-reply-to") == no_reply, reasons
            assert sum(reasons.values()) == len(events) + no_reply, reasons
            assert set(reasons) <= {"invalid-body", "bad-payload", "no-reply-to"}, reasons
            report.check(f"100 % of malformed events dead-lettered at once ({reasons})")
            kinds = {r["error"]["kind"] for r in replies.values()}
            assert set(replies) == set(calls) and kinds == {"bad-request"}, kinds
            assert all(r["error"]["message"] for r in replies.values())
            report.check(
                "every malformed call answered with a bad-request error naming the "
                "problem, under its own (bogus) correlation id"
            )
        async with RpcClient(amqp_url) as client:
            assert (await client.call(rpc_name, "status", {}, timeout=20)).exit_code == 0
        ran = (out / "ran").read_text().split()
        assert ran == ["status", "sentinel", "status"], ran  # the warm-up, sentinel, last call
        report.check(
            "the extension never ran for any of them (expired calls dropped unrun); "
            "the worker stayed up and answers"
        )
        after = rss_kb(worker.pid)
        assert after - before < MEMORY_BOUND_MB * 1024, (before, after)
        report.check(
            f"worker memory {before // 1024} MB before, {after // 1024} MB after "
            f"(bound +{MEMORY_BOUND_MB} MB)"
        )
    finally:
        stop(worker)
        await delete_queues(amqp_url, unique, rpc_name)


async def _send_corpus(amqp_url, exchange_name, unique, rpc_name, rounds, rng):  # type: ignore[no-untyped-def]
    """Publish everything with confirms; returns (events, calls-with-replies, expired, no_reply)."""
    events: list[bytes] = []
    calls: dict = {}
    replies: dict = {}
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        cloudstack = await topology.declare_cloudstack_exchange(channel, exchange_name)
        rpc = await topology.declare_rpc_exchange(channel)
        reply_queue = await channel.declare_queue(exclusive=True, auto_delete=True)

        async def on_reply(message):  # type: ignore[no-untyped-def]
            replies[message.correlation_id] = orjson.loads(message.body)

        await reply_queue.consume(on_reply, no_ack=True)
        expired = no_reply = 0
        pending = []
        for index in range(rounds):
            huge = 1_000_000 if index % 25 == 0 else 2_000
            for _category, body in bad_bodies(rng, huge):
                key = f"management-server.ActionEvent.VM-START.{unique}.vm-{index}"
                content_type = rng.choice(["text/plain", "application/octet-stream", None])
                pending.append(
                    cloudstack.publish(
                        aio_pika.Message(
                            body,
                            content_type=content_type,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        key,
                    )
                )
                events.append(body)
            for category, body in bad_calls(rng):
                correlation_id = bogus_correlation_id(rng, len(calls))
                calls[correlation_id] = category
                pending.append(
                    rpc.publish(
                        aio_pika.Message(
                            body,
                            correlation_id=correlation_id,
                            reply_to=reply_queue.name,
                            content_type=rng.choice(["application/json", "text/plain", None]),
                            headers={c.HEADER_DEADLINE: int((time.time() + 60) * 1000)},
                        ),
                        rpc_name,
                    )
                )
            good = orjson.dumps({"action": "start", "payload": {}})
            pending.append(
                rpc.publish(
                    aio_pika.Message(
                        good,
                        correlation_id=f"expired-{index}",
                        reply_to=reply_queue.name,
                        headers={c.HEADER_DEADLINE: int((time.time() - 5) * 1000)},
                    ),
                    rpc_name,
                )
            )
            expired += 1
            pending.append(
                rpc.publish(aio_pika.Message(good, correlation_id=f"noreply-{index}"), rpc_name)
            )
            no_reply += 1
            correlation_id = f"bad-deadline-{index}"
            calls[correlation_id] = "bad deadline header"
            pending.append(
                rpc.publish(
                    aio_pika.Message(
                        good,
                        correlation_id=correlation_id,
                        reply_to=reply_queue.name,
                        headers={c.HEADER_DEADLINE: rng.choice(["soon", True, [1], {"at": 1}])},
                    ),
                    rpc_name,
                )
            )
            if len(pending) > 200:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        await wait_for(lambda: len(replies) >= len(calls), 120, "error replies")
        # A sentinel call published after everything else: its reply comes after any reply an
        # expired call could have had (dropped unrun at once, vs. a sentinel that runs a process;
        # replies share one channel, so they arrive in order), so no fixed wait is needed.
        await rpc.publish(
            aio_pika.Message(
                orjson.dumps({"action": "sentinel", "payload": {}}),
                correlation_id="sentinel",
                reply_to=reply_queue.name,
                headers={c.HEADER_DEADLINE: int((time.time() + 60) * 1000)},
            ),
            rpc_name,
        )
        await wait_for(lambda: "sentinel" in replies, 60, "the sentinel's reply")
        del replies["sentinel"]
        assert not [k for k in replies if k.startswith(("expired-", "noreply-"))]
    calls["__replies__"] = replies
    return events, calls, expired, no_reply


@settings(max_examples=size(300, 3000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=2000),
        # stdlib json writes what orjson refuses: NaN, Infinity, integers beyond 64 bits
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
            lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids),
            max_leaves=50,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_parsing_never_crashes(body: bytes) -> None:
    """Any body: an event is a CloudStackEvent or a DeadLetter, a call an RpcRequest or a
    BadCall; never another exception (which would requeue the delivery)."""
    message = SimpleNamespace(
        body=body, routing_key="management-server.A.B.C.D", headers={}, exchange="cloudstack-events"
    )
    with contextlib.suppress(DeadLetter):
        parse_event(message)  # type: ignore[arg-type]
    with contextlib.suppress(BadCall):
        parse_call(body)
