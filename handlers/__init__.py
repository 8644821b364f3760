"""One module per hook type; `get_handler` finds the one for an extension.

Registry: every module in this package that defines a module-level `HANDLER` (an object with
a `hook` attribute) is imported once, on first use, with `pkgutil.iter_modules`, and registered
under `HANDLER.hook`. Adding a hook type is adding one module here (plus its value in
`HookType`); nothing else lists the hooks. Hooks without a module get `GenericHandler`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from csext.schemas.manifest import HookType

from .base import GenericHandler, HookHandler, Interpretation

__all__ = ["HookHandler", "Interpretation", "all_handlers", "get_handler", "json_schemas"]

_HANDLERS: dict[HookType, HookHandler] = {}
_discovered = False


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name.startswith("_") or module_info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        handler = getattr(module, "HANDLER", None)
        if handler is not None:
            _HANDLERS[HookType(handler.hook)] = handler
    _discovered = True


def get_handler(hook: HookType) -> HookHandler:
    if _discovered:  # the per-message path: one dict lookup
        handler = _HANDLERS.get(hook)
        if handler is not None:
            return handler
    _discover()
    handler = _HANDLERS.get(hook)
    if handler is None:
        handler = _HANDLERS[hook] = GenericHandler(hook)
    return handler


def all_handlers() -> dict[HookType, HookHandler]:
    """Every hook type's handler, in HookType order."""
    return {hook: get_handler(hook) for hook in HookType}


def json_schemas(hook: HookType) -> dict[str, Any]:
    """JSON Schemas (draft 2020-12) of a hook's payload file and of its typed result."""
    handler = get_handler(hook)
    result = handler.result_model
    input_schema = handler.input_model.model_json_schema(by_alias=True)
    input_schema["$schema"] = SCHEMA_DIALECT
    input_schema.setdefault("title", f"{hook.value} input")
    output: dict[str, Any] | None = None
    if result is not None:
        output = result.model_json_schema(by_alias=True)
        output["$schema"] = SCHEMA_DIALECT
    return {"hook": hook.value, "input": input_schema, "result": output}


SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
