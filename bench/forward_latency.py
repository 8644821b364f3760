"""Wall time of a no-op `csext forward` call, next to `python -c pass` from the same interpreter.

Starts a real worker (in a child process) with one extension, `noop`, whose entry point is
`/bin/true`, then runs `csext forward --extension noop status <payload> 60` N times as
CloudStack would (a new process each time) and prints p50/p99. Also times the part that is
csext's own start-up: `csext forward --help` (no broker) and `python -c pass`.

usage: .venv/bin/python -m bench.forward_latency [--runs 50] [--amqp-url URL]
(`python -m bench` runs it as benchmark 6.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika
import yaml

from .stats import percentile

CSEXT = Path(sys.executable).parent / "csext"


def timed(argv: list[str], runs: int, env: dict[str, str], check: bool = True) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True)
        samples.append((time.perf_counter() - start) * 1000)
        if check and done.returncode != 0:
            raise SystemExit(f"{argv} failed: {done.stdout!r} {done.stderr!r}")
    return samples


def report(label: str, samples: list[float]) -> None:
    print(
        f"{label:<44} p50 {statistics.median(samples):7.1f} ms   "
        f"p99 {percentile(samples, 99):7.1f} ms   (n={len(samples)})"
    )


def write_registry(root: Path, name: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    manifest = {
        "apiVersion": "csext/v1",
        "kind": "Extension",
        "metadata": {"name": name, "version": "1.0.0"},
        "spec": {"hook": "orchestrator", "entrypoint": "run"},
    }
    (folder / "extension.yaml").write_text(yaml.safe_dump(manifest))
    (folder / "run").write_text("#!/bin/sh\necho PowerOn\n")
    (folder / "run").chmod(0o755)


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(CSEXT), "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wait_ready(argv: list[str], env: dict[str, str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(argv, env=env, capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    raise SystemExit("the worker did not answer within 30 s")


def measure(amqp_url: str, runs: int, show: bool = True) -> dict[str, list[float]]:
    """Samples (ms) by label: the worker's no-op call beside python -c pass and start-up."""
    name = "bench-noop-" + uuid.uuid4().hex[:8]
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_registry(root / "registry", name)
        payload = root / "payload.json"
        payload.write_text(json.dumps({"virtualmachinename": "i-2-4-VM"}))
        config = root / "csext.yaml"
        config.write_text(f"amqp_url: {amqp_url}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
        env.update(
            {
                "CSEXT_CONFIG": str(config),
                "CSEXT_REGISTRY": str(root / "registry"),
                "CSEXT_CLOUDSTACK_EXCHANGE": name,
            }
        )
        call = [str(CSEXT), "forward", "--extension", name, "status", str(payload), "60"]
        worker = start_worker(env)
        try:
            wait_ready(call, env)
            plan = [
                ("python -c pass", [sys.executable, "-c", "pass"], runs),
                ("csext forward --help (start-up only)", [str(CSEXT), "forward", "--help"], runs),
                (
                    "csext --help (typer path, for contrast)",
                    [str(CSEXT), "--help"],
                    max(3, runs // 5),
                ),
                ("csext forward: no-op call via the worker", call, runs),
            ]
            for label, argv, count in plan:
                results[label] = timed(argv, count, env)
                if show:
                    report(label, results[label])
        finally:
            worker.terminate()
            worker.wait(30)
            asyncio.run(cleanup(amqp_url, [name], name))
    return results


async def cleanup(amqp_url: str, names: list[str], exchange: str) -> None:
    """Remove the extensions' queues and the exchange the worker declared for this run."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            for queue in (f"csext.ext.{name}.events", f"csext.ext.{name}.rpc"):
                await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("CSEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    args = parser.parse_args()
    measure(args.amqp_url, args.runs)


if __name__ == "__main__":
    main()
