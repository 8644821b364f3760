"""`csext dead show` and `csext dead purge` against real dead letters of a real worker.

show must mask a credential planted in the event body (and echoed by the extension on stderr);
purge must remove exactly what it names and leave every other dead letter; replays and purges
must appear in the run history.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from workerkit import publish_event, running_worker, settings_for, wait_until, write_extension

from csext.schemas.event import build_routing_key
from csext.worker.amqp.dlq import list_dead, matcher, purge_dead
from csext.worker.amqp.runlog import recent_runs

pytestmark = pytest.mark.broker

SECRET = "hunter2-planted-Zq9"
FAILING = '#!/bin/sh\necho "login with $(grep -o \'hunter2[^"]*\' "$2") failed" >&2\nexit 3\n'
NO_RETRY = {"attempts": 1}


def dead(amqp_url: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    return subprocess.run(
        [sys.executable, "-m", "csext.cli", "dead", *args, "--amqp-url", amqp_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        input=stdin.decode() if stdin else None,
    )


async def _dead_letters(amqp_url: str, extension: str, count: int) -> list[dict]:
    found: list[dict] = []

    async def enough() -> bool:
        found[:] = await list_dead(amqp_url, matcher(extension=extension))
        return len(found) >= count

    await wait_until(enough, 30, f"{count} dead letters of {extension}")
    return found


async def _make_dead(tmp_path: Path, amqp_url: str, unique: str, counts: dict[str, int]) -> None:
    """Dead letters from a real worker: each extension fails every event it gets."""
    registry = tmp_path / "registry"
    keys = {}
    for name in counts:
        keys[name] = build_routing_key("ActionEvent", f"{name}.FAIL", "VirtualMachine", "vm-1")
        pattern = ".".join(keys[name].split(".")[:3]) + ".#"
        write_extension(registry, name, FAILING, patterns=[pattern], spec={"retry": NO_RETRY})
    settings = settings_for(amqp_url, registry, f"{unique}-ex", tmp_path)
    body = orjson.dumps({"user": "admin", "password": SECRET, "vm": {"name": "web-1"}})
    async with running_worker(settings):
        for name, count in counts.items():
            for _ in range(count):
                await publish_event(amqp_url, settings.cloudstack_exchange, keys[name], body)
        for name, count in counts.items():
            await _dead_letters(amqp_url, name, count)


async def test_show_masks_a_planted_secret(tmp_path: Path, amqp_url: str, unique: str):
    name = f"{unique}-show"
    await _make_dead(tmp_path, amqp_url, unique, {name: 1})
    listed = await asyncio.to_thread(dead, amqp_url, "list", "--extension", name, "--json")
    assert listed.returncode == 0, listed.stderr
    [info] = orjson.loads(listed.stdout)
    assert len(info["id"]) == 12

    shown = await asyncio.to_thread(dead, amqp_url, "show", info["id"][:8])
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert SECRET not in text and "***" in text
    assert "reason:      retries-exhausted" in text and "exit code:   3" in text
    assert "attempts:    1" in text and "login with *** failed" in text, "stderr tail, masked"
    assert '"password": "***"' in text and '"name": "web-1"' in text, "body pretty-printed"
    assert "x-csext-original-queue" in text, "headers listed"

    as_json = await asyncio.to_thread(dead, amqp_url, "show", info["id"], "--json")
    assert SECRET not in as_json.stdout
    detail = orjson.loads(as_json.stdout)
    assert detail["masked"] == 1 and detail["headers"]["x-csext-extension"] == name
    assert len(await list_dead(amqp_url, matcher(extension=name))) == 1, "show removes nothing"

    missing = await asyncio.to_thread(dead, amqp_url, "show", "ffffffffffff")
    assert missing.returncode == 1 and "no dead letter with id" in missing.stderr
    short = await asyncio.to_thread(dead, amqp_url, "show", "abc")
    assert short.returncode == 1 and "too short" in short.stderr
    await purge_dead(amqp_url, matcher(extension=name))


async def test_purge_removes_only_what_it_names(tmp_path: Path, amqp_url: str, unique: str):
    doomed, kept = f"{unique}-doomed", f"{unique}-kept"
    await _make_dead(tmp_path, amqp_url, unique, {doomed: 2, kept: 1})
    ids = {d["id"] for d in await list_dead(amqp_url, matcher(extension=doomed))}

    refused = await asyncio.to_thread(dead, amqp_url, "purge", "--extension", doomed)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert len(await list_dead(amqp_url, matcher(extension=doomed))) == 2, "nothing purged"

    bad_age = await asyncio.to_thread(dead, amqp_url, "purge", "--older-than", "soon", "--yes")
    assert bad_age.returncode == 2 and "--older-than" in bad_age.stderr

    purged = await asyncio.to_thread(
        dead, amqp_url, "purge", "--extension", doomed, "--yes", "--json"
    )
    assert purged.returncode == 0, purged.stderr
    report = orjson.loads(purged.stdout)
    assert report["purged"] == 2 and set(report["ids"]) == ids, (report, purged.stderr)
    assert await list_dead(amqp_url, matcher(extension=doomed)) == []
    assert len(await list_dead(amqp_url, matcher(extension=kept))) == 1, "the other one stays"

    young = await purge_dead(amqp_url, matcher(extension=kept), older_than=3600)
    assert young.purged == 0, "dead for seconds, not an hour"
    assert len(await list_dead(amqp_url, matcher(extension=kept))) == 1
    later = await purge_dead(
        amqp_url, matcher(extension=kept), older_than=3600, now=time.time() + 7200
    )
    assert later.purged == 1

    async def history() -> list[dict]:
        records = await recent_runs(amqp_url, doomed, limit=50, since=600)
        return [r for r in records if r["outcome"] == "purged"]

    await wait_until(lambda: _has(history, 2), 20, "purge records in the run history")
    records = await history()
    assert {r["event_key"] for r in records} == ids
    assert all(r["kind"] == "operator" for r in records)
    assert all(
        r["action"] == "dead-purge" and "removed from csext.dead" in r["error"] for r in records
    )


async def test_replay_is_written_to_the_run_history(tmp_path: Path, amqp_url: str, unique: str):
    name = f"{unique}-again"
    await _make_dead(tmp_path, amqp_url, unique, {name: 1})
    [info] = await list_dead(amqp_url, matcher(extension=name))
    replayed = await asyncio.to_thread(dead, amqp_url, "replay", "--extension", name, "--yes")
    assert replayed.returncode == 0 and orjson.loads(replayed.stdout)["replayed"] == 1

    async def records() -> list[dict]:
        found = await recent_runs(amqp_url, name, limit=50, since=600)
        return [r for r in found if r["outcome"] == "replayed"]

    await wait_until(lambda: _has(records, 1), 20, "a replay record")
    [record] = await records()
    assert record["event_key"] == info["id"] and record["action"] == "dead-replay"
    assert f"put back into {info['queue']}" in record["error"]


async def _has(fetch, count: int) -> bool:
    return len(await fetch()) >= count
