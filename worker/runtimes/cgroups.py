"""Per-run cgroups (cgroup v2): kill every process a run started, including escaped daemons.

A process group catches most of an extension's children, but not a descendant that calls
`setsid` (or `setpgid`, or double-forks like a daemon). A cgroup does: every process forked
inside it stays inside, and writing `1` to its `cgroup.kill` (Linux ≥ 5.14) SIGKILLs all of
them at once. So each exec run gets its own cgroup, named like its run directory, under
`<the worker's own cgroup>/csext-runs/`, and the run is not reported until that cgroup is empty.

How a child lands in its cgroup without slowing the spawn: a `preexec_fn` would force
`fork()` instead of `vfork()` (measured: +5 ms per run for an 80 MB worker). Instead the worker
moves *itself* into the run's cgroup just before the (synchronous) fork inside
`loop.subprocess_exec`, and back home right after; the child is born inside (~0.1-0.2 ms per run).
Anything else the worker forked in that window would land there too and die with the run, so
other spawners (the coprocess runtime) first await `ExecRunner.fork_gate`, which returns only
while no such window is open.

Auto-detected (`run_cgroups: auto`): on when a writable cgroup v2 hierarchy with `cgroup.kill`
holds the worker's cgroup and a probe move in and out succeeds (root, or a delegated subtree:
systemd `Delegate=yes`); otherwise off, with the reason logged once. `run_cgroups: off`
disables it. Stale run cgroups of dead workers (a `kill -9`) are killed and removed at start.

Empty run cgroups are kept for the next run (`acquire` / `release`, up to `POOL_SIZE`): making
and removing a cgroup cost ~70 µs per run, more than moving the worker in and out. A cgroup
goes back to the pool only when `cgroup.events` says it is empty; one a run left processes in
is killed and removed as before. Pooled cgroups keep the name of the run that made them (the
worker's pid and start token), so a dead worker's pool is cleaned up like its runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

RUNS_CGROUP = "csext-runs"
"""Parent of the per-run cgroups, under the worker's own cgroup."""
EMPTY_TIMEOUT = 2.0
"""Seconds to wait for a killed cgroup to empty."""
POOL_SIZE = 64
"""Empty run cgroups kept for reuse (about the worker's concurrency)."""


class RunCgroup:
    """One run's cgroup; `procs` is an open fd of its cgroup.procs (to move the worker in)."""

    __slots__ = ("path", "procs")

    def __init__(self, path: Path, procs: int) -> None:
        self.path = path
        self.procs = procs


