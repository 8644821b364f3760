"""The nameko echo service of the RPC benchmark (`nameko run bench.peers_nameko`)."""

from __future__ import annotations

import os
from typing import Any

from nameko.rpc import rpc


class Echo:
    name = os.environ.get("BENCH_NAMEKO_SERVICE", "bench_echo")

    @rpc  # type: ignore[misc]
    def echo(self, payload: Any) -> Any:
        return payload
