"""The worker process: connect, declare, consume every enabled extension, reload, shut down.

Shutdown follows uvicorn/arq: stop consuming, let running extensions finish within the grace
period, cancel the rest (their deliveries are requeued by the broker when the channel closes),
close channels, then the connection. A second signal kills every running process group at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from csext.schemas.errors import BrokerUnavailable, ConfigError
from csext.store.compat import csext_version
from csext.store.registry import Extension, RegistryView, load_registry
from csext.store.secrets import load_secrets, secrets_path
from csext.worker.amqp import names as c
from csext.worker.amqp import topology
from csext.worker.amqp.connection_log import ConnectionLog
from csext.worker.amqp.consumers import ExtensionConsumer, recovery_delay
from csext.worker.amqp.deadletter import DeadLetterPublisher
from csext.worker.amqp.delivery import DirectConsumer
from csext.worker.amqp.failover import FailoverConnection, rotated
from csext.worker.amqp.pressure import watch_blocked
from csext.worker.amqp.records import WORKER_ID, RunRecorder
from csext.worker.events import EventDelivery
from csext.worker.fleet import FleetMember
from csext.worker.health import WorkerHealth
from csext.worker.metrics import RunMetrics, publish_blocked
from csext.worker.reload import RegistryWatcher
from csext.worker.rpc import RpcDelivery
from csext.worker.runtimes.choice import Runtimes
from csext.worker.runtimes.execution import Executor
from csext.worker.runtimes.runner import ExecRunner, install_child_watcher
from csext.worker.settings import Settings

log = logging.getLogger(__name__)

RECONNECT_INTERVAL = 1.0
"""Seconds between reconnect attempts after a lost connection (the first one is immediate, to
the next node of a cluster)."""
CONNECT_ATTEMPT_TIMEOUT = 10.0
"""Seconds one connection attempt may take before the next node is tried."""


class Worker:
    def __init__(self, settings: Settings, *, handle_signals: bool = True) -> None:
        self.settings = settings
        self._handle_signals = handle_signals
        self.runner = ExecRunner(
            run_dir=settings.run_dir,
            output_cap=settings.output_cap,
            kill_grace=settings.kill_grace,
            cgroups=settings.run_cgroups,
        )
        self.runtimes = Runtimes(settings, self.runner)
        self.metrics = RunMetrics() if settings.metrics_enabled else None
        if self.metrics is not None:
            self.runner.spawn_observer = self.metrics.spawn_observer()
        self.view = RegistryView(settings.registry, {}, {})
        self.consumers: dict[str, ExtensionConsumer] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.started = asyncio.Event()
        self._stop = asyncio.Event()
        self._signals = 0
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustConnection | None = None
        """Run records, replies and dead letters go out on this one (see `start`)."""
        self._watcher: RegistryWatcher | None = None
        self.fleet: FleetMember | None = None
        self._connection_log: ConnectionLog | None = None
        self.recorder: RunRecorder | None = None
        self._reconcile_lock = asyncio.Lock()
        self._retries = 0
        """Reconciles in a row that left an extension failing (for the retry backoff)."""
        self._retry: asyncio.TimerHandle | None = None
        self.health = WorkerHealth(self)

    @property
    def connection(self) -> AbstractRobustConnection | None:
        return self._connection

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT (or `request_stop`), then shut down cleanly."""
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.shutdown()

    def request_stop(self) -> None:
        self._stop.set()

    async def start(self) -> None:
        self.health.serve()
        install_child_watcher()
        stale = self.runner.cleanup_stale()
        if stale:
            log.info("removed %d stale run directories", stale)
        self._connection = await self._connect()
        self._connection_log = ConnectionLog(self.settings.safe_amqp_url, self._queue_consumers)
        self._connection_log.watch(self._connection)
        # Publishing on a connection of its own: a memory or disk alarm blocks connections
        # that publish (RabbitMQ stops reading them), and acks must keep flowing meanwhile.
        self._publisher = await self._connect(" publishing")
        await self._build_paths(self._connection, self._publisher)
        watch_blocked(self._publisher, self._on_blocked)
        if self._handle_signals:
            self._install_signals()
        self.fleet = FleetMember(
            self.settings, lambda: self.view, self._in_flight, self.schedule_reload
        )
        await self.fleet.prepare()
        await self.fleet.start(self._publisher)  # it publishes answers: never on the acking one
        await self.reconcile()
        self._watcher = RegistryWatcher(
            self.settings, self._connection, self.schedule_reload, self.fleet.on_control
        )
        await self._watcher.start()
        await self._consume_unrouted(self._connection)
        self.started.set()
        self.health.started()
        log.info(
            "worker started",
            extra={
                "registry": str(self.settings.registry),
                "broker": self.settings.safe_amqp_url,
                "extensions": len(self.consumers),
                "version": csext_version(),
            },
        )

    def _queue_consumers(self) -> list[DirectConsumer]:
        return [queue for ext in self.consumers.values() for queue in ext.consumers]

    def _on_blocked(self, blocked: bool, reason: str) -> None:
        """connection.blocked / unblocked on the publishing connection (worker/amqp/pressure.py)."""
        publish_blocked(blocked)
        if self.recorder is not None:
            if blocked:
                self.recorder.pause(reason)
            else:
                self.recorder.resume()

    async def _connect(self, role: str = "") -> AbstractRobustConnection:
        """Connect, retrying while the broker is not up yet (e.g. both just started); with
        several URLs (a cluster), each attempt starts at the next node, and a connection lost
        later reconnects to the next node too (worker/amqp/failover.py)."""
        urls = self.settings.amqp_urls
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(self.settings.connect_timeout),
                wait=wait_exponential(multiplier=0.5, max=5),
                retry=retry_if_exception_type(CONNECTION_EXCEPTIONS),
                before_sleep=_log_connect_retry(self.settings.safe_amqp_url),
                reraise=True,
            ):
                with attempt:
                    start = attempt.retry_state.attempt_number - 1
                    connection = FailoverConnection(
                        rotated(urls, start),
                        client_properties={"connection_name": f"csext {WORKER_ID}{role}"},
                        reconnect_interval=RECONNECT_INTERVAL,
                    )
                    await connection.connect(timeout=CONNECT_ATTEMPT_TIMEOUT)
                    return connection
        except CONNECTION_EXCEPTIONS as exc:
            raise BrokerUnavailable(
                f"cannot reach RabbitMQ at {self.settings.safe_amqp_url} after "
                f"{self.settings.connect_timeout:g}s: {exc}"
            ) from None
        raise AssertionError("unreachable")

    async def _build_paths(
        self, connection: AbstractRobustConnection, publisher: AbstractRobustConnection
    ) -> None:
        admin = await connection.channel()
        await topology.declare_base(admin, self.settings)
        confirmed = await publisher.channel(publisher_confirms=True)
        dlx = await confirmed.get_exchange(c.DEAD_LETTER_EXCHANGE, ensure=False)
        fast = await publisher.channel(publisher_confirms=False)
        runs = await fast.get_exchange(c.RUNS_EXCHANGE, ensure=False)
        self.recorder = RunRecorder(
            runs,
            flush_interval=self.settings.runs_flush_interval,
            log_successes=self.settings.log_successful_runs,
        )
        executor = Executor(self.settings, self.runtimes, self.recorder, self.metrics)
        dead_letters = DeadLetterPublisher(dlx)
        self.events = EventDelivery(executor, dead_letters)
        self.rpc = RpcDelivery(
            executor, fast.default_exchange, dead_letters, self.settings.rpc_margin
        )

    async def _consume_unrouted(self, connection: AbstractRobustConnection) -> None:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=64)
        queue = await topology.declare_unrouted_queue(channel, self.settings)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await self.rpc.handle_unrouted(lambda: self.view, message)

        self._unrouted = (queue, await queue.consume(on_message))

    # --- registry -------------------------------------------------------------------------

    def schedule_reload(self) -> None:
        task = asyncio.create_task(self.reconcile())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def reconcile(self) -> None:
        """Make consumers match the registry: add, update, remove; never drop a message."""
        async with self._reconcile_lock:
            view = await asyncio.to_thread(load_registry, self.settings.registry, self._secrets())
            self.view = view
            await self._fleet_routes(view)
            await self.health.registry_loaded()
            wanted = {ext.name: ext for ext in view.enabled()}
            failed: list[str] = []
            for name in sorted(set(self.consumers) - set(wanted)):
                consumer = self.consumers.pop(name)
                log.info("extension %s stopped", name)
                try:
                    await consumer.remove(self.settings.shutdown_grace)
                except Exception:
                    log.exception("extension %s: could not stop cleanly", name)
                await self.runtimes.forget(name)
            for name, ext in wanted.items():
                try:
                    await self._add_or_update(name, ext)
                except Exception as exc:  # one extension must not keep the others from consuming
                    failed.append(name)
                    log.error("extension %s could not start consuming: %s", name, exc)
            self._retry_failed(failed)

    def _in_flight(self) -> int:
        return sum(1 for task in self.tasks if not task.done())

    async def _fleet_routes(self, view: RegistryView) -> None:
        """Publish this registry's disabled names to the fleet's view (worker/fleet.py)."""
        if self.fleet is None:
            return
        try:
            await self.fleet.routes(view)
        except Exception as exc:  # the broker's view lags; consuming must go on
            log.warning("could not update the disabled-extension bindings: %s", exc)

    def _retry_failed(self, failed: list[str]) -> None:
        """Reconcile again later while an extension fails to start (broker trouble, a queue
        held by someone else): never give up silently on an enabled extension."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if not failed:
            self._retries = 0
            return
        delay = recovery_delay(self._retries)
        self._retries += 1
        log.warning("retrying %s in %gs", ", ".join(failed), delay)
        self._retry = asyncio.get_running_loop().call_later(delay, self.schedule_reload)

    def _secrets(self) -> dict[str, dict[str, str]]:
        """Secret values by extension; a bad secrets file disables only what needs it."""
        try:
            path = secrets_path(self.settings.secrets_file, self.settings.registry)
            return load_secrets(path)
        except ConfigError as exc:
            log.error("secrets not loaded, extensions that need them stay disabled: %s", exc)
            return {}

    async def _add_or_update(self, name: str, ext: Extension) -> None:
        consumer = self.consumers.get(name)
        if consumer is None:
            assert self._connection is not None
            consumer = ExtensionConsumer(ext, self.settings, self.tasks)
            try:
                await consumer.start(self._connection, self.events.handle, self.rpc.handle)
            except BaseException:
                with contextlib.suppress(Exception):
                    await consumer.stop_consuming()
                    await consumer.close()
                raise
            self.consumers[name] = consumer
            log.info("extension %s consuming", name, extra={"version": ext.version})
        elif consumer.ext.manifest != ext.manifest or consumer.ext.entrypoint != ext.entrypoint:
            await consumer.update(ext)
            await self.runtimes.forget(name)
            log.info("extension %s updated", name, extra={"version": ext.version})

    # --- signals and shutdown ---------------------------------------------------------------

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self.schedule_reload)

    def _on_stop_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("stopping: finishing running extensions (signal again to kill them)")
            self._stop.set()
            return
        log.warning("second signal: killing running extensions now")
        self.runner.kill_all()
        for task in list(self.tasks):
            task.cancel()

    async def shutdown(self) -> None:
        if self._connection_log is not None:
            self._connection_log.close()  # closing on purpose: no "connection lost"
        await self.health.stopping()
        if self._retry is not None:
            self._retry.cancel()
        if self._watcher is not None:
            await self._watcher.stop()
        for consumer in self.consumers.values():
            await consumer.stop_consuming()
        if getattr(self, "_unrouted", None):
            queue, tag = self._unrouted
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        if getattr(self, "events", None) is not None:
            self.events.release_held()  # events a circuit breaker holds go back at once
        await self._drain()
        await self.runtimes.aclose()
        if self.recorder is not None:
            await self.recorder.aclose()
        if self._publisher is not None:
            await self._publisher.close()
        if self._connection is not None:
            await self._connection.close()
        self.health.close()
        log.info("worker stopped")

    async def _drain(self) -> None:
        pending = {t for t in self.tasks if not t.done()}
        if pending:
            log.info("waiting for %d running extensions", len(pending))
            _, pending = await asyncio.wait(pending, timeout=self.settings.shutdown_grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=self.settings.kill_grace + 5)


def _log_connect_retry(url: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        log.warning("cannot reach RabbitMQ at %s (%s); retrying in %.1fs", url, error, wait)

    return before_sleep
