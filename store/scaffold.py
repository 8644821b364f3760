"""`csext new`: a working extension for a hook type, ready to fill in.

What it writes into `<registry>/<name>/`:

- `<name>.sh` or `<name>.py`: an executable entry point following CloudStack's argv contract
  (`<entry> <action> <payload-file> <timeout>`) with one branch per action of the hook, each
  answering what the hook expects, with comments on what to fill in;
- `extension.yaml` (disabled until `csext enable`), README.md, CHANGELOG.md;
- `tests/<action>.yaml` cases with payloads in `tests/payloads/`, which pass unmodified.

The per-hook knowledge (actions, sample payloads, answers) is the table in scaffold_hooks.py.
"""

from __future__ import annotations

import json
import shutil
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from csext.schemas.errors import CsextError, ManifestError
from csext.schemas.manifest import HookType, Runtime

from . import scaffold_coprocess as coprocess
from .compat import csext_version
from .ops import Change, Store, StoreError, check_loadable, check_name, commit, locked
from .scaffold_hooks import HOOKS, Action, HookTemplate


class Language(StrEnum):
    BASH = "bash"
    PYTHON = "python"


SUFFIX = {Language.BASH: ".sh", Language.PYTHON: ".py"}


def new(
    store: Store,
    name: str,
    hook: HookType,
    lang: Language = Language.BASH,
    runtime: Runtime = Runtime.EXEC,
) -> Change:
    """Scaffold, check it loads, commit `new <name>: <hook> extension (<lang>[, coprocess])`."""
    check_name(name)
    with locked(store):
        folder = store.root / name
        if folder.exists():
            raise StoreError(
                f"{folder} already exists: pick another name or csext remove {name} first"
            )
        try:
            write_extension(folder, name, hook, lang, runtime)
            check_loadable(store, folder)
        except (CsextError, OSError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            detail = "; ".join(exc.problems) if isinstance(exc, ManifestError) else str(exc)
            raise StoreError(f"scaffolding {name} failed: {detail}") from exc
        form = lang.value if runtime is Runtime.EXEC else f"{lang.value}, {runtime.value}"
        message = f"new {name}: {hook.value} extension ({form})"
        change = commit(store, name, "new", message)
    return change


def write_extension(
    folder: Path, name: str, hook: HookType, lang: Language, runtime: Runtime = Runtime.EXEC
) -> list[Path]:
    template = HOOKS[hook]
    entry = f"{name}{SUFFIX[lang]}"
    warm = runtime is Runtime.COPROCESS
    render = render_bash if lang is Language.BASH else render_python
    files = {
        entry: render(name, hook, template, warm),
        "extension.yaml": render_manifest(name, hook, template, entry, runtime),
        "README.md": render_readme(name, hook, template, entry, runtime),
        "CHANGELOG.md": "# Changelog\n\n## 0.1.0\n\n- First version, scaffolded by `csext new`.\n",
    }
    if warm and lang is Language.PYTHON:
        files[coprocess.SDK_NAME] = coprocess.sdk_text()
    for action in template.actions:
        files.update(render_case(action))
    folder.mkdir(parents=True)
    written = []
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    (folder / entry).chmod(0o755)
    return written


def compatible_range() -> str:
    """`>=<this major.minor>,<<next major>` (for 0.x: `<1.0`)."""
    parts = [*csext_version().split("."), "0", "0"][:2]
    major = int(parts[0]) if parts[0].isdigit() else 0
    minor = int(parts[1]) if parts[1].isdigit() else 0
    return f">={major}.{minor},<{major + 1}.0"


def render_manifest(
    name: str, hook: HookType, template: HookTemplate, entry: str, runtime: Runtime = Runtime.EXEC
) -> str:
    actions = [n for action in template.actions for n in action.names]
    lines = [
        f"# {name}: a csext {hook.value} extension. Fields: docs/store.md",
        "apiVersion: csext/v1",
        "kind: Extension",
        "metadata:",
        f"  name: {name}",
        f"  displayName: {json.dumps(name.replace('-', ' ').replace('_', ' ').title())}",
        f"  description: {json.dumps(template.summary)}",
        "  version: 0.1.0",
        '  author: ""            # you <you@example.org>',
        "  license: Apache-2.0",
        f"  tags: [{hook.value}]",
        "spec:",
        f"  hook: {hook.value}",
        f"  entrypoint: {entry}",
        f"  runtime: {runtime.value}"
        + ("           # or coprocess: docs/coprocess.md" if runtime is Runtime.EXEC else ""),
        f"  actions: {json.dumps(actions)}",
        f"  timeout: {template.timeout:g}",
        "  enabled: false         # when it works: csext enable " + name,
        "  env: {}                # plain settings, e.g. {API_URL: https://...}",
        "  secrets: []            # names only; values: csext secret set " + name + " NAME",
        "  compatibility:",
        f"    csext: {json.dumps(compatible_range())}",
    ]
    lines += [f"  {line}" for line in template.manifest_extra]
    return "\n".join(lines) + "\n"


def render_readme(
    name: str, hook: HookType, template: HookTemplate, entry: str, runtime: Runtime = Runtime.EXEC
) -> str:
    actions = "\n".join(
        f"- `{'`, `'.join(a.names)}`: {a.todo.replace(chr(10), ' ')}" for a in template.actions
    )
    first = template.actions[0]
    return f"""# {name}

{template.summary}

A csext `{hook.value}` extension. csext runs `{entry}` as CloudStack runs an extension:

    ./{entry} <action> <payload-file> <timeout-seconds>

It reads the JSON payload from the file (never from stdin), prints its answer on stdout,
diagnostics on stderr, and exits 0 on success (75: try again later; anything else: failure).
{_WARM_NOTE.format(entry=entry) if runtime is Runtime.COPROCESS else ""}
## Actions

{actions}

## Configuration

`spec.env` in extension.yaml for plain settings; `spec.secrets` names the secrets, whose values
are set with `csext secret set {name} NAME` (they arrive as environment variables).

## Try it

    csext test {name}                 # runs tests/*.yaml
    csext test {name} --action {first.names[0]} --payload {name}/tests/payloads/{first.slug}.json
    csext enable {name}
"""


_WARM_NOTE = """
It is written for the coprocess runtime (`spec.runtime: coprocess`): csext keeps it running as
`{entry} --coprocess` and sends one JSON request line per call (docs/coprocess.md), so
`handle` runs without a process start per call. The exec form above still works, by hand too.
"""


def render_case(action: Action) -> dict[str, str]:
    payload_file = f"payloads/{action.slug}.json"
    case: dict[str, Any] = {"description": f"{action.names[0]}: the scaffolded answer"}
    if action.routing_key:
        case["routingKey"] = action.routing_key
    else:
        case["action"] = action.names[0]
    case["payloadFile"] = payload_file
    case["expect"] = action.expect
    header = "# A csext test case (format: docs/store.md). Run: csext test <name>\n"
    return {
        f"tests/{action.slug}.yaml": header + yaml.safe_dump(case, sort_keys=False),
        f"tests/{payload_file}": json.dumps(action.payload, indent=2) + "\n",
    }


# --- entry points ------------------------------------------------------------------------

_BASH_HEAD = """#!/usr/bin/env bash
# {name}: a csext {hook} extension (scaffolded by `csext new`).
#
# Called as CloudStack calls an extension:  {name}.sh <action> <payload-file> <timeout-seconds>
#   - read the JSON payload from the file; never read stdin;
#   - print the answer on stdout, diagnostics on stderr;
#   - exit 0 on success, 75 to ask for a retry, anything else on failure;
#   - finish within <timeout-seconds> (also: $CSEXT_DEADLINE, epoch seconds).
# Environment: spec.env, spec.secrets, CSEXT_EXTENSION, CSEXT_ACTION, CSEXT_RUN_ID,
# CSEXT_ATTEMPT, CSEXT_EVENT_KEY (same value on every retry: use it to be idempotent).
# Read a payload field with jq if installed:  jq -r '.field' "$payload_file"
set -euo pipefail

action="${{1:?usage: $0 <action> <payload-file> [timeout]}}"
payload_file="${{2:?usage: $0 <action> <payload-file> [timeout]}}"
timeout="${{3:-60}}"
[ -r "$payload_file" ] || {{ echo "cannot read payload file $payload_file" >&2; exit 2; }}
: "$timeout"

case "$(printf '%s' "$action" | tr '[:upper:]' '[:lower:]')" in
"""


def render_bash(name: str, hook: HookType, template: HookTemplate, warm: bool = False) -> str:
    if warm:
        branches = _bash_branches(template, "    ", "return")
        return coprocess.render_bash(name, hook, template, branches)
    head = _BASH_HEAD.format(name=name, hook=hook.value)
    return head + _bash_branches(template, "", "exit") + "esac\n"


def _bash_branches(template: HookTemplate, indent: str, leave: str) -> str:
    """The `case` branches, one per action; `leave`: `exit` (a script) or `return` (handle)."""
    parts = []
    for action in template.actions:
        parts.append(f"  {'|'.join(n.lower() for n in action.names)})\n")
        parts += [f"    # {line}\n" for line in action.todo_lines]
        parts.append(_bash_print(action.output))
        parts.append("    ;;\n")
    parts.append("  *)\n")
    if template.custom_actions:
        parts.append("    # Custom actions (addCustomAction in CloudStack) arrive here by name.\n")
        parts.append(_bash_print({"status": "success", "message": "custom action done"}))
    else:
        parts.append('    echo "unknown action: $action" >&2\n')
        parts.append(_bash_print({"status": "error", "error": "unknown action"}))
        parts.append(f"    {leave} 2\n")
    parts.append("    ;;\n")
    return "".join(indent + part if part.strip() else part for part in parts)


def _bash_print(output: Any) -> str:
    if output is None:
        return "    :  # print nothing\n"
    text = output if isinstance(output, str) else json.dumps(output)
    assert "'" not in text, "scaffold answers must not contain single quotes"
    return f"    printf '%s\\n' '{text}'\n"


_PY_HEAD = '''#!/usr/bin/env python3
"""{name}: a csext {hook} extension (scaffolded by `csext new`).

Called as CloudStack calls an extension:  {name}.py <action> <payload-file> <timeout-seconds>
  - read the JSON payload from the file; never read stdin;
  - print the answer on stdout, diagnostics on stderr;
  - exit 0 on success, 75 to ask for a retry, anything else on failure;
  - finish within <timeout-seconds> (also: $CSEXT_DEADLINE, epoch seconds).
Environment: spec.env, spec.secrets, CSEXT_EXTENSION, CSEXT_ACTION, CSEXT_RUN_ID,
CSEXT_ATTEMPT, CSEXT_EVENT_KEY (same value on every retry: use it to be idempotent).
"""

import json
import sys

EX_TEMPFAIL = 75  # exit with this to ask csext to retry later
'''

_PY_MAIN = """

def main(argv):
    if len(argv) < 3:
        print(f"usage: {{argv[0]}} <action> <payload-file> [timeout]", file=sys.stderr)
        return 2
    action, payload_file = argv[1], argv[2]
    timeout = float(argv[3]) if len(argv) > 3 else 60.0  # seconds you have
    with open(payload_file, encoding="utf-8") as handle:
        payload = json.load(handle)
    handler = ACTIONS.get(action.lower())
    if handler is None:
{fallback}
    answer = handler(payload)
    if answer is not None:
        print(answer if isinstance(answer, str) else json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
"""

_PY_UNKNOWN = """        print(f"unknown action: {action}", file=sys.stderr)
        print(json.dumps({"status": "error", "error": "unknown action"}))
        return 2"""

_PY_CUSTOM = """        # Custom actions (addCustomAction in CloudStack) arrive here by name.
        print(json.dumps({"status": "success", "message": f"custom action {action} done"}))
        return 0"""


def render_python(name: str, hook: HookType, template: HookTemplate, warm: bool = False) -> str:
    head = coprocess.PY_HEAD if warm else _PY_HEAD
    parts = [head.format(name=name, hook=hook.value)]
    table = []
    for action in template.actions:
        func = f"handle_{action.slug.replace('-', '_')}"
        parts.append(f"\n\ndef {func}(payload):\n")
        parts += [f"    # {line}\n" for line in action.todo_lines]
        parts.append(f"    return {action.output!r}\n")
        table += [f"    {n.lower()!r}: {func},\n" for n in action.names]
    parts.append("\n\nACTIONS = {\n" + "".join(table) + "}\n")
    if warm:
        parts.append(coprocess.python_main(template.custom_actions))
    else:
        fallback = _PY_CUSTOM if template.custom_actions else _PY_UNKNOWN
        parts.append(_PY_MAIN.format(fallback=fallback))
    return "".join(parts)
