"""One extension's consumers: its channel, queues, bindings and in-flight runs.

Each extension gets its own channel so that its prefetch (= its concurrency) and its backlog
never hold back another extension. Reconciling a new manifest updates bindings and limits in
place; removing an extension cancels its consumers and lets in-flight runs finish.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from csext.store.registry import Extension
from csext.worker.amqp import names as c
from csext.worker.amqp import topology
from csext.worker.amqp.bindings import event_patterns
from csext.worker.amqp.delivery import Delivery, DirectConsumer
from csext.worker.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[Extension, Delivery], Awaitable[None]]
RECOVERY_DELAYS = (0.5, 1, 2, 5, 10, 30)
"""Seconds between attempts to consume an extension queue again (then every 30 s)."""


def recovery_delay(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (0-based) of a failed consume."""
    return RECOVERY_DELAYS[min(attempt, len(RECOVERY_DELAYS) - 1)]


class ExtensionConsumer:
    def __init__(self, ext: Extension, settings: Settings, tasks: set[asyncio.Task[None]]) -> None:
        self.ext = ext
        self._settings = settings
        self._tasks = tasks
        self._own_tasks: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(ext.spec.concurrency)
        self._channel: AbstractChannel | None = None
        self._events: AbstractQueue | None = None
        self._rpc: AbstractQueue | None = None
        self._consumers: list[DirectConsumer] = []
        self._patterns: set[str] = set()
        self._stopping = False

    @property
    def consuming(self) -> bool:
        """Both queues subscribed on an open channel (readiness, worker/health.py)."""
        return len(self._consumers) == 2 and all(c.consuming for c in self._consumers)

    async def start(
        self, connection: AbstractConnection, on_event: Handler, on_call: Handler
    ) -> None:
        self._channel = channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.ext.spec.effective_prefetch)
        self._rpc = await topology.declare_rpc_queue(channel, self.ext.name, self._settings)
        self._events = await topology.declare_events_queue(channel, self.ext.name, self._settings)
        await self._bind_events(set(event_patterns(self.ext.spec)))
        for queue, handler in ((self._events, on_event), (self._rpc, on_call)):
            consumer = DirectConsumer(channel, queue.name, self._wrap(handler), self._recover)
            await consumer.start()
            self._consumers.append(consumer)
        await self._rpc.bind(c.RPC_EXCHANGE, self.ext.name)

    @property
    def consumers(self) -> tuple[DirectConsumer, ...]:
        """Its queue consumers (events, RPC) once started."""
        return tuple(self._consumers)

    def _wrap(self, handler: Handler) -> Callable[[Delivery], Awaitable[None]]:
        async def on_message(message: Delivery) -> None:
            # A task of our own: the consumer's task belongs to the channel, and a run must
            # not be cancelled when the channel closes (the broker redelivers, the run ends).
            task = asyncio.create_task(self._limited(handler, message))
            for registry in (self._tasks, self._own_tasks):
                registry.add(task)
                task.add_done_callback(registry.discard)

        return on_message

    async def _limited(self, handler: Handler, message: Delivery) -> None:
        async with self._limit:
            await handler(self.ext, message)

    def _recover(self, consumer: DirectConsumer) -> None:
        """The broker cancelled a consumer (its queue was deleted): declare it again, consume."""
        task = asyncio.create_task(self._redeclare(consumer))
        self._own_tasks.add(task)
        task.add_done_callback(self._own_tasks.discard)

    async def _redeclare(self, consumer: DirectConsumer) -> None:
        for attempt in itertools.count():
            if self._stopping or self._channel is None:
                return
            try:
                if consumer.queue == c.rpc_queue(self.ext.name):
                    await topology.declare_rpc_queue(self._channel, self.ext.name, self._settings)
                    assert self._rpc is not None
                    await self._rpc.bind(c.RPC_EXCHANGE, self.ext.name)
                else:
                    await topology.declare_events_queue(
                        self._channel, self.ext.name, self._settings
                    )
                    wanted, self._patterns = self._patterns, set()
                    await self._bind_events(wanted)
                await consumer.resubscribe()
                log.info("consuming %s again", consumer.queue)
                return
            except Exception as exc:
                delay = recovery_delay(attempt)
                log.warning(
                    "cannot consume %s yet (%s); retrying in %gs", consumer.queue, exc, delay
                )
                await asyncio.sleep(delay)

    async def _bind_events(self, wanted: set[str]) -> None:
        assert self._events is not None
        exchange = self._settings.cloudstack_exchange
        for pattern in sorted(wanted - self._patterns):
            await self._events.bind(exchange, pattern)
        for pattern in sorted(self._patterns - wanted):
            await self._events.unbind(exchange, pattern)
        self._patterns = wanted

    async def update(self, ext: Extension) -> None:
        """Apply a changed manifest; runs already started keep the old one."""
        old, self.ext = self.ext, ext
        await self._bind_events(set(event_patterns(ext.spec)))
        if ext.spec.concurrency != old.spec.concurrency:
            self._limit = asyncio.Semaphore(ext.spec.concurrency)
        prefetch = ext.spec.effective_prefetch
        if prefetch != old.spec.effective_prefetch and self._channel is not None:
            # RabbitMQ applies basic.qos to consumers started after it, not to running ones:
            # consume again (deliveries already held stay on the channel and are settled).
            await self._channel.set_qos(prefetch_count=prefetch)
            for consumer in self._consumers:
                await consumer.restart()

    async def stop_consuming(self) -> None:
        self._stopping = True
        for consumer in self._consumers:
            try:
                await consumer.cancel()
            except Exception:
                log.warning("could not stop consuming %s", consumer.queue, exc_info=True)
        self._consumers.clear()

    async def remove(self, grace: float) -> None:
        """Disabled or removed: stop routing to it, stop consuming, let in-flight runs finish."""
        if self._rpc is not None:
            await self._rpc.unbind(c.RPC_EXCHANGE, self.ext.name)
        if self._events is not None:
            await self._bind_events(set())
        await self.stop_consuming()
        await self.drain(grace)
        await self.close()

    async def drain(self, grace: float) -> None:
        if self._own_tasks:
            await asyncio.wait(set(self._own_tasks), timeout=grace)

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
