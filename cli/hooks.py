"""CLI commands of the hook catalog: `csext schema` (registered into the main app by cli.py).

`csext schema HOOK` prints `{"hook", "input", "result"}`: the JSON Schemas of the payload file
a hook's extension reads and of the typed result csext derives from its output.
`csext schema --all --output DIR` writes `DIR/<hook>.input.json` and `DIR/<hook>.result.json`
for every hook (no result file for `event`: events have no caller).
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import typer

from csext.cli.context import EXIT_USAGE, fail
from csext.handlers import json_schemas
from csext.schemas.manifest import HOOK_NAMES, HookType, parse_hook

_HOOKS = HOOK_NAMES


def schema(
    hook: str | None = typer.Argument(
        None, help=f"One of: {_HOOKS} (or CloudStack's spelling, e.g. Orchestrator)."
    ),
    all_hooks: bool = typer.Option(False, "--all", help="Every hook."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="With --all: write one file per hook and part into DIR."
    ),
) -> None:
    """Print the JSON Schema of a hook's input (payload file) and result."""
    if all_hooks:
        _write_all(output)
        return
    if hook is None:
        fail(
            "give a hook or --all", f"e.g. csext schema orchestrator (hooks: {_HOOKS})", EXIT_USAGE
        )
    try:
        hook_type = parse_hook(hook)
    except ValueError as exc:
        fail(str(exc), "csext schema --all prints every hook's schemas", EXIT_USAGE)
    sys.stdout.write(_dumps(json_schemas(hook_type)))


def _write_all(output: Path | None) -> None:
    if output is None:
        sys.stdout.write(_dumps({h.value: json_schemas(h) for h in HookType}))
        return
    output.mkdir(parents=True, exist_ok=True)
    for hook in HookType:
        schemas = json_schemas(hook)
        for part in ("input", "result"):
            if schemas[part] is not None:
                path = output / f"{hook.value}.{part}.json"
                path.write_text(_dumps(schemas[part]), encoding="utf-8")
                typer.echo(str(path))


def _dumps(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main `csext` app."""
    app.command("schema")(schema)
