"""`csext worker --processes N`: N worker processes, each with its own connection.

The supervisor passes its settings to each child through CSEXT_* variables, forwards SIGTERM,
SIGINT and SIGHUP, restarts a child that died unexpectedly (with backoff, never a hot loop; the
backoff starts over once a child has run for STABLE_UPTIME, so one crash a day does not wait
30 s), and exits once every child has exited after a stop; a stop interrupts a restart wait.
Children ask the kernel to SIGTERM them if the supervisor dies (PR_SET_PDEATHSIG), so a
`kill -9` of the supervisor leaves no orphans.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

from csext.worker.health import PoolHealth
from csext.worker.settings import Settings

log = logging.getLogger(__name__)

RESTART_BACKOFF_MAX = 30.0
STABLE_UPTIME = 60.0
"""Seconds a child must have run for its crash to count as a first failure again."""
SUPERVISED_ENV = "CSEXT_SUPERVISED"


def child_environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in settings.model_dump(exclude_none=True).items():
        env[f"CSEXT_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    env["CSEXT_PROCESSES"] = "1"
    env[SUPERVISED_ENV] = "1"
    return env


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._env = child_environment(settings)
        self._health = PoolHealth(
            settings.metrics_host, settings.metrics_port, settings.processes, self._env
        )
        """Metrics of the whole pool on one port, and readiness including every child."""
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._started: dict[int, float] = {}
        self._stopping = False
        self._stopped = threading.Event()
        """Set by SIGTERM/SIGINT: ends a restart wait at once."""
        self._failures = 0

    def _spawn(self) -> None:
        child = subprocess.Popen(
            [sys.executable, "-m", "csext.cli", "worker"], env=self._env, close_fds=True
        )
        self._children[child.pid] = child
        self._started[child.pid] = time.monotonic()
        log.info("worker process started", extra={"pid": child.pid})

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True
            self._stopped.set()
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signum)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._forward)
        for _ in range(self._settings.processes):
            self._spawn()
        self._health.start(lambda: list(self._children))
        while self._children:
            pid, status = os.wait()
            child = self._children.pop(pid, None)
            if child is None:
                continue
            self._health.child_exited(pid)
            code = os.waitstatus_to_exitcode(status)
            child.returncode = code
            uptime = time.monotonic() - self._started.pop(pid, time.monotonic())
            if not self._stopping:
                self._restart_after_crash(pid, code, uptime)
        self._health.close()
        return 0

    def restart_delay(self, uptime: float) -> float:
        """Count one more failure (starting over after a stable run) and return the wait."""
        self._failures = 1 if uptime >= STABLE_UPTIME else self._failures + 1
        return min(RESTART_BACKOFF_MAX, 0.5 * 2.0 ** min(self._failures - 1, 8))

    def _restart_after_crash(self, pid: int, code: int, uptime: float) -> None:
        delay = self.restart_delay(uptime)
        log.error("worker process %s exited with %s; restarting in %.1fs", pid, code, delay)
        if not self._stopped.wait(delay):
            self._spawn()


def supervise(settings: Settings) -> int:
    return Supervisor(settings).run()


def die_with_parent() -> None:
    """Linux: get SIGTERM when the supervisor dies (children only)."""
    if os.environ.get(SUPERVISED_ENV) != "1" or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
