"""Scenario 6: secrets never leak, and payload files are private and short-lived.

Planted values: the broker URL's password (a RabbitMQ user made for this test), a manifest
secret (from the secrets file), and credentials inside event and RPC payloads. Extensions echo
all of them to stdout and stderr and fail. Then every place an operator or another system can
read is scanned: the worker's log, the run records on csext.runs, dead-letter headers, the
output of `csext show` and `csext runs`, and CLI error messages. Payload files must be mode
0600 while the run lasts and gone after it, also after a timeout kill. (Gone after a worker
crash: scenario 4, `test_kill_9_worker_leaves_nothing_after_restart`.)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aio_pika
import orjson
import pytest
import yaml
from workerkit import settings_for, write_extension

from csext.worker.amqp import names as c
from csext.worker.amqp import topology
from csext.worker.amqp.rpc_client import RpcClient

from ._kit import (
    DeadLetters,
    consumers_at_least,
    delete_queues,
    publish_many,
    start_worker,
    stop,
    wait_for,
)

SCENARIO = "6 secrets"
pytestmark = [pytest.mark.timeout(180)]

LEAKY = """#!/bin/sh
stat -c '%a' "$2" >> {out}/modes
echo "$2" >> {out}/paths
echo "token=$API_TOKEN payload=$(cat "$2")"
echo "token=$API_TOKEN payload=$(cat "$2")" >&2
{tail}
"""


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


async def test_planted_secrets_never_leak(tmp_path, amqp_url, unique, report):
    planted = {
        "broker password": f"BrokerPw-{unique}",
        "manifest secret": f"ManifestSecret-{unique}",
        "event payload password": f"EventPw-{unique}",
        "RPC payload password": f"RpcPw-{unique}",
        "RPC payload secret": f"RpcSecret-{unique}",
    }
    user = f"fx-{unique}"
    await asyncio.to_thread(rabbitmqctl, "add_user", user, planted["broker password"])
    try:
        await asyncio.to_thread(rabbitmqctl, "set_permissions", "-p", "/", user, ".*", ".*", ".*")
        url = f"amqp://{user}:{planted['broker password']}@127.0.0.1:5672/"
        await _scenario(tmp_path, url, unique, planted, report)
    finally:
        await asyncio.to_thread(rabbitmqctl, "delete_user", user)


async def _scenario(tmp_path, url, unique, planted, report):  # type: ignore[no-untyped-def]
    registry, out = tmp_path / "registry", tmp_path / "out"
    registry.mkdir()
    out.mkdir()
    event_ext, rpc_ext, slow_ext = unique, f"{unique}-rpc", f"{unique}-slow"
    pattern = f"management-server.ActionEvent.VM-START.{unique}.*"
    common = {"secrets": ["API_TOKEN"], "retry": {"attempts": 1}}
    write_extension(
        registry, event_ext, LEAKY.format(out=out, tail="exit 1"), patterns=[pattern], spec=common
    )
    write_extension(
        registry,
        rpc_ext,
        LEAKY.format(out=out, tail="exit 1"),
        hook="orchestrator",
        patterns=[],
        spec=common,
    )
    write_extension(
        registry,
        slow_ext,
        LEAKY.format(out=out, tail="sleep 30"),
        hook="orchestrator",
        patterns=[],
        spec={**common, "timeout": 1},
    )
    secrets_file = tmp_path / "secrets.yaml"
    token = planted["manifest secret"]
    secrets_file.write_text(
        yaml.safe_dump({n: {"API_TOKEN": token} for n in (event_ext, rpc_ext, slow_ext)})
    )
    secrets_file.chmod(0o600)
    settings = settings_for(url, registry, f"{unique}-ex", tmp_path)
    log = tmp_path / "worker.log"
    report.load("5 planted values; 1 failing event, 1 failing and 1 timed-out RPC call")
    worker = start_worker(settings, log, CSEXT_SECRETS_FILE=str(secrets_file))
    records: list[bytes] = []
    try:
        await wait_for(lambda: consumers_at_least(url, c.rpc_queue(slow_ext), 1), 60, "consumer")
        async with (
            _run_records(url, unique, records),
            DeadLetters(url, f"*.*.*.{unique}.*") as dead,
        ):
            body = orjson.dumps({"user": "admin", "password": planted["event payload password"]})
            await publish_many(url, settings.cloudstack_exchange, [(f"{pattern[:-1]}vm-1", body)])
            payload = {
                "virtualmachine": {"id": "vm-1", "password": planted["RPC payload password"]},
                "externaldetails": {"extension": {"secret": planted["RPC payload secret"]}},
            }
            async with RpcClient(url) as client:
                failed = await client.call(rpc_ext, "start", payload, timeout=20)
                timed_out = await client.call(slow_ext, "start", payload, timeout=20)
            assert failed.exit_code == 1 and timed_out.error.kind == "timeout"
            await wait_for(lambda: dead.found, 30, "the event's dead letter")
            await wait_for(lambda: len(records) >= 3, 30, "3 run records")
            assert token in failed.stdout, "the extension did get its secret"
        modes = (out / "modes").read_text().split()
        assert modes == ["600"] * 3, modes
        paths = [Path(p) for p in (out / "paths").read_text().split()]
        assert not [p for p in paths if p.exists()], "payload files left behind"
        report.check(
            "payload files were 0600 during the run and gone after it, also after the timeout kill"
        )
    finally:
        stop(worker)
    places = {
        "worker log": log.read_bytes(),
        "run records (csext.runs)": b"\n".join(records),
        "dead-letter headers": repr(dead.found[0].headers).encode(),
        "csext show / csext runs": _cli(settings, "show", event_ext) + _cli(settings, "runs"),
        "CLI error messages": _cli(
            settings, "call", "nope", "start", "--payload", "{}", url=url.replace("5672", "1")
        ),
    }
    for where, text in places.items():
        leaked = [what for what, value in planted.items() if value.encode() in text]
        assert not leaked, f"{leaked} found in the {where}"
    assert b"***" in places["run records (csext.runs)"]
    report.check(
        "none of the planted values appears in: " + ", ".join(places) + " (they are masked as ***)"
    )
    await delete_queues(url, event_ext, rpc_ext, slow_ext)


def _cli(settings, *args: str, url: str | None = None) -> bytes:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    env.update(
        {"CSEXT_AMQP_URL": url or settings.amqp_url, "CSEXT_REGISTRY": str(settings.registry)}
    )
    done = subprocess.run(
        [sys.executable, "-m", "csext.cli", *args], env=env, capture_output=True, timeout=60
    )
    return done.stdout + done.stderr


class _run_records:
    """Collect the run records of this test's extensions from csext.runs."""

    def __init__(self, url: str, unique: str, into: list[bytes]) -> None:
        self._url, self._unique, self._into = url, unique, into

    async def __aenter__(self) -> None:
        self._connection = await aio_pika.connect(self._url)
        channel = await self._connection.channel()
        exchange = await topology.declare_runs_exchange(channel)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "#")

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            for record in orjson.loads(message.body):  # a message is a batch of records
                if self._unique in record["extension"]:
                    self._into.append(orjson.dumps(record))

        await queue.consume(keep, no_ack=True)

    async def __aexit__(self, *exc: object) -> None:
        await self._connection.close()
