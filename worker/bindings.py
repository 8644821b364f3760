"""Which CloudStack events an extension receives: broker bindings plus in-worker filters.

The hook catalog (csext.handlers.event) turns the manifest's filters into the narrowest routing
key patterns; what routing keys cannot express (states, pre/post) is filtered here.
"""

from __future__ import annotations

from csext.schemas.event import CloudStackEvent
from csext.schemas.manifest import Spec

try:  # TEMPORARY until the hook catalog lands
    from csext.handlers.event import accepts, binding_patterns
except ImportError:  # pragma: no cover

    def binding_patterns(spec: Spec) -> list[str]:
        return list(spec.events.patterns)

    def accepts(event: dict, spec: Spec) -> bool:  # type: ignore[type-arg]
        return True


def event_patterns(spec: Spec) -> list[str]:
    return binding_patterns(spec)


def event_accepts(event: CloudStackEvent, spec: Spec) -> bool:
    return accepts(event.model_dump(), spec)
