"""Run history: every worker's run records, read back from the csext.runs.log stream."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson
import pytest
from workerkit import delete_extension_queues, running_worker, settings_for, write_extension

from csext.worker.amqp.rpc_client import RpcClient
from csext.worker.amqp.runlog import format_runs, parse_duration, recent_runs

pytestmark = pytest.mark.broker


async def test_recent_runs_are_read_back_without_payloads(tmp_path, amqp_url, unique):
    registry = tmp_path / "registry"
    write_extension(
        registry,
        unique,
        '#!/bin/sh\necho "done $1"\n[ "$1" != bad ] || exit 3\n',
        hook="orchestrator",
        patterns=[],
    )
    settings = settings_for(amqp_url, registry, f"{unique}-log", tmp_path)
    try:
        async with running_worker(settings), RpcClient(amqp_url) as client:
            for action in ("start", "stop", "bad"):
                await client.call(unique, action, {"password": "hunter2-secret"}, timeout=20)
        records = await recent_runs(amqp_url, unique, limit=10, since=300)
        assert [r["action"] for r in records] == ["start", "stop", "bad"]
        assert [r["outcome"] for r in records] == ["success", "success", "failed"]
        assert records[2]["exit_code"] == 3
        assert all(r["extension"] == unique and r["finished_at"] > 0 for r in records)
        assert b"hunter2-secret" not in orjson.dumps(records), "records never carry the payload"
        assert len(await recent_runs(amqp_url, unique, limit=2, since=300)) == 2
        env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
        shown = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "csext.cli",
                "runs",
                unique,
                "--since",
                "5m",
                "--amqp-url",
                amqp_url,
            ],
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.decode().count(unique) == 3
        show = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "csext.cli",
                "show",
                unique,
                "--json",
                "--registry",
                str(registry),
                "--amqp-url",
                amqp_url,
            ],
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert show.returncode == 0, show.stderr
        last = orjson.loads(show.stdout)["last_runs"]
        assert [r["action"] for r in last] == ["start", "stop", "bad"]
    finally:
        await delete_extension_queues(amqp_url, unique)


def test_durations_and_formatting():
    assert parse_duration("90s") == 90 and parse_duration("15m") == 900
    assert parse_duration("24h") == 86400 and parse_duration("7d") == 604800
    assert parse_duration("30") == 30
    with pytest.raises(ValueError, match="24h"):
        parse_duration("soon")
    assert format_runs([]) == "no runs recorded in that window"
