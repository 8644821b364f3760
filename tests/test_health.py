"""/healthz and /readyz of real workers: ready once consuming, unready while the broker is
down, ready again after it returns (on a throwaway RabbitMQ node, never the shared one)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
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
    worker_env,
    write_extension,
)

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[1]

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


class NotifySocket:
    """systemd's side of sd_notify: a datagram socket that collects what the service says."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.said: list[str] = []

    def close(self) -> None:
        self.sock.close()

    def poll(self) -> list[str]:
        while True:
            try:
                self.said.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.said


async def test_in_process_worker_notifies_ready_then_stopping(
    tmp_path: Path, amqp_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
):
    registry = tmp_path / "registry"
    write_extension(registry, unique, ECHO, hook="orchestrator", patterns=[])
    systemd = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.path)
    settings = settings_for(amqp_url, registry, f"{unique}-ex", tmp_path)
    try:
        async with running_worker(settings) as worker:
            await wait_until(lambda: "READY=1" in systemd.poll(), 20, "READY=1")
            assert worker.health.probe.state.ready
        assert systemd.poll() == ["READY=1", "STOPPING=1"]
    finally:
        systemd.close()


async def test_pool_notifies_ready_only_when_every_child_is(
    tmp_path: Path, amqp_url: str, unique: str
):
    registry = tmp_path / "registry"
    write_extension(registry, unique, ECHO, hook="orchestrator", patterns=[])
    systemd = NotifySocket(tmp_path / "notify")
    port = free_port()
    settings = settings_for(amqp_url, registry, f"{unique}-ex", tmp_path)
    pool = start_worker_process(
        settings, processes=2, CSEXT_METRICS_PORT=str(port), NOTIFY_SOCKET=systemd.path
    )
    try:
        await wait_until(lambda: "READY=1" in systemd.poll(), 60, "READY=1 from the supervisor")
        status, detail = await readyz(port)
        assert status == 200 and len(detail["children_ready"]) == 2
    finally:
        assert stop_process(pool) == 0
        said = systemd.poll()
        systemd.close()
    assert said == ["READY=1", "STOPPING=1"], "children never talk to systemd"


def test_systemd_unit_verifies(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (REPO / "packaging" / "csext-worker.service").read_text()
    assert "Type=notify" in unit and "Delegate=yes" in unit
    assert "\nProtectControlGroups=yes" not in unit, "would break per-run cgroups"
    local = tmp_path / "csext-worker.service"
    local.write_text(
        unit.replace("/usr/local/bin/csext", str(Path(sys.executable).parent / "csext"))
    )
    done = subprocess.run(
        [analyze, "verify", str(local)], capture_output=True, text=True, timeout=60, check=False
    )
    problems = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if "csext-worker.service" in line and "User=" not in line
    ]
    assert not problems, problems


@pytest.mark.parametrize("processes", [1, 2])
def test_metrics_port_in_use_is_a_clear_error(tmp_path: Path, amqp_url: str, processes: int):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = settings_for(amqp_url, tmp_path / "registry", "unused-ex", tmp_path)
        env = worker_env(settings, CSEXT_METRICS_PORT=str(port), CSEXT_METRICS_HOST="127.0.0.1")
        done = subprocess.run(
            [sys.executable, "-m", "csext.cli", "worker", "--processes", str(processes)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert "CSEXT_METRICS_PORT" in done.stderr and "Traceback" not in done.stderr
