"""Every broker name csext uses, in one place.

Names an operator may need to change (above all CloudStack's exchange) are also settings;
the values here are the defaults and the fixed parts of the topology.
"""

from __future__ import annotations

from typing import Final

CLOUDSTACK_EXCHANGE: Final = "cloudstack-events"
"""CloudStack's event bus exchange (topic, durable); the name comes from its Spring config."""

CLOUDSTACK_SOURCE: Final = "management-server"
"""First part of every CloudStack routing key."""

RPC_EXCHANGE: Final = "csext.rpc"
"""Direct exchange; routing key = extension name."""

RPC_UNROUTED_EXCHANGE: Final = "csext.rpc.unrouted"
"""Alternate exchange of csext.rpc: calls to unknown or disabled extensions land here."""

RPC_UNROUTED_QUEUE: Final = "csext.rpc.unrouted"
"""Every worker answers calls in this queue at once with a clear error."""

RPC_DISABLED_QUEUE: Final = "csext.rpc.disabled"
"""Bound to csext.rpc with the name of every extension some worker's registry has disabled
or invalid: the fleet's one view of "disabled" (worker/fleet.py); any worker answers it."""

RUNS_EXCHANGE: Final = "csext.runs"
"""Topic exchange for run records; routing key `<extension>.<outcome>`."""

RUNS_LOG_QUEUE: Final = "csext.runs.log"
"""Stream queue bound to csext.runs: a bounded history of run records (`csext runs`)."""

CONTROL_EXCHANGE: Final = "csext.control"
"""Fanout exchange: 'registry changed' broadcasts that make workers reload."""

DEAD_LETTER_EXCHANGE: Final = "csext.dlx"
"""Topic exchange receiving dead letters, from the worker and from queue delivery limits."""

DEAD_LETTER_QUEUE: Final = "csext.dead"

QUEUE_PREFIX: Final = "csext.ext."


def events_queue(extension: str) -> str:
    """Durable quorum queue holding one extension's CloudStack events."""
    return f"{QUEUE_PREFIX}{extension}.events"


def rpc_queue(extension: str) -> str:
    """Durable queue holding one extension's RPC calls."""
    return f"{QUEUE_PREFIX}{extension}.rpc"


DIRECT_REPLY_TO: Final = "amq.rabbitmq.reply-to"

# Message headers (AMQP table keys).
HEADER_DEADLINE: Final = "x-csext-deadline"
"""RPC: absolute deadline, epoch milliseconds."""
HEADER_DELIVERY_COUNT: Final = "x-delivery-count"
"""Set by quorum queues on redelivered messages."""
HEADER_REASON: Final = "x-csext-reason"
HEADER_DETAIL: Final = "x-csext-detail"
HEADER_ATTEMPTS: Final = "x-csext-attempts"
HEADER_EXIT_CODE: Final = "x-csext-exit-code"
HEADER_STDERR_TAIL: Final = "x-csext-stderr-tail"
HEADER_EXTENSION: Final = "x-csext-extension"
HEADER_ORIGINAL_EXCHANGE: Final = "x-csext-original-exchange"
HEADER_ORIGINAL_ROUTING_KEY: Final = "x-csext-original-routing-key"
HEADER_ORIGINAL_QUEUE: Final = "x-csext-original-queue"
HEADER_REPLAYED: Final = "x-csext-replayed"
"""How often `csext dead replay` put this message back (kept across replays)."""
HEADER_DEAD_AT: Final = "x-csext-dead-at"
"""When the worker dead-lettered the message, epoch ms (`csext dead purge --older-than`)."""

DEFAULT_DELIVERY_LIMIT: Final = 5
"""Quorum queue delivery limit: a message that keeps crashing workers is dead-lettered."""
