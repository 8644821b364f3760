"""`/metrics`, `/healthz` and `/readyz` on `CSEXT_METRICS_PORT`, and systemd's sd_notify.

The server is the standard library's `ThreadingHTTPServer` in a daemon thread, as
prometheus_client's own `start_http_server` does, plus the two health paths (not a second web
framework): a scrape never waits for the worker's event loop, and a busy loop never delays a
scrape or a probe.

- `/healthz`: 200 while the process answers (liveness).
- `/metrics`: at most a second behind the runs (worker/metrics.py keeps per-run figures in
  plain Python and flushes them from the event loop every second).
- `/readyz`: 200 when connected to RabbitMQ and consuming every enabled extension's queues,
  else 503; the body is JSON saying what is missing. A single worker publishes its state from
  its event loop (`ReadinessProbe`, every second and at once on a lost connection); under a
  supervisor every child publishes it in the shared multiprocess metrics, and the supervisor
  is ready only when all its children are (`PoolHealth`).
- sd_notify: `READY=1` once ready for the first time, `STOPPING=1` on the way out, written to
  `$NOTIFY_SOCKET` (systemd's own variable, read here and nowhere else) as one datagram.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aio_pika.abc import AbstractChannel
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from csext.schemas.errors import ConfigError
from csext.worker import metrics
from csext.worker.amqp import names as c
from csext.worker.runtimes.execution import run_limits

if TYPE_CHECKING:
    from csext.worker.app import Worker

log = logging.getLogger(__name__)

PROBE_INTERVAL = 1.0
"""Seconds between readiness checks of a worker (a lost connection is noticed at once too)."""
DEAD_QUEUE_INTERVAL = 15.0
"""Seconds between reads of csext.dead's depth (a passive declare)."""
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    detail: dict[str, Any] = field(default_factory=dict)


NOT_STARTED = Readiness(False, {"ready": False, "reason": "starting"})


class HealthServer:
    """Serves a registry's metrics and a readiness function over HTTP, in a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        readiness: Callable[[], Readiness],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        handler = _handler(readiness, registry)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
                fix="set CSEXT_METRICS_PORT to a free port (or CSEXT_METRICS_HOST to an "
                "address of this host), or unset it to turn metrics off",
            ) from None
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="csext-metrics", daemon=True
        )

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("metrics and health on http://%s:%s/metrics", *self._server.server_address[:2])
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(
    readiness: Callable[[], Readiness], registry: CollectorRegistry
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n", "text/plain")
            elif path == "/readyz":
                state = readiness()
                body = orjson.dumps(state.detail, option=orjson.OPT_APPEND_NEWLINE)
                self._send(200 if state.ready else 503, body, "application/json")
            else:
                self._send(404, b"try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes every few seconds are not worth a log line each."""

    return Handler


def sd_notify(state: str) -> bool:
    """Tell systemd `state` (e.g. `READY=1`) when run as a Type=notify service."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", state, exc)
        return False
    return True


# --- one worker ------------------------------------------------------------------------------


def worker_readiness(worker: Worker) -> Readiness:
    """Connected, and consuming every enabled extension's queues."""
    connection = worker.connection
    connected = connection is not None and connection.connected.is_set()
    wanted = sorted(ext.name for ext in worker.view.enabled())
    extensions = {}
    for name in wanted:
        consumer = worker.consumers.get(name)
        extensions[name] = "consuming" if consumer and consumer.consuming else "not consuming"
    consuming = sum(1 for state in extensions.values() if state == "consuming")
    ready = worker.started.is_set() and connected and consuming == len(wanted)
    detail = {
        "ready": ready,
        "broker": "connected" if connected else "disconnected",
        "extensions": extensions,
    }
    return Readiness(ready, detail)


