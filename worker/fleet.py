"""The worker's side of `csext fleet`: status answers, registry updates, one unavailable view.

Every message here arrives on the `csext.control` fanout, which every worker of the vhost
consumes (worker/reload.py), so one request reaches the whole fleet with no registry of
workers anywhere:

- `status-request`: each worker answers on the request's `reply_to` (direct reply-to) with
  its id, host, csext version, registry commit, enabled extensions and versions, runs in
  flight, uptime, and the state of its registry remote.
- `sync` {target, workers, canary}: the workers named (all when `workers` is null) fetch their
  registry remote, validate and switch to `target` (null: the branch tip), then answer with
  the result. A staged rollout is `sync` to a few workers, then to all (`csext fleet promote`),
  or back to the previous commit (`csext fleet rollback`).
- `registry-changed` (sent by every store change): a worker following a remote updates to the
  tip, then reloads; others just reload.

Unknown or disabled: calls to an extension with no consuming queue used to be answered by
whichever worker took them from `csext.rpc.unrouted`, from its own registry, so a worker with
another registry answered "unknown" for an extension that was only disabled. Now each worker
binds the names its registry has disabled (or invalid) to the shared `csext.rpc.disabled`
queue: the broker's bindings are the one view of the fleet. A call routed there is answered
"disabled" by any worker (with the reason when its registry has one); only a name that no
worker knows reaches the unrouted queue and is answered "unknown".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from csext.schemas.rpc import RpcReply
from csext.store.compat import csext_version
from csext.store.git import head
from csext.store.registry import RegistryView
from csext.store.secrets import load_secrets, secrets_path
from csext.worker.amqp import names as c
from csext.worker.amqp import topology
from csext.worker.amqp.records import WORKER_ID
from csext.worker.follow import RegistryFollower
from csext.worker.settings import Settings

log = logging.getLogger(__name__)

STATUS_REQUEST = "status-request"
SYNC = "sync"
REGISTRY_CHANGED = "registry-changed"


class FleetMember:
    """What one worker process tells and does for the fleet."""

    def __init__(
        self,
        settings: Settings,
        view: Callable[[], RegistryView],
        in_flight: Callable[[], int],
        reload: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._view = view
        self._in_flight = in_flight
        self._reload = reload
        self._started = time.monotonic()
        self.follower = (
            RegistryFollower(settings.registry_remote, settings.registry, self._secrets)
            if settings.registry_remote
            else None
        )
        self._channel: AbstractChannel | None = None
        self._disabled: AbstractQueue | None = None
        self._bound: set[str] = set()
        self._enabled: set[str] | None = None
        """Enabled names at the last `routes` (None before the first)."""

    def _secrets(self) -> dict[str, dict[str, str]]:
        """This host's extension secrets, for validating a commit before switching to it."""
        path = secrets_path(self._settings.secrets_file, self._settings.registry)
        return load_secrets(path)

    async def prepare(self) -> None:
        """Before the first registry load: clone or update the remote registry (if any)."""
        if self.follower is not None:
            await asyncio.to_thread(self.follower.prepare)

    # --- control messages -------------------------------------------------------------------

    async def on_control(self, message: AbstractIncomingMessage) -> bool:
        """Handle a control message; False when the watcher should reload as before."""
        try:
            body = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            log.warning("control message that is not JSON ignored")
            return True
        kind = body.get("event") if isinstance(body, dict) else None
        if kind == STATUS_REQUEST:
            await self._answer(message, await asyncio.to_thread(self.status))  # git: a thread
            return True
        if kind == SYNC:
            await self._on_sync(message, body)
            return True
        if kind == REGISTRY_CHANGED and self.follower is not None:
            await asyncio.to_thread(self.follower.sync, None, canary=False)
        return kind not in (None, REGISTRY_CHANGED)

    async def _on_sync(self, message: AbstractIncomingMessage, body: dict[str, Any]) -> None:
        workers = body.get("workers")
        if workers is not None and WORKER_ID not in workers:
            return
        if self.follower is None:
            result: dict[str, Any] = {
                "result": "failed",
                "commit": self.commit(),
                "error": "this worker does not follow a registry remote (--registry-remote)",
            }
        else:
            target = body.get("target") or None
            canary = bool(body.get("canary"))
            result = await asyncio.to_thread(self.follower.sync, target, canary=canary)
            if result["result"] == "switched":
                self._reload()
        await self._answer(message, {"worker": WORKER_ID, **result})

    async def _answer(self, request: AbstractIncomingMessage, body: dict[str, Any]) -> None:
        if not request.reply_to or self._channel is None:
            return
        reply = aio_pika.Message(
            orjson.dumps(body),
            content_type="application/json",
            correlation_id=request.correlation_id,
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
        )
        with contextlib.suppress(Exception):  # the asker may be gone: nothing to do
            await self._channel.default_exchange.publish(reply, request.reply_to)

    def commit(self) -> str | None:
        if self.follower is not None:
            return self.follower.state.commit
        try:
            return head(self._settings.registry)
        except Exception:  # not a Git repository, or no git: no commit to report
            return None

    def status(self) -> dict[str, Any]:
        view = self._view()
        follower = self.follower
        return {
            "worker": WORKER_ID,
            "host": socket.gethostname(),
            "version": csext_version(),
            "commit": self.commit(),
            "previous": follower.state.previous if follower else None,
            "canary": follower.state.canary if follower else False,
            "remote": self._settings.registry_remote,
            "update_error": follower.state.error if follower else None,
            "extensions": {ext.name: ext.version for ext in view.enabled()},
            "in_flight": self._in_flight(),
            "uptime": round(time.monotonic() - self._started, 1),
        }

    # --- one view of unavailable extensions -------------------------------------------------

    async def start(self, connection: AbstractRobustConnection) -> None:
        """Open the reply channel and consume `csext.rpc.disabled`."""
        self._channel = await connection.channel(publisher_confirms=False)
        await self._channel.set_qos(prefetch_count=64)
        self._disabled = await topology.declare_disabled_queue(self._channel, self._settings)
        await self._disabled.consume(self._on_disabled_call)

    async def routes(self, view: RegistryView) -> None:
        """Bind this registry's disabled and invalid names to csext.rpc.disabled; unbind the
        ones it bound before and no longer has (names it never bound are left to others)."""
        if self._disabled is None:
            return
        wanted = {n for n, e in view.extensions.items() if not e.enabled} | set(view.broken)
        enabled = {ext.name for ext in view.enabled()}
        # A name enabled since the last look (at start: every enabled name) may still carry a
        # binding from before (disabled while every worker was down): unbinding it here keeps
        # a call from being answered both by the extension and "disabled". Unbinding a
        # binding that does not exist is a no-op.
        stale = enabled - (self._enabled or set())
        queue = self._disabled
        # pipelined on the channel: a worker with 1,000 extensions starts without 1,000
        # sequential round trips
        await asyncio.gather(
            *(queue.bind(c.RPC_EXCHANGE, name) for name in sorted(wanted - self._bound)),
            *(queue.unbind(c.RPC_EXCHANGE, name) for name in sorted(stale)),
            *(queue.unbind(c.RPC_EXCHANGE, n) for n in sorted(self._bound - wanted - stale)),
        )
        self._bound, self._enabled = wanted, enabled

    async def _on_disabled_call(self, message: AbstractIncomingMessage) -> None:
        async with message.process(ignore_processed=True):
            name = message.routing_key or ""
            kind, text = self._view().why_unavailable(name)
            if kind == "unknown-extension":  # bound by a worker with another registry
                kind, text = "disabled", f"extension {name!r} is disabled in the fleet's registry"
            if message.reply_to and self._channel is not None:
                reply = aio_pika.Message(
                    orjson.dumps(RpcReply.failure(kind, text).model_dump(mode="json")),
                    content_type="application/json",
                    correlation_id=message.correlation_id,
                    delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
                )
                await self._channel.default_exchange.publish(reply, message.reply_to)


