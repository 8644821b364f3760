"""Shared fixtures. Broker tests talk to a real RabbitMQ on loopback.

`make test` starts one if none is reachable; CSEXT_TEST_AMQP_URL overrides the URL. Otherwise,
where `rabbitmqctl` works (root on the broker's machine, as in CI), the session gets a vhost of
its own, so the shared queues (csext.dead, csext.rpc.unrouted) and any other csext worker on the
same broker (a developer's `make run`) cannot interfere with the tests; it is deleted at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _rabbitmqctl(*args: str) -> bool:
    command = shutil.which("rabbitmqctl")
    if command is None:
        return False
    try:
        result = subprocess.run(
            [command, "-q", *args], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    explicit = os.environ.get("CSEXT_TEST_AMQP_URL")
    if explicit:
        yield explicit
        return
    vhost = f"csext-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    if not (
        _rabbitmqctl("add_vhost", vhost)
        and _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    ):
        yield DEFAULT_URL
        return
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def unique() -> Iterator[str]:
    """A short unique token for queue, exchange and extension names in one test."""
    yield "t" + uuid.uuid4().hex[:10]
