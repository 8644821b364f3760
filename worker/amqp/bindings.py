"""Which CloudStack events an extension receives: broker bindings plus in-worker filters.

The hook catalog (csext.handlers.event) turns the manifest's filters into the narrowest routing
key patterns; what routing keys cannot express (states, pre/post) is filtered here.
"""

from __future__ import annotations

from csext.handlers.event import accepts, binding_patterns
from csext.schemas.event import CloudStackEvent
from csext.schemas.manifest import Spec


def event_patterns(spec: Spec) -> list[str]:
    return binding_patterns(spec)


def event_accepts(event: CloudStackEvent, spec: Spec) -> bool:
    return accepts(event.model_dump(), spec)