# --- reading the answers (`csext fleet`) ------------------------------------------------------


class FleetReport:
    """The fleet as its answers describe it: the commit most workers run, who differs."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.workers = sorted(answers, key=lambda a: str(a.get("worker")))
        counts: dict[str | None, int] = {}
        for answer in self.workers:
            counts[answer.get("commit")] = counts.get(answer.get("commit"), 0) + 1
        self.commit = max(counts, key=lambda k: counts[k]) if counts else None
        extensions = [answer.get("extensions") for answer in self.workers]
        self.same_extensions = all(e == extensions[0] for e in extensions)

    def differs(self, answer: dict[str, Any]) -> bool:
        return answer.get("commit") != self.commit

    @property
    def consistent(self) -> bool:
        """One commit and the same enabled extensions everywhere."""
        return (
            bool(self.workers)
            and self.same_extensions
            and not any(self.differs(a) for a in self.workers)
        )

    @property
    def canaries(self) -> list[dict[str, Any]]:
        return [a for a in self.workers if a.get("canary")]

    def promote_target(self) -> str:
        commits = {a.get("commit") for a in self.canaries}
        if not commits:
            raise ValueError("no canary rollout in progress: run `csext fleet sync --canary N`")
        if len(commits) > 1 or None in commits:
            raise ValueError(f"the canaries run different commits ({', '.join(map(str, commits))})")
        return str(commits.pop())

    def rollback_target(self) -> str:
        """The commit the latest rollout moved from: the canaries' previous one during a canary,
        else the previous one of the workers on the fleet's commit."""
        movers = self.canaries or [a for a in self.workers if not self.differs(a)]
        previous = {a.get("previous") for a in movers}
        if previous == {None} or not previous:
            raise ValueError("no previous commit to return to (no rollout has happened here)")
        if len(previous) > 1:
            raise ValueError(
                f"the workers came from different commits ({previous}); use sync --commit"
            )
        return str(previous.pop())
