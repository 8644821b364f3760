"""Helpers for the observability tests: free ports, HTTP GETs, reading Prometheus text."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request

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
