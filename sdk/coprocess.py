"""csext coprocess helper: write a warm csext extension in Python with one function.

Standard library only, one file: import it as `csext.sdk.coprocess`, or copy it next
to your entrypoint as `csext_coprocess.py` (what `csext new --runtime coprocess` does).

    from csext_coprocess import Fail, serve

    def handle(action, payload):
        if action == "status":
            return {"status": "success", "power_state": "PowerOn"}   # JSON result, exit 0
        raise Fail(2, f"unknown action {action}")                   # exit 2, message on stderr

    if __name__ == "__main__":
        serve(handle)

What `handle(action, payload)` may return (payload is the parsed JSON input):

- a dict, list, number or bool: the JSON result, exit code 0;
- a str: printed as is on stdout, exit code 0; None: nothing, exit code 0;
- a tuple `(exit_code, stdout)` or `(exit_code, stdout, stderr)`; stdout may be any JSON value.

It may also raise `Fail(exit_code, message)`, call `sys.exit(code)` (that request's exit code,
the process lives on) or raise anything else (exit code 1, the traceback on stderr). Whatever
it `print()`s, to stdout or stderr, becomes that request's stdout or stderr.

The same file serves both runtimes: started as `<entrypoint> --coprocess` it answers request
lines on stdin (docs/coprocess.md) until stdin closes; started with CloudStack's exec argv
`<entrypoint> <action> <payload-file> <timeout>` it runs `handle` once and exits with its code.
`request()` gives the current request (deadline, run_id, attempt, event_key); `time_left()`
the seconds until its deadline.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO, NoReturn

__all__ = ["Fail", "Handler", "request", "serve", "time_left"]

Handler = Callable[[str, Any], Any]
_current: dict[str, Any] = {}


class Fail(Exception):
    """Raise to end this request with `exit_code` and `message` on stderr."""

    def __init__(self, exit_code: int, message: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


def request() -> dict[str, Any]:
    """The request being handled (id, action, deadline, timeout, run_id, attempt, event_key)."""
    return _current


def time_left() -> float:
    """Seconds until the current request's deadline (never negative)."""
    deadline = _current.get("deadline")
    return max(0.0, deadline - time.time()) if isinstance(deadline, (int, float)) else 0.0


def serve(handler: Handler, argv: list[str] | None = None) -> NoReturn:
    """Run `handler` in the mode csext started this process in; never returns."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--coprocess"]:
        _serve_lines(handler)
        sys.exit(0)
    if len(args) >= 2:
        sys.exit(_run_once(handler, args))
    sys.stderr.write(
        "usage: --coprocess (request lines on stdin), "
        "or <action> <payload-file> [<timeout-seconds>]\n"
    )
    sys.exit(64)


def _serve_lines(handler: Handler) -> None:
    """Coprocess mode: one JSON request line in, one JSON response line out, until EOF."""
    requests = os.fdopen(os.dup(0), "rb")
    responses = os.fdopen(os.dup(1), "wb")
    # fd 0 and 1 now belong to the protocol: a child process or a stray write must not
    # touch them, so stdin reads /dev/null and stdout goes to stderr.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    for line in requests:
        responses.write(_answer(handler, line))
        responses.flush()


def _answer(handler: Handler, line: bytes) -> bytes:
    try:
        req = json.loads(line)
        rid = req["id"]
    except (ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"csext_coprocess: bad request line ({exc}): {line[:100]!r}\n")
        sys.exit(2)  # without an id there is no way to answer; csext replaces the process
    _current.clear()
    _current.update(req)
    code, out, err, result = _call(handler, str(req.get("action", "")), req.get("payload"))
    response: dict[str, Any] = {"id": rid, "exit_code": code}
    if result is not _NO_RESULT and not out:
        response["result"] = result
    else:
        response["stdout"] = out + (_dump(result) if result is not _NO_RESULT else "")
    response["stderr"] = err
    try:
        text = json.dumps(response, separators=(",", ":"))
    except (TypeError, ValueError) as exc:  # a result json cannot encode
        text = json.dumps({"id": rid, "exit_code": 1, "stderr": f"{err}cannot encode: {exc}\n"})
    return text.encode("ascii") + b"\n"


_NO_RESULT: Any = object()


def _call(handler: Handler, action: str, payload: Any) -> tuple[int, str, str, Any]:
    """Run the handler, capturing what it prints: (exit code, stdout, stderr, result)."""
    out, err = io.StringIO(), io.StringIO()
    result: Any = _NO_RESULT
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code, text, result = _interpret(handler(action, payload))
            out.write(text)
        except Fail as fail:
            code = fail.exit_code
            if fail.message:
                err.write(fail.message.rstrip("\n") + "\n")
        except SystemExit as exc:
            code = _exit_code(exc.code, err)
        except Exception:
            code = 1
            traceback.print_exc(file=err)
    return _clamp(code), out.getvalue(), err.getvalue(), result


def _interpret(value: Any) -> tuple[int, str, Any]:
    """(exit code, text for stdout, JSON result or _NO_RESULT) from a handler's return value."""
    if value is None:
        return 0, "", _NO_RESULT
    if isinstance(value, str):
        return 0, value, _NO_RESULT
    if isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[0], int):
        if len(value) == 3:
            sys.stderr.write(str(value[2]))
        stdout = value[1]
        if stdout is None or isinstance(stdout, str):
            return value[0], stdout or "", _NO_RESULT
        return value[0], "", stdout
    return 0, "", value


def _exit_code(code: object, err: io.StringIO) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    err.write(f"{code}\n")
    return 1


def _clamp(code: int) -> int:
    return code if 0 <= code <= 255 else 1


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _run_once(handler: Handler, args: list[str]) -> int:
    """Exec mode: `<action> <payload-file> [<timeout>]`, as CloudStack and csext's exec run it."""
    action, payload_file = args[0], args[1]
    deadline = os.environ.get("CSEXT_DEADLINE")
    if deadline is None and len(args) > 2:
        with contextlib.suppress(ValueError):
            deadline = str(time.time() + float(args[2]))
    with open(payload_file, "rb") as handle:
        text = handle.read()
    payload = json.loads(text) if text.strip() else None
    _current.update(action=action, deadline=float(deadline) if deadline else None)
    for key, name in (("run_id", "CSEXT_RUN_ID"), ("event_key", "CSEXT_EVENT_KEY")):
        if name in os.environ:
            _current[key] = os.environ[name]
    code, out, err, result = _call(handler, action, payload)
    if result is not _NO_RESULT:
        out += _dump(result) + "\n"
    _write(sys.stdout.buffer, out)
    _write(sys.stderr.buffer, err)
    return code


def _write(stream: BinaryIO, text: str) -> None:
    stream.write(text.encode("utf-8", "surrogateescape"))
    stream.flush()
