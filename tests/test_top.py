"""`csext top --once` over a real worker's runs: the expected rows, counts and runs in flight."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from workerkit import running_worker, settings_for, wait_until, write_extension

from csext.cli.top import in_flight_from, percentile, summarize
from csext.worker.amqp.rpc_client import RpcClient
from csext.worker.amqp.runlog import recent_runs

pytestmark = pytest.mark.broker

ECHO = '#!/bin/sh\necho \'{"status":"success"}\'\n'
FAIL = "#!/bin/sh\necho nope >&2\nexit 1\n"
SLOW = "#!/bin/sh\nsleep 30\n"


def top(amqp_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    return subprocess.run(
        [sys.executable, "-m", "csext.cli", "top", "--once", *args, "--amqp-url", amqp_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def row(output: str, name: str) -> list[str]:
    """The cells of `name`'s row in rich's box table."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line)]
        if name in cells:
            return [cell for cell in cells if cell]
    raise AssertionError(f"no row for {name} in:\n{output}")


async def test_top_once_renders_the_expected_rows(tmp_path: Path, amqp_url: str, unique: str):
    ok, bad, slow = f"{unique}-ok", f"{unique}-bad", f"{unique}-slow"
    registry = tmp_path / "registry"
    for name, script in ((ok, ECHO), (bad, FAIL), (slow, SLOW)):
        write_extension(
            registry, name, script, hook="orchestrator", patterns=[], spec={"timeout": 60}
        )
    settings = settings_for(
        amqp_url, registry, f"{unique}-ex", tmp_path, metrics_port=0, metrics_host="127.0.0.1"
    )
    async with running_worker(settings) as worker, RpcClient(amqp_url) as client:
        for _ in range(4):
            assert (await client.call(ok, "status", timeout=20)).exit_code == 0
        for _ in range(2):
            assert (await client.call(bad, "status", timeout=20)).exit_code == 1
        pending = asyncio.create_task(client.call(slow, "status", timeout=60))
        assert worker.metrics is not None

        async def recorded() -> bool:
            runs = await recent_runs(amqp_url, None, limit=1000, since=300)
            names = [r["extension"] for r in runs]
            return names.count(ok) == 4 and names.count(bad) == 2

        await wait_until(recorded, 20, "the run records")

        metrics = f"http://127.0.0.1:{worker.health.port}/metrics"

        async def flying() -> bool:
            return (await asyncio.to_thread(in_flight_from, [metrics]) or {}).get(slow) == 1

        await wait_until(flying, 20, "the slow run in flight on /metrics")
        done = await asyncio.to_thread(top, amqp_url, "--window", "5m", "--metrics", metrics)
        pending.cancel()
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "csext top: last 300s" in out
    # EXTENSION HOOK RUNS RUNS/S P50 P99 FAILED IN-FLIGHT
    assert row(out, ok)[1:4] == ["orchestrator", "4", "0.01"]
    assert row(out, ok)[6:] == ["0", "0"]
    assert row(out, bad)[2] == "2" and row(out, bad)[6] == "2", "both runs failed"
    assert row(out, slow)[2] == "0" and row(out, slow)[-1] == "1", "no record yet, 1 in flight"
    assert out.index(ok) < out.index(bad) < out.index(slow), "busiest first"

    without = await asyncio.to_thread(top, amqp_url, "--window", "5m")
    assert row(without.stdout, ok)[-1] == "-", "no /metrics given: in-flight unknown"
    bad_window = await asyncio.to_thread(top, amqp_url, "--window", "soon")
    assert bad_window.returncode == 2 and "--window" in bad_window.stderr


def test_summarize_window_percentiles_and_operator_records():
    now = 1000.0
    records = [
        {
            "extension": "a",
            "hook": "event",
            "outcome": "success",
            "duration_ms": d,
            "finished_at": 990,
        }
        for d in range(1, 101)
    ]
    records += [
        {"extension": "a", "outcome": "failed", "duration_ms": 5, "finished_at": 500},  # too old
        {"extension": "b", "outcome": "expired", "duration_ms": 0, "finished_at": 999},
        {"extension": "b", "outcome": "purged", "kind": "operator", "finished_at": 999},
    ]
    rows = {r.extension: r for r in summarize(records, now=now, window=60, in_flight={"c": 2})}
    assert rows["a"].runs == 100 and rows["a"].p50_ms == 50 and rows["a"].p99_ms == 99
    assert rows["a"].failed == 0 and rows["a"].in_flight == 0
    assert rows["b"].runs == 1 and rows["b"].p50_ms is None, "unrun calls have no run time"
    assert rows["c"].runs == 0 and rows["c"].in_flight == 2
    assert percentile([], 0.5) is None and percentile([7], 0.99) == 7


async def test_top_live_follows_new_runs_and_stops_on_ctrl_c(
    tmp_path: Path, amqp_url: str, unique: str
):
    name = f"{unique}-live"
    registry = tmp_path / "registry"
    write_extension(registry, name, ECHO, hook="orchestrator", patterns=[])
    settings = settings_for(amqp_url, registry, f"{unique}-ex", tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    lines: list[str] = []
    async with running_worker(settings), RpcClient(amqp_url) as client:
        viewer = subprocess.Popen(
            [sys.executable, "-m", "csext.cli", "top", "--window", "5m", "--amqp-url", amqp_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        reader = asyncio.get_running_loop().run_in_executor(None, _read_all, viewer, lines)
        try:
            await wait_until(
                lambda: sum("csext top:" in line for line in lines) >= 2, 60, "two frames"
            )
            for _ in range(3):
                assert (await client.call(name, "status", timeout=20)).exit_code == 0

            def counted() -> bool:
                rows = [line for line in lines if name in line]
                return bool(rows) and row(rows[-1], name)[2] == "3"

            await wait_until(counted, 30, "a frame with the 3 new runs")
        finally:
            viewer.send_signal(signal.SIGINT)
            code = await asyncio.to_thread(viewer.wait, 30)
            await reader
            assert viewer.stdout is not None and viewer.stderr is not None
            errors = viewer.stderr.read()
            viewer.stdout.close()
            viewer.stderr.close()
    assert code == 0, errors


def _read_all(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
