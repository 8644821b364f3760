"""Shared fixtures. Broker tests talk to a real RabbitMQ on loopback.

`make test` starts one if none is reachable; CSEXT_TEST_AMQP_URL overrides the URL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

AMQP_URL = os.environ.get("CSEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture
def amqp_url() -> str:
    return AMQP_URL


@pytest.fixture
def unique() -> Iterator[str]:
    """A short unique token for queue, exchange and extension names in one test."""
    yield "t" + uuid.uuid4().hex[:10]
