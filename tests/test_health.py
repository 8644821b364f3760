"""/healthz and /readyz of real workers: ready once consuming, unready while the broker is
down, ready again after it returns (on a throwaway RabbitMQ node, never the shared one)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from obskit import ThrowawayBroker, aget, free_port
from workerkit import (
    running_worker,
    settings_for,
    start_worker_process,
    stop_process,
    wait_until,
    write_extension,
)

pytestmark = pytest.mark.broker

ECHO = '#!/bin/sh\necho \'{"status":"success"}\'\n'


async def readyz(port: int) -> tuple[int, dict]:
    status, body = await aget(f"http://127.0.0.1:{port}/readyz")
    return status, orjson.loads(body) if body else {}


async def test_single_worker_health_paths(tmp_path: Path, amqp_url: str, unique: str):
    registry = tmp_path / "registry"
    write_extension(registry, unique, ECHO, hook="orchestrator", patterns=[])
    write_extension(registry, f"{unique}-off", ECHO, hook="orchestrator", spec={"enabled": False})
    settings = settings_for(
        amqp_url, registry, f"{unique}-ex", tmp_path, metrics_port=0, metrics_host="127.0.0.1"
    )
    async with running_worker(settings) as worker:
        port = worker.health.port
        assert port
        await wait_until(lambda: worker.health.probe.state.ready, 10, "ready")
        status, detail = await readyz(port)
        assert status == 200 and detail["broker"] == "connected"
        assert detail["extensions"] == {unique: "consuming"}, "disabled ones are not waited for"
        assert (await aget(f"http://127.0.0.1:{port}/healthz"))[0] == 200
        missing, text = await aget(f"http://127.0.0.1:{port}/nope")
        assert missing == 404 and b"/readyz" in text
        status, body = await aget(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and b"csext_worker_ready 1.0" in body
    assert (await aget(f"http://127.0.0.1:{port}/healthz", timeout=1))[0] == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_pool_unready_while_broker_down_and_ready_after(tmp_path: Path, unique: str):
    why = ThrowawayBroker.available()
    if why:
        pytest.skip(why)
    broker = ThrowawayBroker()
    registry = tmp_path / "registry"
    write_extension(registry, unique, ECHO, hook="orchestrator", patterns=[])
    port = free_port()
    pool = None
    try:
        broker.start()
        settings = settings_for(broker.url, registry, f"{unique}-ex", tmp_path)
        pool = start_worker_process(settings, processes=2, CSEXT_METRICS_PORT=str(port))

        async def status() -> int:
            return (await readyz(port))[0]

        await wait_until(lambda: _is(status, 200), 60, "ready")
        _, detail = await readyz(port)
        assert len(detail["children_ready"]) == 2 and all(detail["children_ready"].values())

        broker.ctl("stop_app")
        await wait_until(lambda: _is(status, 503), 30, "unready while the broker is down")
        assert (await aget(f"http://127.0.0.1:{port}/healthz"))[0] == 200, "still alive"
        _, detail = await readyz(port)
        assert not any(detail["children_ready"].values())

        broker.ctl("start_app")
        await wait_until(lambda: _is(status, 200), 90, "ready again after the broker returns")
        assert pool.poll() is None, "the pool never restarted a child for this"
    finally:
        if pool is not None:
            stop_process(pool)
        broker.stop()


async def _is(status, wanted: int) -> bool:
    return await status() == wanted
