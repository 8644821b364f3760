"""`csext worker`, `csext call` and `csext emit` as a user types them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from workerkit import (
    delete_extension_queues,
    running_worker,
    settings_for,
    wait_until,
    write_extension,
)

pytestmark = pytest.mark.broker

CLOSED_PORT_URL = "amqp://guest:guest@127.0.0.1:1/"


async def acsext(*args: str, **kwargs):
    """`csext` in a thread, so an in-process worker keeps serving meanwhile."""
    return await asyncio.to_thread(csext, *args, **kwargs)


def csext(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None, timeout: float = 60):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "csext.cli", *args],
        input=stdin,
        capture_output=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


async def test_call_prints_output_and_exits_with_the_extensions_code(tmp_path, amqp_url, unique):
    registry = tmp_path / "registry"
    write_extension(
        registry,
        unique,
        '#!/bin/sh\necho "out $1"\necho err >&2\nexit 4\n',
        hook="orchestrator",
        patterns=[],
    )
    settings = settings_for(amqp_url, registry, f"{unique}-cli", tmp_path)
    try:
        async with running_worker(settings):
            result = await acsext(
                "call",
                unique,
                "start",
                "--payload",
                "-",
                stdin=b'{"a": 1}',
                env={"CSEXT_AMQP_URL": amqp_url},
            )
            as_json = await acsext(
                "call", unique, "start", "--json", env={"CSEXT_AMQP_URL": amqp_url}
            )
        assert result.returncode == 4
        assert result.stdout == b"out start\n"
        assert result.stderr == b"err\n"
        reply = json.loads(as_json.stdout)
        assert reply["exit_code"] == 4 and reply["stdout"] == "out start\n"
    finally:
        await delete_extension_queues(amqp_url, unique)


def test_call_with_unreachable_broker_says_so():
    result = csext("call", "hello", "greet", "--amqp-url", CLOSED_PORT_URL, timeout=30)
    assert result.returncode == 69
    assert b"cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/" in result.stderr
    assert b"guest:guest" not in result.stderr


def test_call_with_unreadable_payload_file_says_so(tmp_path):
    result = csext("call", "hello", "greet", "--payload", str(tmp_path / "missing.json"))
    assert result.returncode == 66  # EX_NOINPUT
    assert result.stderr.startswith(b"csext: error: cannot read ")
    assert b"No such file or directory\n  fix: " in result.stderr


def test_invalid_settings_name_the_variable():
    result = csext("call", "hello", "greet", env={"CSEXT_AMQP_URL": "http://nope"})
    assert result.returncode == 2
    assert b"amqp_url" in result.stderr and b"amqp://" in result.stderr


async def test_emit_publishes_like_cloudstack(tmp_path, amqp_url, unique):
    registry = tmp_path / "registry"
    out = tmp_path / "out"
    out.mkdir()
    write_extension(
        registry,
        unique,
        f'#!/bin/sh\ncp "$2" {out}/payload.json\n',
        patterns=["management-server.ActionEvent.VM-START.#"],
    )
    settings = settings_for(amqp_url, registry, f"{unique}-emit", tmp_path)
    try:
        async with running_worker(settings):
            result = await acsext(
                "emit",
                "--category",
                "ActionEvent",
                "--type",
                "VM.START",
                "--resource-type",
                "VirtualMachine",
                "--uuid",
                "u-1",
                "--body",
                "-",
                stdin=b'{"event":"VM.START","status":"Completed"}',
                env={
                    "CSEXT_AMQP_URL": amqp_url,
                    "CSEXT_CLOUDSTACK_EXCHANGE": settings.cloudstack_exchange,
                },
            )
            assert result.returncode == 0, result.stderr
            await wait_until(lambda: (out / "payload.json").exists(), what="the emitted event")
        assert result.stdout.strip() == b"management-server.ActionEvent.VM-START.VirtualMachine.u-1"
        payload = json.loads((out / "payload.json").read_text())
        assert payload["body"]["status"] == "Completed"
    finally:
        await delete_extension_queues(amqp_url, unique)


def test_worker_with_unreachable_broker_exits_with_a_clear_error(tmp_path: Path):
    result = csext(
        "worker",
        "--registry",
        str(tmp_path),
        "--amqp-url",
        CLOSED_PORT_URL,
        env={"CSEXT_CONNECT_TIMEOUT": "1.5"},
        timeout=60,
    )
    assert result.returncode == 69
    assert b"cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/" in result.stderr
    assert b"Traceback" not in result.stderr
