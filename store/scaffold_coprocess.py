"""`csext new --runtime coprocess`: the warm (coprocess) form of each scaffold.

The per-action functions and branches are the exec scaffold's (scaffold.py); what changes is
the frame around them. Both forms also run in the exec runtime unchanged, so the generated test
cases pass in either runtime (docs/coprocess.md).

- Python: `handle(action, payload)` dispatches on the `ACTIONS` table and `serve(handle)` (the
  stdlib-only helper, written next to the entry point as `csext_coprocess.py`) speaks the protocol.
- bash: the `case` lives in a `handle` function (`return`, never `exit`, no `set -e`: it runs
  inside the long-lived shell), followed by the protocol loop of csext's bash template.

One source each: the helper is `sdk/coprocess.py` (importable as
`csext.sdk.coprocess`), and the bash protocol loop is the one of the starter template
`templates/coprocess/bash/main.sh`.
"""

from __future__ import annotations

from importlib import resources

from csext.schemas.manifest import HookType

from .scaffold_hooks import HookTemplate

SDK_NAME = "csext_coprocess.py"
"""The helper's file name next to a Python entry point."""


_TEMPLATES = resources.files("csext.store").joinpath("templates", "coprocess")


def sdk_text() -> str:
    """The coprocess helper, as copied into Python scaffolds."""
    return resources.files("csext.sdk").joinpath("coprocess.py").read_text("utf-8")


# --- bash ----------------------------------------------------------------------------------

_BASH_HEAD = """#!/usr/bin/env bash
# {name}: a csext {hook} extension for the coprocess runtime (scaffolded by
# `csext new --runtime coprocess`).
#
# csext keeps this script running (`{name}.sh --coprocess`) and calls handle() once per
# request, with the action and the JSON payload as text:
#   - print the answer on stdout, diagnostics on stderr;
#   - `return` 0 on success, 75 to ask for a retry, anything else on failure;
#   - use `return`, never `exit` (exit ends the process: csext fails that request and starts
#     another), and leave no `cd` or global variables behind;
#   - finish before the deadline (docs/coprocess.md: the request line carries it).
# Environment: spec.env, spec.secrets, CSEXT_EXTENSION, CSEXT_HOOK, CSEXT_RUNTIME=coprocess.
# Read a payload field with jq if installed (one process per call):  jq -r '.field' <<<"$payload"
# The same file runs in the exec runtime too:  ./{name}.sh <action> <payload-file> <timeout>

handle() {{
    local action=$1 payload=$2
    : "$payload"
    case "${{action,,}}" in
"""


def bash_protocol() -> str:
    """The protocol loop of the bash coprocess template, from `# ---- protocol` on."""
    template = _TEMPLATES.joinpath("bash", "main.sh").read_text("utf-8")
    return template[template.index("# ---- protocol") :]


def render_bash(name: str, hook: HookType, template: HookTemplate, branches: str) -> str:
    """`branches`: the exec scaffold's case branches, indented for the function body."""
    return (
        _BASH_HEAD.format(name=name, hook=hook.value)
        + branches
        + "    esac\n}\n\n"
        + bash_protocol()
    )


# --- Python --------------------------------------------------------------------------------

PY_HEAD = '''#!/usr/bin/env python3
"""{name}: a csext {hook} extension for the coprocess runtime (scaffolded by
`csext new --runtime coprocess`).

csext keeps this process running (`{name}.py --coprocess`) and calls `handle(action, payload)`
once per request; csext_coprocess.py (next to this file, standard library only) speaks the
protocol. A handler returns a dict (the JSON answer), a str (printed as is), None (no output)
or a tuple (exit_code, stdout[, stderr]); exit code 75 asks csext to retry later. Globals live
as long as the process: a good place for a connection or a parsed config, not per-request state.
request() is the current request (deadline, run_id, attempt, event_key); time_left() the
seconds until its deadline. The same file runs in the exec runtime too:
    ./{name}.py <action> <payload-file> <timeout-seconds>
"""

from csext_coprocess import Fail, request, serve, time_left  # noqa: F401

EX_TEMPFAIL = 75  # return (EX_TEMPFAIL, "", "why") to ask csext to retry later
'''

_PY_MAIN = """

def handle(action, payload):
    handler = ACTIONS.get(action.lower())
    if handler is None:
{fallback}
    return handler(payload)


if __name__ == "__main__":
    serve(handle)
"""

_PY_UNKNOWN = (
    '        return 2, {"status": "error", "error": "unknown action"}, f"unknown action: {action}"'
)

_PY_CUSTOM = """        # Custom actions (addCustomAction in CloudStack) arrive here by name.
        return {"status": "success", "message": f"custom action {action} done"}"""


def python_main(custom_actions: bool) -> str:
    return _PY_MAIN.format(fallback=_PY_CUSTOM if custom_actions else _PY_UNKNOWN)
