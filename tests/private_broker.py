"""A throwaway RabbitMQ node of the test's own, for tests that stop and restart a broker.

The shared broker on 5672 serves every other test (and other sessions on this machine), so a
test that needs an outage starts a second node on free ports, under a state directory of its
own, exactly as scripts/bench-broker.sh starts the benchmark node, and stops it at the end.
Needs root (the node runs as the `rabbitmq` user) and the Debian rabbitmq-server package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
START_TIMEOUT = 120.0


def available() -> tuple[bool, str]:
    """Whether a private node can be started here, and why not."""
    if os.geteuid() != 0:
        return False, "needs root (the node runs as the rabbitmq user)"
    if not SERVER.exists() or shutil.which("rabbitmqctl") is None:
        return False, "rabbitmq-server is not installed"
    return True, ""


@dataclass(frozen=True)
class PrivateBroker:
    node: str
    port: int
    base: Path

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return done.stdout

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        wait_for_port(self.port, START_TIMEOUT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")
        time.sleep(0.25)


@contextmanager
def private_broker() -> Iterator[PrivateBroker]:
    """Start a node on free ports; yield it; stop it and delete its state."""
    base = Path(tempfile.mkdtemp(prefix="csext-private-broker-"))
    port, dist = free_port(), free_port()
    broker = PrivateBroker(f"csext-test-{os.getpid()}-{port}@localhost", port, base)
    for sub in ("mnesia", "log"):
        (base / sub).mkdir()
    (base / "plugins").write_text("[].\n")
    (base / "rabbitmq.conf").write_text("")
    shutil.chown(base, "rabbitmq", "rabbitmq")
    for path in base.rglob("*"):
        shutil.chown(path, "rabbitmq", "rabbitmq")
    env = {
        **os.environ,
        "HOME": "/var/lib/rabbitmq",
        "RABBITMQ_NODENAME": broker.node,
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_FEATURE_FLAGS_FILE": str(base / "mnesia" / "feature_flags"),
        "RABBITMQ_PID_FILE": str(base / "pid"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "plugins"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
    }
    command = ["setpriv", "--reuid", "rabbitmq", "--regid", "rabbitmq", "--init-groups"]
    with open(base / "server.out", "wb") as out:
        server = subprocess.Popen(
            [*command, str(SERVER)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for_port(port, START_TIMEOUT)
        yield broker
    finally:
        try:
            broker.ctl("stop", timeout=60)
            server.wait(60)
        except (subprocess.SubprocessError, OSError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)  # the node's own process group
            server.wait(30)
        shutil.rmtree(base, ignore_errors=True)