class ReadinessProbe:
    """Keeps a worker's readiness (and its gauges) current; runs on the worker's loop."""

    def __init__(self, worker: Worker, *, notify: bool) -> None:
        self._worker = worker
        self._notify = notify
        self.state = NOT_STARTED
        """The last state computed; read by the HTTP thread (one atomic attribute read)."""
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._notified = False
        self._next_dead_check = 0.0
        self._channel: AbstractChannel | None = None
        self._view: object = None

    def start(self) -> None:
        connection = self._worker.connection
        if connection is not None:
            connection.close_callbacks.add(self._connection_lost)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _connection_lost(self, *_args: Any) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                self.refresh()
                await self._dead_queue_depth()
            except Exception:  # the probe must outlive any one failure, or readiness freezes
                log.exception("readiness probe failed; trying again in %gs", PROBE_INTERVAL)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), PROBE_INTERVAL)

    def refresh(self) -> Readiness:
        if self._worker.metrics is not None:
            self._worker.metrics.flush()
        state = self.state = worker_readiness(self._worker)
        metrics.READY.set(1 if state.ready else 0)
        metrics.BROKER_CONNECTED.set(1 if state.detail["broker"] == "connected" else 0)
        extensions = state.detail["extensions"]
        metrics.EXTENSIONS_ENABLED.set(len(extensions))
        metrics.EXTENSIONS_CONSUMING.set(
            sum(1 for value in extensions.values() if value == "consuming")
        )
        self._timeouts()
        if state.ready and self._notify and not self._notified:
            self._notified = sd_notify("READY=1")
        return state

    def _timeouts(self) -> None:
        """`csext_extension_timeout_seconds`, set again when the registry view changes."""
        view = self._worker.view
        if view is self._view:
            return
        self._view = view
        for ext in view.enabled():
            metrics.EXTENSION_TIMEOUT.labels(ext.name).set(run_limits(ext).timeout)

    async def _dead_queue_depth(self) -> None:
        """csext.dead's depth: a passive declare on a channel of its own (on the aiormq
        channel: a robust channel would remember every declare to replay it on reconnect)."""
        connection = self._worker.connection
        if time.monotonic() < self._next_dead_check or self._worker.metrics is None:
            return
        if connection is None or not connection.connected.is_set():
            return
        self._next_dead_check = time.monotonic() + DEAD_QUEUE_INTERVAL
        try:
            async with asyncio.timeout(PROBE_INTERVAL * 2):  # never hold up readiness
                if self._channel is None or self._channel.is_closed:
                    self._channel = await connection.channel()
                underlay = await self._channel.get_underlay_channel()
                declared = await underlay.queue_declare(c.DEAD_LETTER_QUEUE, passive=True)
        except Exception as exc:  # broker away: the probe says so; this waits for next time
            log.debug("could not read the depth of %s: %s", c.DEAD_LETTER_QUEUE, exc)
            self._channel = None
            return
        metrics.DEAD_LETTER_QUEUE.set(declared.message_count or 0)

    async def stop(self) -> None:
        self.state = Readiness(False, {"ready": False, "reason": "stopping"})
        metrics.READY.set(0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()


class WorkerHealth:
    """What a worker process adds for observability: the HTTP server (unless supervised),
    the readiness probe, and the registry commit it loaded."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._settings = worker.settings
        self.probe = ReadinessProbe(worker, notify=True)
        self._server: HealthServer | None = None
        self._registry = metrics.RegistryState()

    def serve(self) -> None:
        """Listen now, before connecting: /healthz answers and /readyz says "starting"."""
        settings = self._settings
        if settings.metrics_port is not None and settings.metrics_dir is None:
            self._server = HealthServer(
                settings.metrics_host, settings.metrics_port, lambda: self.probe.state
            ).start()

    @property
    def port(self) -> int | None:
        return self._server.port if self._server is not None else None

    def started(self) -> None:
        self.probe.start()

    async def registry_loaded(self) -> None:
        commit = await asyncio.to_thread(_registry_commit, self._settings.registry)
        self._registry.loaded(commit)

    async def stopping(self) -> None:
        await self.probe.stop()
        sd_notify("STOPPING=1")

    def close(self) -> None:
        """After the last run: the final tallies reach the metrics (a pool's supervisor keeps
        serving them), then the port closes."""
        if self._worker.metrics is not None:
            self._worker.metrics.flush()
        if self._server is not None:
            self._server.close()
            self._server = None


def _registry_commit(registry: Path) -> str | None:
    from csext.store.git import head

    try:
        return head(registry)
    except Exception:  # not a Git repository, or no git: the info metric says "none"
        return None


# --- a supervised pool -----------------------------------------------------------------------


class PoolHealth:
    """Metrics and readiness of `csext worker --processes N`.

    The children write their metrics to one prometheus_client multiprocess directory (private
    to this pool, removed at exit); the supervisor serves the merged view and is ready when it
    has N live children that each report `csext_worker_ready 1`.
    """

    def __init__(self, host: str, port: int | None, processes: int, env: dict[str, str]) -> None:
        env.pop("CSEXT_METRICS_PORT", None)  # only the supervisor listens
        env.pop("NOTIFY_SOCKET", None)  # only the supervisor talks to systemd
        self._processes = processes
        self._dir: Path | None = None
        self._server: HealthServer | None = None
        self._children: Callable[[], list[int]] = list
        self._registry = CollectorRegistry()
        if port is not None:
            # Listen before any child starts: a port in use is an error at once, not later.
            self._server = HealthServer(host, port, self.readiness, self._registry)
            self._dir = Path(tempfile.mkdtemp(prefix="csext-metrics-"))
            env[MULTIPROC_ENV] = str(self._dir)
            env["CSEXT_METRICS_DIR"] = str(self._dir)

    def start(self, children: Callable[[], list[int]]) -> None:
        self._children = children
        if self._dir is None or self._server is None:
            sd_notify("READY=1")  # no metrics, no readiness to wait for
            return
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(self._registry, path=str(self._dir))  # type: ignore[no-untyped-call]
        self._server.start()
        threading.Thread(target=self._notify_when_ready, name="csext-notify", daemon=True).start()

    def readiness(self) -> Readiness:
        pids = self._children()
        ready_pids = self._ready_pids()
        children = {str(pid): pid in ready_pids for pid in pids}
        ready = len(pids) == self._processes and all(children.values())
        detail = {"ready": ready, "processes": self._processes, "children_ready": children}
        return Readiness(ready, detail)

    def _ready_pids(self) -> set[int]:
        found: set[int] = set()
        for family in self._registry.collect():
            if family.name != "csext_worker_ready":
                continue
            for sample in family.samples:
                if sample.value == 1 and sample.labels.get("pid", "").isdigit():
                    found.add(int(sample.labels["pid"]))
        return found

    def _notify_when_ready(self) -> None:
        while not self.readiness().ready:
            time.sleep(0.2)
        sd_notify("READY=1")

    def child_exited(self, pid: int) -> None:
        if self._dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, str(self._dir))  # type: ignore[no-untyped-call]

    def close(self) -> None:
        sd_notify("STOPPING=1")
        if self._server is not None:
            self._server.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
