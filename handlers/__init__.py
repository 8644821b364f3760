"""One module per hook type; `get_handler` finds the one for an extension."""

from __future__ import annotations

from csext.schemas.manifest import HookType

from .base import GenericHandler, HookHandler, Interpretation

__all__ = ["HookHandler", "Interpretation", "get_handler"]

_HANDLERS: dict[HookType, HookHandler] = {}


def get_handler(hook: HookType) -> HookHandler:
    handler = _HANDLERS.get(hook)
    if handler is None:
        handler = _HANDLERS[hook] = GenericHandler(hook)
    return handler
