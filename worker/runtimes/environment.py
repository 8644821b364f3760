"""The environment an extension runs in: clean, declared, and nothing of the worker's own.

The worker's environment holds broker credentials, so an extension never inherits it. It gets
exactly: `PATH` and `LANG` (from settings), the manifest's `env`, the values of its declared
`secrets`, and csext's `CSEXT_*` variables describing the run. Later sources win, so a manifest
may set its own `PATH`, and csext's `CSEXT_*` names always win (the manifest schema already
refuses `CSEXT_*` names in `env`; this is the second line of defence).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping


def extension_env(
    *,
    path: str,
    lang: str,
    env: Mapping[str, str],
    secrets: Mapping[str, str],
    extension: str,
    hook: str,
    action: str,
    run_id: str,
    attempt: int,
    deadline: float,
    event_key: str,
) -> dict[str, str]:
    """The complete environment of one run; `deadline` is epoch seconds (float)."""
    result = {"PATH": path, "LANG": lang}
    result.update(env)
    result.update(secrets)
    result["CSEXT_EXTENSION"] = extension
    result["CSEXT_HOOK"] = hook
    result["CSEXT_ACTION"] = action
    result["CSEXT_RUN_ID"] = run_id
    result["CSEXT_ATTEMPT"] = str(attempt)
    # Floor: an extension computing "time left" from it never overestimates.
    result["CSEXT_DEADLINE"] = str(math.floor(deadline))
    result["CSEXT_EVENT_KEY"] = event_key
    return result


def event_key(*parts: bytes | str) -> str:
    """A stable key of the input (e.g. routing key + body), for idempotent extensions.

    sha256 hex of the parts, each length-prefixed so that ("ab", "c") and ("a", "bc") differ.
    Strings are encoded as UTF-8, so `"x"` and `b"x"` give the same key. The same input gives
    the same key on every worker, attempt and redelivery.
    """
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()
