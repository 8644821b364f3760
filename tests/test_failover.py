"""Several broker URLs: every client tries them in order and uses the first that answers.

A closed port on loopback stands in for a dead node (refused at once, as a stopped RabbitMQ
node refuses); the real broker is the node that answers. The three-node cluster scenarios
(tests/cluster) show the same against real nodes that die mid-run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import pytest
from pydantic import ValidationError
from workerkit import running_worker, settings_for, write_extension

from csext.bridges import fastamqp
from csext.schemas.errors import BrokerUnavailable
from csext.worker.amqp import broker, topology
from csext.worker.amqp.failover import FailoverConnection, rotated
from csext.worker.settings import Settings

ECHO = """#!/bin/sh
echo '{"status":"success","node":"any"}'
"""


def dead_url() -> str:
    """An amqp:// URL on a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"amqp://guest:secret@127.0.0.1:{port}/"


def test_settings_split_and_validate_each_url():
    settings = Settings(amqp_url="amqp://a:5672/, amqp://u:pw@b:5672/v")
    assert settings.amqp_urls == ["amqp://a:5672/", "amqp://u:pw@b:5672/v"]
    assert "pw" not in settings.safe_amqp_url and "***" in settings.safe_amqp_url
    with pytest.raises(ValidationError, match=r"http://b.*must be an amqp://"):
        Settings(amqp_url="amqp://a/,http://b/")
    with pytest.raises(ValidationError, match="at least one"):
        Settings(amqp_url=" , ")


@pytest.mark.parametrize(
    ("urls", "size"),
    [(1, None), (2, 2), (3, 3), (4, 3), (5, 5), (7, 5)],
)
def test_quorum_size_fits_the_cluster(urls, size):
    settings = Settings(amqp_url=",".join(f"amqp://n{i}/" for i in range(urls)))
    assert topology.quorum_group_size(settings) == size
    arguments = topology.events_queue_arguments(settings)
    assert arguments.get("x-quorum-initial-group-size") == size
    assert topology.quorum_group_size(settings.model_copy(update={"quorum_size": 1})) == 1


def test_rotated_starts_each_attempt_at_the_next_node():
    assert rotated(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert rotated(["a", "b", "c"], 4) == ["b", "c", "a"]


@pytest.mark.broker
async def test_short_lived_clients_skip_a_dead_node(amqp_url):
    connection = await broker.connect(f"{dead_url()},{amqp_url}", timeout=5)
    await connection.close()
    with pytest.raises(BrokerUnavailable) as caught:
        await broker.connect(f"{dead_url()},{dead_url()}", timeout=2)
    message = str(caught.value)
    assert message.count("127.0.0.1:") == 2 and "secret" not in message


@pytest.mark.broker
async def test_robust_connection_moves_to_the_next_node_when_its_node_goes(amqp_url):
    """The worker's connection: a reconnect after a loss goes to the next URL."""
    connection = FailoverConnection([amqp_url, dead_url()], reconnect_interval=0.2)
    await connection.connect(timeout=5)
    try:
        first = connection.current_url
        assert connection.transport is not None
        await connection.transport.connection.close()  # as when the node dies
        # the next attempt goes to the dead URL, fails, and comes back round to the live one
        deadline = time.monotonic() + 20
        seen = {first}
        while time.monotonic() < deadline:
            seen.add(connection.current_url)
            if len(seen) == 2 and connection.connected.is_set():
                break
            await asyncio.sleep(0.02)
        assert len(seen) == 2, seen
        channel = await connection.channel()
        await channel.close()
    finally:
        await connection.close()


def test_fastamqp_open_first_skips_a_dead_node(amqp_url):
    conn = fastamqp.open_first(f"{dead_url()},{amqp_url}", time.monotonic() + 5)
    try:
        assert conn.sock is not None
    finally:
        conn.close()
    with pytest.raises(fastamqp.AmqpUnreachable, match="no broker answered") as caught:
        fastamqp.open_first(f"{dead_url()},{dead_url()}", time.monotonic() + 3)
    assert "secret" not in str(caught.value)


def test_fastamqp_wrong_password_is_not_hidden_by_failover(amqp_url):
    wrong = amqp_url.replace("guest:guest", "guest:wrong")
    with pytest.raises(fastamqp.AmqpClosed, match="refused the login"):
        fastamqp.open_first(f"{wrong},{amqp_url}", time.monotonic() + 5)


@pytest.mark.broker
async def test_worker_call_and_forward_fail_over(tmp_path, amqp_url, unique):
    """A worker, `csext call` and `csext forward`, each given a dead node first (the CLI runs
    in a thread: the worker shares this event loop)."""
    registry = tmp_path / "registry"
    write_extension(registry, unique, ECHO, hook="orchestrator", patterns=[])
    urls = f"{dead_url()},{amqp_url}"
    settings = settings_for(urls, registry, f"{unique}-ex", tmp_path)
    payload = tmp_path / "payload.json"
    payload.write_text("{}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    env["CSEXT_AMQP_URL"] = urls
    async with running_worker(settings):
        call = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "csext.cli", "call", unique, "status", "--timeout", "20"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert call.returncode == 0, call.stderr
        assert '"node":"any"' in call.stdout
        forward = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "csext.cli",
                "forward",
                "-e",
                unique,
                "status",
                str(payload),
                "20",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert forward.returncode == 0, forward.stdout + forward.stderr
        assert '"node":"any"' in forward.stdout
    await _delete(amqp_url, unique)


async def _delete(amqp_url: str, name: str) -> None:
    from workerkit import delete_extension_queues

    await delete_extension_queues(amqp_url, name)
