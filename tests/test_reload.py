"""Live reload end to end: the store CLI changes the registry, a running worker follows."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from workerkit import (
    consumers_at_most,
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
from csext.worker.amqp.names import events_queue

pytestmark = pytest.mark.broker

KEY = build_routing_key("ActionEvent", "VM.START", "VirtualMachine", "vm-9")
SLOW = """#!/bin/sh
echo "$CSEXT_RUN_ID" >> {out}/started
sleep {seconds}
echo "$CSEXT_RUN_ID" >> {out}/finished
"""


async def store_cli(
    *args: str, registry: Path, amqp_url: str
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    command = [
        sys.executable,
        "-m",
        "csext.cli",
        *args,
        "--registry",
        str(registry),
        "--amqp-url",
        amqp_url,
    ]
    result = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    return result


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def env(tmp_path: Path, amqp_url: str, unique: str):
    registry = tmp_path / "registry"
    out = tmp_path / "out"
    out.mkdir()
    write_extension(
        registry,
        unique,
        SLOW.format(out=out, seconds=2),
        patterns=["management-server.ActionEvent.#"],
        spec={"enabled": False, "timeout": 30},
    )
    return registry, out, settings_for(amqp_url, registry, f"{unique}-reload", tmp_path)


async def test_enable_starts_the_flow_and_disable_lets_the_inflight_run_finish(
    env, unique, amqp_url
):
    registry, out, settings = env
    try:
        async with running_worker(settings) as worker:
            assert unique not in worker.consumers
            await store_cli("enable", unique, registry=registry, amqp_url=amqp_url)
            # The broadcast on csext.control makes the worker reconcile (no poll wait needed).
            await wait_until(lambda: unique in worker.consumers, timeout=10, what="reload")
            await publish_event(
                amqp_url, settings.cloudstack_exchange, KEY, b'{"event":"VM.START"}'
            )
            await wait_until(lambda: len(lines(out / "started")) == 1, what="first run")

            await store_cli("disable", unique, registry=registry, amqp_url=amqp_url)
            await wait_until(lambda: unique not in worker.consumers, timeout=15, what="disable")
            # Disabling does not kill the run in flight: it finishes (and is acked).
            await wait_until(lambda: len(lines(out / "finished")) == 1, what="in-flight run")
            queue = events_queue(unique)
            await wait_until(
                lambda: consumers_at_most(amqp_url, queue, 0), what="the consumer cancelled"
            )
            # Published with confirms, so routing is done when this returns: an event that is
            # in no queue (unbound) while nobody consumes can never run, now or later.
            await publish_event(
                amqp_url, settings.cloudstack_exchange, KEY, b'{"event":"VM.START"}'
            )
            assert await queue_messages(amqp_url, queue) == 0, "unbound: the event was not queued"
            assert await queue_consumers(amqp_url, queue) == 0, "nobody consumes it"
        assert len(lines(out / "started")) == 1, "no new run after disable"
    finally:
        await delete_extension_queues(amqp_url, unique)