class Cgroups:
    """The per-run cgroup layer of one worker process; build it with `detect`."""

    def __init__(self, parent: Path, home: Path) -> None:
        self.parent = parent
        """`.../csext-runs`: the run cgroups live here."""
        self._home = os.open(home / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        """The worker's own cgroup, where it returns after each spawn."""
        self._pool: list[RunCgroup] = []
        """Empty run cgroups of this worker, ready for the next run."""

    @classmethod
    def detect(cls, mode: str) -> tuple[Cgroups | None, str]:
        """The layer, or None and why not (for the log and for tests that need it)."""
        if mode == "off":
            return None, "run_cgroups is off"
        try:
            home = _own_cgroup_dir()
            parent = home / RUNS_CGROUP
            with contextlib.suppress(FileExistsError):
                os.mkdir(parent, 0o755)
            if not (parent / "cgroup.kill").exists():
                return None, "the kernel has no cgroup.kill (needs Linux 5.14 or later)"
            layer = cls(parent, home)
            layer._probe()
        except (OSError, LookupError) as exc:
            return None, f"cannot manage cgroups here: {exc}"
        return layer, f"per-run cgroups under {parent}"

    def _probe(self) -> None:
        """Move the worker into a scratch cgroup and back: proves permission end to end."""
        group = self.create(f"probe-{os.getpid()}-{time.monotonic_ns()}")
        try:
            self.enter(group)
        finally:
            self.leave()
            self.close(group)
            os.rmdir(group.path)

    def create(self, name: str) -> RunCgroup:
        path = self.parent / name
        os.mkdir(path, 0o755)
        try:
            return RunCgroup(path, os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            os.rmdir(path)
            raise

    def acquire(self, name: str) -> RunCgroup:
        """An empty run cgroup: a pooled one, else a new one called `name`."""
        return self._pool.pop() if self._pool else self.create(name)

    async def release(self, group: RunCgroup) -> bool:
        """The run is over: pool its cgroup if it is empty, else kill and remove it.

        True if something was still running in it (an escaped descendant, most likely).
        """
        if len(self._pool) < POOL_SIZE and not _populated(group.path):
            self._pool.append(group)
            return False
        return await self.destroy(group)

    def close_pool(self) -> None:
        """Remove the pooled cgroups (worker shutdown; a dead worker's go at the next start)."""
        pool, self._pool = self._pool, []
        for group in pool:
            self.close(group)
            with contextlib.suppress(OSError):
                os.rmdir(group.path)

    def enter(self, group: RunCgroup) -> None:
        """Move the worker into `group`; the next fork is born there. Always `leave` after."""
        os.write(group.procs, b"0")

    def leave(self) -> None:
        os.write(self._home, b"0")

    @staticmethod
    def close(group: RunCgroup) -> None:
        with contextlib.suppress(OSError):
            os.close(group.procs)

    async def destroy(self, group: RunCgroup) -> bool:
        """SIGKILL whatever is left in the run's cgroup, wait (bounded) and remove it.

        True if something was still running in it (an escaped descendant, most likely).
        """
        self.close(group)
        populated = _populated(group.path)
        if populated:
            kill(group.path)
        await _wait_empty_and_remove(group.path)
        return populated

    def cleanup_stale(self, is_stale: Callable[[str], bool]) -> int:
        """Kill and remove run cgroups whose worker is gone (`is_stale(name)`); the count."""
        removed = 0
        with os.scandir(self.parent) as entries:
            names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        for name in names:
            if not is_stale(name):
                continue
            path = self.parent / name
            if _populated(path):
                log.warning("killing processes left running by a dead worker in %s", path)
                kill(path)
            if _remove_when_empty(path, EMPTY_TIMEOUT):
                removed += 1
        return removed


def kill(path: Path) -> None:
    """SIGKILL every process in the cgroup (and its descendants' cgroups)."""
    try:
        with open(path / "cgroup.kill", "w") as handle:
            handle.write("1")
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not kill cgroup %s: %s", path, exc)


def _populated(path: Path) -> bool:
    try:
        with open(path / "cgroup.events", "rb") as handle:
            return b"populated 1" in handle.read()
    except FileNotFoundError:
        return False


async def _wait_empty_and_remove(path: Path) -> None:
    give_up = time.monotonic() + EMPTY_TIMEOUT
    delay = 0.0005
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:  # EBUSY: a killed process is not gone yet
            if time.monotonic() > give_up:
                log.warning("run cgroup %s still busy %.1f s after kill", path, EMPTY_TIMEOUT)
                return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


def _remove_when_empty(path: Path, timeout: float) -> bool:
    """Synchronous variant for start-up cleanup."""
    give_up = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            if time.monotonic() > give_up:
                log.warning("could not remove stale run cgroup %s: %s", path, exc)
                return False
        time.sleep(0.01)


def _own_cgroup_dir() -> Path:
    """The directory of this process's cgroup v2 cgroup; LookupError when there is none."""
    mount = _cgroup2_mount()
    with open("/proc/self/cgroup") as handle:
        lines = [line.rstrip("\n") for line in handle if line.startswith("0::")]
    if not lines:
        raise LookupError("this process is in no cgroup v2 hierarchy")
    own = lines[0].removeprefix("0::").lstrip("/")
    path = mount / own if own else mount
    if own.startswith("..") or not (path / "cgroup.procs").is_file():
        raise LookupError(f"own cgroup {lines[0]!r} is not visible under {mount}")
    with open(path / "cgroup.procs") as handle:
        if str(os.getpid()) not in handle.read().split():
            raise LookupError(f"{path} does not list this process (a cgroup namespace?)")
    return path


def _cgroup2_mount() -> Path:
    with open("/proc/self/mounts") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) >= 4 and fields[2] == "cgroup2":
                if "rw" not in fields[3].split(","):
                    raise LookupError(f"cgroup2 at {fields[1]} is mounted read-only")
                return Path(fields[1])
    raise LookupError("no cgroup2 file system is mounted")
