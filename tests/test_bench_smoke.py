"""`python -m bench --smoke` runs every benchmark end to end at a tiny size.

Only that it completes and reports each benchmark: never a timing (benchmarks are not tests).
Peers that are not installed (the bench extra) are skipped by the suite with a reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    url = os.environ.get("CSEXT_TEST_AMQP_URL")
    if url:
        env["CSEXT_TEST_AMQP_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(400)
def test_smoke_run_completes_and_reports_every_benchmark(tmp_path: Path) -> None:
    listed = _bench("--list", timeout=60)
    assert listed.returncode == 0, listed.stderr
    benchmarks = [line.split("\t") for line in listed.stdout.splitlines()]
    assert len(benchmarks) >= 8
    report = tmp_path / "report.md"
    done = _bench("--smoke", "--output", str(report), timeout=380)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for key, title in benchmarks:
        assert f"== {title} [{key}]" in done.stdout, f"{key} did not run"
        assert title in report.read_text()
    assert "benchmarks done" in done.stdout
    assert (
        not (ROOT / "BENCHMARKS.md").exists()
        or "--smoke" not in (ROOT / "BENCHMARKS.md").read_text()
    ), "a smoke run must not overwrite the real report"


@pytest.mark.timeout(200)
@pytest.mark.parametrize(("runtime", "path"), [("exec", "events"), ("coprocess", "rpc")])
def test_profile_harness_drains_and_reports(runtime: str, path: str, amqp_url: str) -> None:
    """`python -m bench.profile`, how the optimisation log was measured, still runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench.profile", runtime, path),
            *("--count", "30", "--repeats", "1", "--amqp-url", amqp_url),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    kind = "events" if path == "events" else "calls"
    assert f"{runtime} {kind}: 30, " in done.stdout and "µs worker CPU each" in done.stdout
