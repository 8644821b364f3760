"""A throwaway RabbitMQ node for scenarios that must not touch the shared broker (alarms).

Started the way scripts/bench-broker.sh and scripts/cluster.sh start theirs: the Debian
package's `rabbitmq-server` as the rabbitmq user (its Erlang cookie, so `rabbitmqctl -n` works),
with its own name, free AMQP and distribution ports, and data under a temporary folder that is
removed after `stop`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def available() -> str | None:
    """Why a node cannot be started here, or None."""
    if os.geteuid() != 0:
        return "needs root (to start rabbitmq-server as the rabbitmq user)"
    if not Path(SERVER).exists() or shutil.which("rabbitmqctl") is None:
        return f"{SERVER} / rabbitmqctl not installed"
    return None


class Node:
    def __init__(self) -> None:
        self.name = f"csext-t{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="csext-node-"))
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        for sub in ("mnesia", "log"):
            (self.base / sub).mkdir()
        (self.base / "plugins").write_text("[].")
        (self.base / "rabbitmq.conf").write_text("")
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.base)], check=True)
        env = {
            **os.environ,
            "HOME": "/var/lib/rabbitmq",
            "RABBITMQ_NODENAME": self.name,
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
                ["setpriv", "--reuid", "rabbitmq", "--regid", "rabbitmq", "--init-groups", SERVER],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                self.ctl("await_startup")
                return
            except OSError:
                time.sleep(0.5)
        output = (self.base / "server.out").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"RabbitMQ node {self.name} did not start:\n{output}")

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """`rabbitmqctl -n <this node> ...`; its stdout (CalledProcessError on failure)."""
        done = subprocess.run(
            ["rabbitmqctl", "-q", "-n", self.name, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return done.stdout

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self.ctl("stop", timeout=60)
                self._proc.wait(30)
            except (subprocess.SubprocessError, OSError):
                os.killpg(self._proc.pid, 9)
                self._proc.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)
