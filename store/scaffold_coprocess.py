"""`csext new --runtime coprocess`: the warm (coprocess) form of each scaffold.

The per-action functions and branches are the exec scaffold's (scaffold.py); what changes is
the frame around them. Both forms also run in the exec runtime unchanged, so the generated test
cases pass in either runtime (docs/coprocess.md).

- Python: `handle(action, payload)` dispatches on the `ACTIONS` table and `serve(handle)` (the
  stdlib-only helper, written next to the entry point as `csext_coprocess.py`) speaks the protocol.
- bash: the `case` lives in a `handle` function (`return`, never `exit`, no `set -e`: it runs
  inside the long-lived shell), followed by the protocol loop of csext's bash template.

store/ does not import worker/, so the helper and the bash protocol part are kept here as
copies: `coprocess_sdk.py` is worker/sdk/coprocess.py byte for byte, and `BASH_PROTOCOL` is
worker/templates/coprocess/bash/main.sh from `# ---- protocol` on (tests/test_store_scaffold.py
checks both).
"""

from __future__ import annotations

from importlib import resources

from csext.schemas.manifest import HookType

from .scaffold_hooks import HookTemplate

SDK_NAME = "csext_coprocess.py"
"""The helper's file name next to a Python entry point."""


def sdk_text() -> str:
    """The coprocess helper (worker/sdk/coprocess.py), as copied into Python scaffolds."""
    return resources.files("csext.store").joinpath("coprocess_sdk.py").read_text("utf-8")


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

BASH_PROTOCOL = r"""
# ---- protocol (no need to edit below) ---------------------------------------------------

if [[ ${1-} != --coprocess ]]; then # exec runtime: run once
    handle "$1" "$(<"$2")"
    exit
fi

# JSON-escape $1 into REPLY, without forking.
_json_escape() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    s=${s//[$'\x01'-$'\x08'$'\x0b'$'\x0c'$'\x0e'-$'\x1f']/} # other control bytes: dropped
    REPLY=$s
}

# fd 4 reads requests, fd 3 writes responses; commands get /dev/null as stdin and anything
# written to the real stdout outside handle() ends up on stderr, not in the protocol.
exec 4<&0 3>&1 0</dev/null 1>&2
_dir=$(mktemp -d "${TMPDIR:-/tmp}/csext-coprocess.XXXXXX") || exit 1
trap 'rm -rf -- "$_dir"' EXIT
_re='^\{"id":"([^"]*)","action":"(([^"\\]|\\.)*)"'
while IFS= read -r _line <&4; do
    if ! [[ $_line =~ $_re ]]; then
        printf 'bad request line: %.100s\n' "$_line" >&2
        exit 2
    fi
    _id=${BASH_REMATCH[1]}
    _action=${BASH_REMATCH[2]}
    _payload=${_line#*,\"payload\":} # "payload" is always the last field
    _payload=${_payload%\}}
    handle "$_action" "$_payload" >"$_dir/out" 2>"$_dir/err"
    _code=$?
    IFS= read -r -d '' _out <"$_dir/out"
    IFS= read -r -d '' _err <"$_dir/err"
    _json_escape "$_out"
    _out=$REPLY
    _json_escape "$_err"
    printf '{"id":"%s","exit_code":%d,"stdout":"%s","stderr":"%s"}\n' \
        "$_id" "$_code" "$_out" "$REPLY" >&3
done
""".removeprefix("\n")


def render_bash(name: str, hook: HookType, template: HookTemplate, branches: str) -> str:
    """`branches`: the exec scaffold's case branches, indented for the function body."""
    return (
        _BASH_HEAD.format(name=name, hook=hook.value) + branches + "    esac\n}\n\n" + BASH_PROTOCOL
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
