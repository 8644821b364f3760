"""The `event` hook: CloudStack's event bus → one run per event, ack / retry / dead-letter.

Besides the handler, this module answers the two questions the worker asks about event
extensions: which routing-key patterns to bind (`binding_patterns`) and whether an event that
arrived passes the filters a routing key cannot express (`accepts`).

Bindings. With `spec.events.patterns` given, those are the bindings. Otherwise the filters'
categories x types x resource types x resource UUIDs become patterns
`management-server.<category>.<type>.<resourceType>.<uuid>`, each part escaped as CloudStack
escapes it (`.` → `-`) and `*` where a filter is empty. State and phase filters imply category
ResourceStateEvent. Neither patterns nor filters: no binding (the extension gets nothing).
Past `MAX_PATTERNS` combinations the most specific parts are widened to `*`, and `accepts`
keeps the result exact. `accepts` always checks every filter, so patterns and filters combine
as "and".

Payload. `body` is CloudStack's body exactly as parsed from its JSON (serialised by plain Gson,
framework/events/.../Event.java): no text in it is unescaped or rewritten, and AsyncJobEvent's
nested `jobResult` / `cmdInfo` objects stay objects (ApiServer.handleAsyncJobPublishEvent,
server/src/main/java/com/cloud/api/ApiServer.java @02182a1). `phase` is set for VirtualMachine
state events only: the other state listeners send no pre/post `status`
(server/.../storage/listener/VolumeStateListener.java @0d3489e), which is why the manifest
refuses a phase filter that could match them (schemas/manifest.py, EventBinding).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from csext.schemas.errors import summarize_validation_error
from csext.schemas.event import CATEGORIES, escape_part
from csext.schemas.hooks.common import EventFilters, FailurePolicy, HookResult, Meaning
from csext.schemas.hooks.event import BODY_MODELS, EventInput, ResourceStateEventBody
from csext.schemas.manifest import HookType, Spec
from csext.schemas.run import RunResult

from .base import HookDefaults, TypedHandler, failed

log = logging.getLogger(__name__)

SOURCE = "management-server"
MAX_PATTERNS = 32
PHASES = {"preStateTransitionEvent": "pre", "postStateTransitionEvent": "post"}


class EventHandler(TypedHandler):
    hook = HookType.EVENT
    # A failed event is retried with backoff, then dead-lettered (DESIGN §4); codes listed in
    # `spec.exitCodes.failure` are permanent and dead-lettered at once.
    defaults = HookDefaults(
        timeout=30.0,
        attempts=5,
        failure_policies=(FailurePolicy.ERROR,),
        unlisted=Meaning.RETRY,
    )
    input_model = EventInput
    result_model = None

    def payload_bytes(self, action: str, payload: Any, spec: Spec) -> bytes:
        if action not in CATEGORIES and not _is_event(payload):
            # An RPC action of an event extension (e.g. hello's `greet`): passed through.
            return orjson.dumps(payload)
        fast = _normalised_fast(payload)
        if fast is not None:
            return orjson.dumps(fast)
        return orjson.dumps(normalise(payload).model_dump(mode="json"))

    def check_action(self, action: str) -> str:
        return action  # the category, passed verbatim

    def unlisted(self, action: str) -> Meaning:
        # Events retry; an RPC action of an event extension (hello's `greet`) just fails.
        return self.defaults.unlisted if action in CATEGORIES else Meaning.FAILURE

    def parse(self, action: str, meaning: Meaning, run: RunResult, payload: Any) -> HookResult:
        if meaning != Meaning.SUCCESS:
            raise failed(meaning, run)
        return HookResult()


def _is_event(payload: Any) -> bool:
    return isinstance(payload, Mapping) and "routing_key" in payload


def normalise(event: Any) -> EventInput:
    """A CloudStackEvent dict → the payload file model. ValueError if it is not one."""
    if not isinstance(event, Mapping) or not isinstance(event.get("body", {}), Mapping):
        raise ValueError(
            "event payload must be an object with routing_key, category, ... and a `body` "
            "object (CloudStackEvent.model_dump())"
        )
    body = dict(event.get("body") or {})  # as parsed: CloudStack's text is never rewritten
    category = event.get("category")
    model = BODY_MODELS.get(str(category))
    try:
        typed = model.model_validate(body) if model else None
    except ValidationError as error:
        raise ValueError(
            f"event does not fit: {summarize_validation_error(error, prefix='body')}"
        ) from None
    try:
        state = None
        if isinstance(typed, ResourceStateEventBody):
            state = (typed.old_state, typed.new_state, typed.status)
        fields = _normalised_fields(event, body, state)
        return EventInput.model_validate({**event, **fields, "body": body})
    except ValidationError as error:
        raise ValueError(f"event does not fit: {summarize_validation_error(error)}") from None


_KEY_FIELDS = ("source", "category", "type", "resource_type", "resource_uuid")
_EVENT_KEYS = frozenset(("routing_key", *_KEY_FIELDS, "body"))


def _normalised_fast(event: Any) -> dict[str, Any] | None:
    """`normalise(event).model_dump(mode="json")` without pydantic, for the shape the event
    path builds (`event_fields`) with a body of strings only, as CloudStack sends; None for
    anything else (the model path then validates it and words the error). Validating the
    body model and the payload model, then dumping it, was ~50 µs of every event.
    """
    if type(event) is not dict or event.keys() - _EVENT_KEYS:
        return None
    raw, key = event.get("body") or {}, event.get("routing_key")
    if type(raw) is not dict or type(key) is not str:
        return None
    if any(type(event.get(f)) not in (str, type(None)) for f in _KEY_FIELDS):
        return None
    if any(type(v) is not str for v in raw.values()):
        return None  # numbers, lists, objects: the model coerces or rejects them
    body = raw
    state = None
    if event.get("category") == "ResourceStateEvent":
        old, new = (
            _aliased(body, "old-state", "old_state"),
            _aliased(body, "new-state", "new_state"),
        )
        state = (old, new, body.get("status"))
    return {
        "routing_key": key,
        **{f: event.get(f) for f in _KEY_FIELDS},
        **_normalised_fields(event, body, state),
        "body": body,
    }


def _aliased(body: dict[str, str], alias: str, name: str) -> str | None:
    """The model's reading of a field: its alias wins, its name is accepted too."""
    return body[alias] if alias in body else body.get(name)


