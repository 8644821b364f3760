"""Helpers for the observability tests: free ports, HTTP GETs, reading Prometheus text."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

Samples = list[tuple[str, dict[str, str], float]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body); (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


async def aget(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    return await asyncio.to_thread(get, url, timeout)


async def scrape(port: int) -> Samples:
    status, body = await aget(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, f"/metrics answered {status}"
    found: Samples = []
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found.append((sample.name, dict(sample.labels), sample.value))
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(
        v
        for n, have, v in samples
        if n == name and all(have.get(k) == w for k, w in labels.items())
    )


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


class ThrowawayBroker:
    """A RabbitMQ node of its own on free ports, for tests that stop the broker (never the
    shared one on 5672): started like scripts/bench-broker.sh, deleted afterwards."""

    def __init__(self) -> None:
        self.port, self.dist_port = free_port(), free_port()
        self.node = f"csext-health-{os.getpid()}-{self.port}@localhost"
        self.base = Path(f"/tmp/csext-health-{os.getpid()}-{self.port}")
        """Not pytest's tmp_path: the rabbitmq user must be able to reach it."""
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @staticmethod
    def available() -> str | None:
        """Why it cannot run here, or None."""
        if os.geteuid() != 0:
            return "starting a RabbitMQ node needs root (it runs as the rabbitmq user)"
        if not Path(RABBITMQ_SERVER).exists() or shutil.which("rabbitmqctl") is None:
            return "rabbitmq-server is not installed"
        return None

    def start(self, timeout: float = 90.0) -> None:
        for sub in ("mnesia", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "plugins").write_text("[].")
        (self.base / "rabbitmq.conf").write_text("")
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.base)], check=True)
        env = {
            **os.environ,
            "HOME": "/var/lib/rabbitmq",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.base / "mnesia" / "feature_flags"),
            "RABBITMQ_PID_FILE": str(self.base / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq"),
        }
        with open(self.base / "server.out", "wb") as out:
            self._proc = subprocess.Popen(
                [
                    "setpriv",
                    "--reuid",
                    "rabbitmq",
                    "--regid",
                    "rabbitmq",
                    "--init-groups",
                    RABBITMQ_SERVER,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.listening():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"test broker did not start; see {self.base}/server.out")
            time.sleep(0.25)

    def listening(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def ctl(self, *args: str) -> None:
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            check=True,
            capture_output=True,
            timeout=120,
            env={**os.environ, "HOME": "/var/lib/rabbitmq"},
        )

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.ctl("stop")
        with contextlib.suppress(Exception):
            os.killpg(self._proc.pid, 9)
        with contextlib.suppress(Exception):
            self._proc.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)


RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
