"""Operating csext.dead: list dead letters with their reasons, replay them into their queue."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aio_pika
import orjson
import pytest
from workerkit import (
    delete_extension_queues,
    publish_event,
    running_worker,
    settings_for,
    wait_until,
    write_extension,
)

from csext.schemas.event import build_routing_key
from csext.worker.amqp import names as c
from csext.worker.amqp import topology
from csext.worker.amqp.dlq import list_dead, matcher, replay_dead

pytestmark = pytest.mark.broker

KEY = build_routing_key("ActionEvent", "VM.STOP", "VirtualMachine", "vm-3")


def dead_cli(amqp_url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    return subprocess.run(
        [sys.executable, "-m", "csext.cli", "dead", *args, "--amqp-url", amqp_url],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


async def test_list_then_replay_after_the_extension_is_fixed(tmp_path: Path, amqp_url, unique):
    registry = tmp_path / "registry"
    out = tmp_path / "out"
    out.mkdir()
    folder = write_extension(
        registry,
        unique,
        "#!/bin/sh\necho 'not today' >&2\nexit 9\n",
        patterns=["management-server.ActionEvent.#"],
        spec={"retry": {"attempts": 2, "backoff": {"initial": 0.05, "jitter": 0}}},
    )
    settings = settings_for(amqp_url, registry, f"{unique}-dlq", tmp_path)
    mine = matcher(extension=unique)
    try:
        async with running_worker(settings):
            await publish_event(amqp_url, settings.cloudstack_exchange, KEY, b'{"event":"VM.STOP"}')

            async def dead_count() -> int:
                return len(await list_dead(amqp_url, mine))

            deadline = asyncio.get_running_loop().time() + 30
            while await dead_count() < 1:
                assert asyncio.get_running_loop().time() < deadline, "never dead-lettered"
                await asyncio.sleep(0.2)
            [info] = await list_dead(amqp_url, mine)
            assert info["reason"] == "retries-exhausted" and info["by"] == "csext"
            assert info["exit_code"] == 9 and "not today" in info["stderr_tail"]
            assert info["queue"] == c.events_queue(unique)
            assert len(await list_dead(amqp_url, mine)) == 1, "listing removes nothing"

            listed = await asyncio.to_thread(dead_cli, amqp_url, "list", "--extension", unique)
            assert listed.returncode == 0 and b"retries-exhausted" in listed.stdout
            refused = await asyncio.to_thread(dead_cli, amqp_url, "replay", "--extension", unique)
            assert refused.returncode == 1 and b"--yes" in refused.stderr

            (folder / "run").write_text(f'#!/bin/sh\ncp "$2" {out}/replayed.json\n')
            replayed = await asyncio.to_thread(
                dead_cli, amqp_url, "replay", "--extension", unique, "--yes"
            )
            assert replayed.returncode == 0, replayed.stderr
            assert orjson.loads(replayed.stdout)["replayed"] == 1
            await wait_until(lambda: (out / "replayed.json").exists(), what="the replayed run")
        payload = orjson.loads((out / "replayed.json").read_text())
        assert payload["routing_key"] == KEY
        assert await list_dead(amqp_url, mine) == []
    finally:
        await delete_extension_queues(amqp_url, unique)


async def test_rpc_dead_letters_are_listed_but_not_replayed(amqp_url, unique, tmp_path):
    registry = tmp_path / "registry"
    write_extension(registry, unique, "#!/bin/sh\n", hook="orchestrator", patterns=[])
    settings = settings_for(amqp_url, registry, f"{unique}-dlq2", tmp_path)
    try:
        async with running_worker(settings):
            connection = await aio_pika.connect(amqp_url)
            async with connection:
                channel = await connection.channel()
                exchange = await topology.declare_rpc_exchange(channel)
                await exchange.publish(aio_pika.Message(b'{"action":"start"}'), unique)
            mine = matcher(extension=unique)
            deadline = asyncio.get_running_loop().time() + 30
            while not (found := await list_dead(amqp_url, mine)):
                assert asyncio.get_running_loop().time() < deadline, "never dead-lettered"
                await asyncio.sleep(0.2)
        assert found[0]["reason"] == "no-reply-to"
        report = await replay_dead(amqp_url, mine)
        assert report.replayed == 0 and report.skipped == 1
        assert len(await list_dead(amqp_url, mine)) == 1
        # clean up: take it out for good
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(c.DEAD_LETTER_QUEUE)
            while (message := await queue.get(fail=False, timeout=5)) is not None:
                if (message.headers or {}).get(c.HEADER_EXTENSION) == unique:
                    await message.ack()
                else:
                    await message.nack(requeue=True)
                    break
    finally:
        await delete_extension_queues(amqp_url, unique)
