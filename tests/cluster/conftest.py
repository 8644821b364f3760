"""A local three-node RabbitMQ cluster for the scenarios of this folder (scripts/cluster.sh).

The session starts the cluster (about 40 s on this machine) unless one already answers on the
cluster's ports (`make cluster`), and stops it at the end only if it started it.
CSEXT_TEST_CLUSTER_URLS (comma-separated) points the tests at another cluster instead; the
node stop/start steps then need `rabbitmqctl -n <node>` to reach its nodes by the names in
CSEXT_TEST_CLUSTER_NODES. Without root or RabbitMQ's server on this machine, the tests skip.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cluster.sh"
PORT0 = 5680
NODES = ("csext-c1@localhost", "csext-c2@localhost", "csext-c3@localhost")


@dataclass(frozen=True)
class Cluster:
    urls: tuple[str, ...]
    nodes: tuple[str, ...]

    @property
    def url_list(self) -> str:
        """All nodes, comma-separated: what a worker's amqp_url takes."""
        return ",".join(self.urls)

    def urls_from(self, index: int) -> str:
        """All nodes, node `index` first (each worker of a fleet prefers its own node)."""
        order = [*self.urls[index:], *self.urls[:index]]
        return ",".join(order)

    def ctl(self, node: int, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            ["rabbitmqctl", "-q", "-n", self.nodes[node], *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return result.stdout

    def stop_app(self, node: int) -> None:
        self.ctl(node, "stop_app")

    def start_app(self, node: int) -> None:
        self.ctl(node, "start_app")
        self.ctl(node, "await_startup")

    def queue_info(self, queue: str, ask: int = 0) -> dict[str, object]:
        """`leader` and `members` of a quorum queue, as node `ask` sees them."""
        rows = json.loads(
            self.ctl(ask, "list_queues", "name", "type", "leader", "members", "--formatter", "json")
        )
        for row in rows:
            if row.get("name") == queue:
                return dict(row)
        raise LookupError(f"queue {queue} not found on {self.nodes[ask]}")

    def node_index(self, node_name: str) -> int:
        return self.nodes.index(node_name)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _script(*args: str) -> None:
    subprocess.run(["bash", str(SCRIPT), *args], check=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    explicit = os.environ.get("CSEXT_TEST_CLUSTER_URLS")
    if explicit:
        nodes = os.environ.get("CSEXT_TEST_CLUSTER_NODES", ",".join(NODES)).split(",")
        yield Cluster(tuple(explicit.split(",")), tuple(nodes))
        return
    if os.geteuid() != 0 or not shutil.which("rabbitmqctl"):
        pytest.skip("a local cluster needs root and RabbitMQ's server (scripts/cluster.sh)")
    if not os.path.exists("/usr/lib/rabbitmq/bin/rabbitmq-server"):
        pytest.skip("RabbitMQ's server is not installed (scripts/ensure-rabbitmq.sh)")
    urls = tuple(f"amqp://guest:guest@127.0.0.1:{PORT0 + n}/" for n in (1, 2, 3))
    running = all(_listening(PORT0 + n) for n in (1, 2, 3))
    if not running:
        _script("start")
    try:
        yield Cluster(urls, NODES)
    finally:
        if not running:
            _script("stop")
