"""Logging set-up, done once by the CLI: JSON lines (orjson) when stderr is not a terminal.

At INFO the RabbitMQ client libraries are silent: the worker reports its connection's state
itself, once per change (worker/amqp/connection_log.py); `--log-level DEBUG` shows theirs too.

Context travels in `extra` (extension, run_id, outcome...), never in the message text, so log
processors can index it.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {
            k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
        }
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


LIBRARIES = ("aio_pika", "aiormq")
"""Their lines for an expected disconnect (a dozen callback errors and tracebacks) say what
csext.worker.connection says in three plain ones; kept out above DEBUG."""
LIBRARY_ATTEMPTS = "aio_pika.robust_connection"
"""Let through at WARNING: the connection log reads (and rewords) its failed-attempt lines."""


def configure_logging(level: str = "INFO", json: bool | None = None) -> None:
    use_json = (not sys.stderr.isatty()) if json is None else json
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if use_json
        else TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet = logging.DEBUG if root.level <= logging.DEBUG else logging.CRITICAL
    for library in LIBRARIES:
        logging.getLogger(library).setLevel(quiet)
    logging.getLogger(LIBRARY_ATTEMPTS).setLevel(min(quiet, logging.WARNING))
