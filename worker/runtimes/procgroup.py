"""Process groups: signal one, and how long a killed one may take to disappear.

Both runtimes start every extension process in a session of its own (`start_new_session`), so
one `killpg` reaches everything it started that did not leave the group; the exec runner and the
coprocess pool share these helpers (cgroups, in cgroups.py, catch what leaves the group).
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

GROUP_GONE_TIMEOUT = 2.0
"""Seconds to wait for a SIGKILLed process group (or a killed leader) to disappear."""


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal (setuid): it still exists
        log.debug("cannot signal every member of process group %s", pgid)
    return True


def elapsed_ms(started: float) -> int:
    """Milliseconds since `started` (a `time.monotonic()` reading), rounded."""
    return round((time.monotonic() - started) * 1000)
