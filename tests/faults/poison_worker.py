"""A real `csext worker` process with one test-only fault injected (never in production code).

Events whose body holds `"poison":"raise"` crash the event path with an exception; events with
`"poison":"exit"` kill the worker process outright. Every time, on every worker: the poison
message of scenario 5.
"""

from __future__ import annotations

import os
from typing import Any

from csext.cli.app import app
from csext.worker import events

_original = events.EventDelivery._process


async def _poisoned(self: Any, ext: Any, message: Any, attempts: Any) -> None:
    if b'"poison":"raise"' in message.body:
        raise RuntimeError("injected crash of the event path")
    if b'"poison":"exit"' in message.body:
        os._exit(70)
    await _original(self, ext, message, attempts)


events.EventDelivery._process = _poisoned  # type: ignore[method-assign]

if __name__ == "__main__":
    app()
