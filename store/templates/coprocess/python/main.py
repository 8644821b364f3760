#!/usr/bin/env python3
"""A csext extension in Python for the coprocess runtime (spec.runtime: coprocess).

Edit `handle`. csext_coprocess.py (next to this file, standard library only) speaks the
protocol; the same file also runs in the exec runtime, so it can be tried by hand:
    ./main.py status tests/payload.json 10
"""

from __future__ import annotations

from typing import Any

from csext_coprocess import Fail, serve


def handle(action: str, payload: Any) -> Any:
    """Return a dict/list (the JSON result), a str (stdout) or (exit_code, stdout[, stderr]).

    Raise Fail(code, message) to fail the request. Anything print()ed becomes its stdout;
    state kept in globals lives as long as the process (csext recycles it now and then).
    """
    if action == "status":
        return {"status": "success", "message": "ok"}
    if action == "fail":
        raise Fail(2, "failing on request")
    return {"status": "success", "action": action, "payload": payload}


if __name__ == "__main__":
    serve(handle)