def _normalised_fields(
    event: Mapping[str, Any], body: dict[str, Any], state: tuple[Any, Any, Any] | None
) -> dict[str, Any]:
    """The normalised fields, as strings, in `EventInput`'s field order; `state` is the
    (old state, new state, status) of a ResourceStateEvent body, None for other categories."""
    old, new, transition = state or (None, None, None)
    fields: dict[str, Any] = {
        "event": body.get("event") or body.get("commandEventType") or event.get("type"),
        "resource_id": body.get("id")
        or body.get("entityuuid")
        or body.get("instanceUuid")
        or event.get("resource_uuid"),
        "old_state": old,
        "new_state": new,
        "phase": PHASES.get(transition or "") if state else None,
        "status": body.get("status"),
        "event_date_time": body.get("eventDateTime"),
    }
    return {key: None if value is None else str(value) for key, value in fields.items()}


# --- bindings and filters --------------------------------------------------------------------


def binding_patterns(spec: Spec) -> list[str]:
    """The narrowest topic patterns that cover the manifest's filters (see module docstring)."""
    if spec.events.patterns:
        return list(dict.fromkeys(spec.events.patterns))
    filters = spec.events.filters
    if filters.empty:
        return []
    parts = _pattern_parts(filters)
    while _count(parts) > MAX_PATTERNS:
        widest = max(range(4), key=lambda i: (len(parts[i]) > 1, i))
        parts[widest] = ["*"]
    combos = itertools.product([SOURCE], *parts)
    return list(dict.fromkeys(".".join(combo) for combo in combos))


def _pattern_parts(filters: EventFilters) -> list[list[str]]:
    categories = list(filters.categories)
    if not categories and (filters.old_states or filters.new_states or filters.phase):
        categories = ["ResourceStateEvent"]
    return [
        _escaped(categories),
        _escaped(filters.types),
        _escaped(filters.resource_types),
        _escaped(filters.resource_uuids),
    ]


def _escaped(values: list[str]) -> list[str]:
    return list(dict.fromkeys(escape_part(v) for v in values)) or ["*"]


def _count(parts: list[list[str]]) -> int:
    total = 1
    for part in parts:
        total *= len(part)
    return total


def accepts(event: Mapping[str, Any], spec: Spec) -> bool:
    """Whether an event passes every filter of the manifest (routing-level ones included)."""
    filters = spec.events.filters
    if filters.empty:
        return True
    body = event.get("body") or {}
    return _routing_ok(event, filters) and _body_ok(body, filters)


def _routing_ok(event: Mapping[str, Any], filters: EventFilters) -> bool:
    checks = (
        (filters.categories, event.get("category")),
        (filters.types, event.get("type")),
        (filters.resource_types, event.get("resource_type")),
        (filters.resource_uuids, event.get("resource_uuid")),
    )
    for wanted, value in checks:
        if wanted and escape_part(str(value or "")) not in {escape_part(w) for w in wanted}:
            return False
    return True


def _body_ok(body: Mapping[str, Any], filters: EventFilters) -> bool:
    checks = (
        (filters.old_states, body.get("old-state")),
        (filters.new_states, body.get("new-state")),
        (filters.statuses, body.get("status")),
    )
    for wanted, value in checks:
        if wanted and str(value or "").lower() not in {w.lower() for w in wanted}:
            return False
    if filters.phase and PHASES.get(str(body.get("status"))) != filters.phase:
        return False
    return all(str(body.get(key)) == value for key, value in filters.body.items())


HANDLER = EventHandler()
