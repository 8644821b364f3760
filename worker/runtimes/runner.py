"""The exec runtime: one extension process per call, with CloudStack's argv contract.

Every run is `<entrypoint> <action> <payload-file> <timeout-seconds>` with no shell, stdin on
/dev/null, a clean environment (see environment.py) and the extension folder as cwd. The
payload file is `payload.json` (0600) in a private run directory (0700) under `run_dir`,
removed after the run whatever happens: it usually carries CloudStack credentials.

stdout and stderr are read by a `SubprocessProtocol` as the data arrives, so a chatty extension
never blocks on a full pipe; the first `output_cap` bytes of each are kept and the rest is
read and dropped (flagged as truncated), so memory stays bounded however much it writes.

Process lifetime, what is caught:

- The extension leads its own session and process group (`start_new_session=True`).
- At the deadline the whole group gets SIGTERM, then SIGKILL after `kill_grace` seconds.
- When the leader exits, for any reason, whatever is left of its group gets SIGKILL and the run
  waits (bounded, ~2 s) until the group is empty or holds only zombies, so background children
  it forgot about, or that ignore SIGTERM, are dead before the result is reported. (Killed
  descendants are reaped by init or the nearest subreaper, not by the worker: a zombie is dead
  and holds no pipes, so the run does not wait for a slow reaper.)
- The run never waits for pipe EOF after that: once the group is gone the readers get a short
  grace, then the pipes are closed.
- A cancelled run (worker shutdown) SIGKILLs the group, reaps the leader, removes the run
  directory and re-raises.

- With per-run cgroups (`run_cgroups: auto`, see cgroups.py) the run also gets its own cgroup
  v2 cgroup: descendants that left the group (`setsid`, `setpgid`, a double-forking daemon)
  are still inside it, and the cgroup is killed and must be empty before the run is reported.
- A worker that dies without cleaning up (`kill -9`, OOM) leaves its runs behind: each run
  directory records its process group (`pgid`: pgid, leader start time, run id), and the next
  worker start-up (`cleanup_stale`) SIGKILLs what is still running of those groups (after
  checking each process still belongs to that run) and of their cgroups, then removes them.

What is not caught without cgroups: a descendant that leaves the group is outside it and
survives the run; if it keeps stdout open, the run only stops reading after the short grace.
Descendants are reaped by init or the nearest subreaper; a worker running as PID 1 in a
container must run under an init (`docker run --init`, tini), or killed descendants stay
zombies for good.

Linux only (process groups, /proc for stale-directory ownership, pidfd).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from csext.schemas.errors import ConfigError
from csext.schemas.run import RunResult
from csext.worker.runtimes.cgroups import Cgroups, RunCgroup
from csext.worker.runtimes.cgroups import kill as kill_cgroup
from csext.worker.runtimes.child import ChildTransport, LeanTransport
from csext.worker.runtimes.procgroup import GROUP_GONE_TIMEOUT, elapsed_ms, signal_group

log = logging.getLogger(__name__)

RUN_DIR_PREFIX = "run-"
"""Run directories are `run-<worker pid>-<worker start time>-<sequence>`."""
PAYLOAD_NAME = "payload.json"
OWNER_NAME = "pgid"
"""`<pgid> <leader start time> <run id>`: lets a later start-up kill a dead worker's runs."""
PIPE_GRACE = 0.5
"""Seconds the readers get after the process group is gone, before the pipes are closed."""
ZOMBIE_CHECK_AFTER = 0.016
"""Once polling a killed group has taken about this long, check whether only zombies remain."""
_STDOUT, _STDERR = 1, 2
_sequence = itertools.count()


@dataclass(frozen=True, slots=True)
class RunRequest:
    entrypoint: Path
    """Absolute path of the executable."""
    action: str
    """argv[1]."""
    payload: bytes
    """Content of the payload file (argv[2])."""
    timeout: float
    """Seconds; the deadline is now + timeout; argv[3] = str(max(1, ceil(timeout)))."""
    env: Mapping[str, str]
    """The complete environment of the child (built by environment.extension_env)."""
    cwd: Path
    """Working directory (the extension folder)."""


class _Collector(asyncio.SubprocessProtocol):
    """Keeps the first `cap` bytes of stdout and stderr, drops the rest, notes exit and EOF."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self.output = {_STDOUT: bytearray(), _STDERR: bytearray()}
        self.truncated = {_STDOUT: False, _STDERR: False}
        self._open_pipes = 2
        self.exited = asyncio.Event()
        self.pipes_closed = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buffer = self.output[fd]
        room = self._cap - len(buffer)
        if len(data) <= room:
            buffer += data
            return
        if room > 0:
            buffer += memoryview(data)[:room]
        self.truncated[fd] = True

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open_pipes -= 1
        if self._open_pipes <= 0:
            self.pipes_closed.set()

    def process_exited(self) -> None:
        # Called as soon as the leader is reaped, unlike Process.wait(), which also waits for
        # pipe EOF (and so hangs while an escaped grandchild holds stdout).
        self.exited.set()


class _Deadline:
    """SIGTERM to the process group at the deadline, SIGKILL `grace` seconds later."""

    def __init__(
        self, pgid: int, deadline: float, grace: float, cgroup: RunCgroup | None = None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._pgid = pgid
        self._cgroup = cgroup
        self._grace = grace
        self.fired = False
        delay = max(0.0, deadline - time.monotonic())
        self._handle = self._loop.call_later(delay, self._terminate)

    def _terminate(self) -> None:
        self.fired = True
        log.info("extension process group %s hit its deadline: SIGTERM", self._pgid)
        signal_group(self._pgid, signal.SIGTERM)
        self._handle = self._loop.call_later(self._grace, self._kill)

    def _kill(self) -> None:
        log.info("extension process group %s outlived the kill grace: SIGKILL", self._pgid)
        signal_group(self._pgid, signal.SIGKILL)
        if self._cgroup is not None:
            kill_cgroup(self._cgroup.path)

    def cancel(self) -> None:
        self._handle.cancel()


class ExecRunner:
    """Runs extensions as child processes; one instance per worker process."""

    def __init__(
        self, *, run_dir: Path, output_cap: int, kill_grace: float, cgroups: str = "off"
    ) -> None:
        self._run_dir = run_dir
        self._output_cap = output_cap
        self._kill_grace = kill_grace
        self._running = 0
        self._groups: dict[int, tuple[ChildTransport, RunCgroup | None]] = {}
        self._killing = False
        self._windows = 0
        """Spawns in progress with the worker inside a run's cgroup (see fork_gate)."""
        self._windows_closed = asyncio.Event()
        self._windows_closed.set()
        pid = os.getpid()
        self._dir_prefix = f"{RUN_DIR_PREFIX}{pid}-{_start_token(pid) or '0'}-"
        _prepare_run_dir(run_dir)
        self._lean = _pidfd_works()
        self.spawn_observer: Callable[[str, float], None] | None = None
        """Metrics: called with (extension, seconds from run start to a running process)."""
        self.cgroups, self.cgroups_reason = Cgroups.detect(cgroups)
        if cgroups != "off":
            log.info("run cgroups: %s", self.cgroups_reason)

    @property
    def running(self) -> int:
        """Runs in progress."""
        return self._running

    async def run(self, request: RunRequest) -> RunResult:
        """Run the extension once; never raises for a failing or unrunnable extension."""
        started = time.monotonic()
        self._running += 1
        try:
            return await self._run_in_dir(request, started)
        finally:
            self._running -= 1

    def kill_all(self) -> None:
        """SIGKILL every running extension's process group now (second shutdown signal).

        Final: a run still being spawned, or started later, is SIGKILLed as soon as its
        process exists. A process spawned in the very last moment is only caught if the loop
        runs a little longer (until `running` is 0); exiting at once may leave it behind.
        """
        self._killing = True
        for pgid, (transport, group) in list(self._groups.items()):
            if transport.get_returncode() is None:
                signal_group(pgid, signal.SIGKILL)
            if group is not None:
                kill_cgroup(group.path)

    def cleanup_stale(self) -> int:
        """Kill what dead workers left running and remove their run directories (and run
        cgroups); returns the number of run directories removed."""
        _prepare_run_dir(self._run_dir)
        removed = 0
        with os.scandir(self._run_dir) as entries:
            stale = [e.path for e in entries if e.is_dir(follow_symlinks=False) and _stale(e.name)]
        for path in stale:
            _kill_stale_run(Path(path))
            shutil.rmtree(path, onerror=_log_rmtree_error)
            removed += 1
        if removed:
            log.info("removed %s stale run directories from %s", removed, self._run_dir)
        if self.cgroups is not None:
            self.cgroups.cleanup_stale(_stale)
        return removed

    async def _run_in_dir(self, request: RunRequest, started: float) -> RunResult:
        try:
            run_path = self._new_run_dir()
        except (OSError, ConfigError) as exc:
            return _unrunnable(
                f"could not create a run directory in {self._run_dir}: {exc}", started
            )
        try:
            try:
                payload_path = _write_payload(run_path, request.payload)
            except OSError as exc:
                return _unrunnable(
                    f"could not write the payload file in {run_path}: {exc}", started
                )
            group = self._new_cgroup(run_path.name)
            return await self._execute(request, payload_path, started, group)
        finally:
            _remove_run_dir(run_path)

    def _new_cgroup(self, name: str) -> RunCgroup | None:
        if self.cgroups is None:
            return None
        try:
            return self.cgroups.acquire(name)
        except OSError as exc:
            log.warning("no cgroup for this run (process group only): %s", exc)
            return None

    def _new_run_dir(self) -> Path:
        path = self._run_dir / f"{self._dir_prefix}{next(_sequence)}"
        try:
            os.mkdir(path, 0o700)
        except FileNotFoundError:  # run_dir itself was removed (tmp cleaner): recreate it
            _prepare_run_dir(self._run_dir)
            os.mkdir(path, 0o700)
        return path

    async def _execute(
        self, request: RunRequest, payload: Path, started: float, group: RunCgroup | None
    ) -> RunResult:
        try:
            transport, proto = await self._start(request, payload, group)
        except (OSError, ValueError) as exc:
            await self._discard_cgroup(group)
            error = spawn_error(request, exc)
            log.warning("extension %s could not be started: %s", request.entrypoint, error)
            return _unrunnable(error, started)
        except BaseException:
            await self._discard_cgroup(group)
            raise
        if self.spawn_observer is not None:
            self.spawn_observer(request.env.get("CSEXT_EXTENSION", ""), time.monotonic() - started)
        if group is None:
            _write_owner(payload.parent, transport.get_pid(), request.env.get("CSEXT_RUN_ID", ""))
        try:
            timed_out = await self._supervise(transport, proto, started + request.timeout, group)
        except BaseException:
            await self._abort(transport, proto, group)
            raise
        finally:
            transport.close()
        return RunResult(
            exit_code=transport.get_returncode(),
            stdout=bytes(proto.output[_STDOUT]),
            stderr=bytes(proto.output[_STDERR]),
            duration_ms=elapsed_ms(started),
            stdout_truncated=proto.truncated[_STDOUT],
            stderr_truncated=proto.truncated[_STDERR],
            timed_out=timed_out,
            pid=transport.get_pid(),
        )

    async def _start(
        self, request: RunRequest, payload: Path, group: RunCgroup | None
    ) -> tuple[ChildTransport, _Collector]:
        """Spawn, shielded from cancellation.

        The lean spawn is synchronous: nothing can cancel it half way. Cancelled in the middle
        of `subprocess_exec` (the fallback), asyncio would SIGKILL only the leader and then wait
        for pipe EOF, forever if a child already holds the pipes. Instead the spawn completes,
        then the whole group is killed and reaped.
        """
        if self._lean:
            return self._spawn_lean(request, payload, group)
        spawning = asyncio.ensure_future(self._spawn(request, payload, group))
        try:
            return await asyncio.shield(spawning)
        except asyncio.CancelledError:
            with contextlib.suppress(OSError, ValueError):
                transport, proto = await spawning
                try:
                    await self._abort(transport, proto, group)
                finally:
                    transport.close()
            raise

    def _spawn_lean(
        self, request: RunRequest, payload: Path, group: RunCgroup | None
    ) -> tuple[LeanTransport, _Collector]:
        """Spawn with `LeanTransport` (child.py); with a cgroup, the worker moves into it around
        the fork and back, with no suspension point in between (so no fork_gate window)."""
        argv = _argv(request, payload)
        proto = _Collector(self._output_cap)
        if group is None or self.cgroups is None:
            return LeanTransport(argv, cwd=request.cwd, env=request.env, protocol=proto), proto
        self.cgroups.enter(group)
        try:
            return LeanTransport(argv, cwd=request.cwd, env=request.env, protocol=proto), proto
        finally:
            self.cgroups.leave()

    async def _spawn(
        self, request: RunRequest, payload: Path, group: RunCgroup | None
    ) -> tuple[ChildTransport, _Collector]:
        """The fallback spawn through asyncio's subprocess transport."""
        if group is None or self.cgroups is None:
            return await self._exec(request, payload)
        # The fork inside subprocess_exec happens before its first suspension point, so the
        # child is born in `group`; the worker goes home as soon as the spawn returns. Until
        # then other forks must wait (fork_gate), or they would be born in this run's cgroup.
        self._windows += 1
        self._windows_closed.clear()
        self.cgroups.enter(group)
        try:
            return await self._exec(request, payload)
        finally:
            self.cgroups.leave()
            self._windows -= 1
            if not self._windows:
                self._windows_closed.set()

    async def fork_gate(self) -> None:
        """Return when the worker is in its own cgroup; fork with no await after this.

        With per-run cgroups the worker briefly moves into a run's cgroup around each spawn
        (cgroups.py); anything else it forks then (a warm coprocess) would be born there and be
        killed with that run. Other spawners await this first.
        """
        while self._windows:
            await self._windows_closed.wait()

    async def _exec(self, request: RunRequest, payload: Path) -> tuple[ChildTransport, _Collector]:
        proto = _Collector(self._output_cap)
        transport, _ = await asyncio.get_running_loop().subprocess_exec(
            lambda: proto,
            *_argv(request, payload),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=request.cwd,
            env=dict(request.env),
            start_new_session=True,
        )
        return transport, proto

    async def _supervise(
        self,
        transport: ChildTransport,
        proto: _Collector,
        deadline: float,
        group: RunCgroup | None,
    ) -> bool:
        """Wait for the leader, then clear its group and the pipes; True if it timed out."""
        pgid = transport.get_pid()  # start_new_session: the leader's pid is the group id
        self._groups[pgid] = (transport, group)
        if self._killing:
            signal_group(pgid, signal.SIGKILL)
        timer = _Deadline(pgid, deadline, self._kill_grace, group)
        try:
            await proto.exited.wait()
        finally:
            timer.cancel()
            del self._groups[pgid]
        await self._clear(pgid, group)
        await _drain(proto)
        return timer.fired

    async def _clear(self, pgid: int, group: RunCgroup | None) -> None:
        """Kill what is left of the run: its cgroup when it has one, else its process group."""
        if group is not None and self.cgroups is not None:
            if await self.cgroups.release(group):
                log.info("killed processes the run left behind in cgroup %s", group.path.name)
            return
        await _clear_group(pgid)

    async def _discard_cgroup(self, group: RunCgroup | None) -> None:
        if group is not None and self.cgroups is not None:
            await self.cgroups.release(group)

    def close(self) -> None:
        """Worker shutdown, after the last run: remove the pooled run cgroups."""
        if self.cgroups is not None:
            self.cgroups.close_pool()

    async def _abort(
        self, transport: ChildTransport, proto: _Collector, group: RunCgroup | None
    ) -> None:
        """Cancellation: SIGKILL the group and reap the leader (bounded) before re-raising."""
        pgid = transport.get_pid()
        signal_group(pgid, signal.SIGKILL)
        if group is not None:
            kill_cgroup(group.path)
        try:
            async with asyncio.timeout(GROUP_GONE_TIMEOUT):
                await proto.exited.wait()
        except TimeoutError:
            log.warning("cancelled extension process %s did not exit after SIGKILL", pgid)
            return
        await self._clear(pgid, group)


def _argv(request: RunRequest, payload: Path) -> tuple[str, ...]:
    """CloudStack's argv: entry point, action, payload file, timeout in whole seconds (≥ 1)."""
    if not request.entrypoint.is_absolute():
        raise ValueError(f"entrypoint {request.entrypoint} is not an absolute path")
    timeout = str(max(1, math.ceil(request.timeout)))
    return (str(request.entrypoint), request.action, str(payload), timeout)


async def _clear_group(pgid: int) -> None:
    """SIGKILL what is left of the group and wait, bounded, until it is empty."""
    if not signal_group(pgid, signal.SIGKILL):
        return  # the common case: the leader was alone
    give_up = time.monotonic() + GROUP_GONE_TIMEOUT
    delay = 0.001
    while time.monotonic() < give_up:
        await asyncio.sleep(delay)
        if not signal_group(pgid, 0):
            return
        if delay >= ZOMBIE_CHECK_AFTER and not _group_has_live_members(pgid):
            return  # only zombies left: dead, waiting for init (or a lazy reaper) to reap them
        delay = min(delay * 2, 0.05)
    log.warning(
        "process group %s still exists %.1f s after SIGKILL (unreaped zombies? is the worker "
        "PID 1 without an init?)",
        pgid,
        GROUP_GONE_TIMEOUT,
    )


async def _drain(proto: _Collector) -> None:
    """Give the readers a short, bounded time to reach EOF."""
    if proto.pipes_closed.is_set():
        return
    try:
        async with asyncio.timeout(PIPE_GRACE):
            await proto.pipes_closed.wait()
    except TimeoutError:
        log.info(
            "extension output pipes still open after its process group is gone "
            "(a descendant left the group, e.g. with setsid); closing them"
        )


def _group_has_live_members(pgid: int) -> bool:
    """True if a process of group `pgid` is not a zombie; scans /proc (slow path only)."""
    try:
        entries = [entry.name for entry in os.scandir("/proc") if entry.name.isdigit()]
    except OSError:
        return True  # no /proc: trust killpg alone
    for name in entries:
        fields = _proc_stat_fields(int(name))
        if fields is not None and fields[2] == str(pgid).encode() and fields[0] not in b"ZX":
            return True
    return False


def _proc_stat_fields(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, ...; None if no process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()


def _prepare_run_dir(path: Path) -> None:
    """Create `path` 0700 if missing; refuse a symlink, a non-directory or a foreign owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    fix = "remove it or set CSEXT_RUN_DIR to a directory the worker owns"
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(f"run_dir {path} is a symlink; {fix}")
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"run_dir {path} is not a directory; {fix}")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"run_dir {path} is owned by uid {info.st_uid}, not by the worker's uid "
            f"{os.geteuid()}; {fix}"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def _write_payload(run_path: Path, payload: bytes) -> Path:
    path = run_path / PAYLOAD_NAME
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return path


def _remove_run_dir(run_path: Path) -> None:
    try:
        os.unlink(run_path / PAYLOAD_NAME)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(run_path / OWNER_NAME)
        os.rmdir(run_path)
    except OSError:  # the extension left files there, or the payload was never written
        shutil.rmtree(run_path, onerror=_log_rmtree_error)


def _write_owner(run_path: Path, pgid: int, run_id: str) -> None:
    """Record the run's process group so a later start-up can kill it if this worker dies."""
    try:
        fd = os.open(run_path / OWNER_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        log.debug("could not record process group %s: %s", pgid, exc)
        return
    try:
        os.write(fd, f"{pgid} {_start_token(pgid) or '0'} {run_id}".encode())
    finally:
        os.close(fd)


def _stale(name: str) -> bool:
    """A run directory (or run cgroup) whose worker process is gone."""
    owner = _parse_owner(name)
    if owner is None:
        return False
    return not (_start_token(owner[0]) == owner[1] or _alive_without_token(*owner))


def _kill_stale_run(run_path: Path) -> None:
    """SIGKILL the processes of a dead worker's run that still belong to it.

    A process belongs to the run when it is in the recorded process group and either is the
    recorded leader (same start time) or carries the run's `CSEXT_RUN_ID` in its environment;
    so a reused pid or process group id is never killed by mistake.
    """
    try:
        pgid_text, token, run_id = (run_path / OWNER_NAME).read_text().split(" ", 2)
        pgid = int(pgid_text)
    except (OSError, ValueError):
        return  # no record: the run had a cgroup, or never started
    marker = f"CSEXT_RUN_ID={run_id}".encode()
    for pid in _group_members(pgid):
        if (pid == pgid and _start_token(pid) == token) or (run_id and _has_env(pid, marker)):
            log.warning("killing process %s left running by a dead worker's run", pid)
            _kill_verified(pid)


def _group_members(pgid: int) -> list[int]:
    members = []
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                fields = _proc_stat_fields(int(entry.name))
                if fields is not None and fields[2] == str(pgid).encode() and fields[0] != b"Z":
                    members.append(int(entry.name))
    return members


def _has_env(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return marker in handle.read().split(b"\0")
    except OSError:
        return False


def _kill_verified(pid: int) -> None:
    """SIGKILL through a pidfd, so the pid cannot be reused between check and kill."""
    token = _start_token(pid)
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if _start_token(pid) == token:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(fd)


def _log_rmtree_error(function: object, path: str, exc_info: object) -> None:
    if not os.path.lexists(path):
        return
    log.warning("could not remove %s from a run directory: %s", path, exc_info)


def _start_token(pid: int) -> str | None:
    """The process start time (clock ticks since boot) from /proc: pid plus this survives
    pid reuse. None if there is no such process."""
    fields = _proc_stat_fields(pid)
    return fields[19].decode() if fields is not None and len(fields) > 19 else None


def _alive_without_token(pid: int, token: str) -> bool:
    """Owners recorded without a start time (no /proc) are judged by pid alone."""
    if token != "0":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse_owner(name: str) -> tuple[int, str] | None:
    if not name.startswith(RUN_DIR_PREFIX):
        return None
    parts = name.removeprefix(RUN_DIR_PREFIX).split("-")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[1]


def spawn_error(request: RunRequest, exc: OSError | ValueError) -> str:
    """A message that says what is wrong with the extension and how to fix it."""
    path = request.entrypoint
    if isinstance(exc, ValueError):
        return f"cannot run {path}: {exc}"
    if exc.filename is not None and str(exc.filename) == str(request.cwd):
        return f"cannot run {path}: working directory {request.cwd}: {exc.strerror}"
    if exc.errno == errno.ENOENT:
        if path.exists():
            return f"cannot run {path}: its #! interpreter was not found (check the first line)"
        return f"cannot run {path}: no such file"
    if exc.errno == errno.EACCES:
        return f"cannot run {path}: permission denied (is it executable? chmod +x {path})"
    if exc.errno == errno.ENOEXEC:
        return (
            f"cannot run {path}: exec format error (a script needs a #! line, "
            "a binary must be built for this machine)"
        )
    return f"cannot run {path}: {exc.strerror or exc}"


def _unrunnable(error: str, started: float) -> RunResult:
    return RunResult(exit_code=None, error=error, duration_ms=elapsed_ms(started))


def install_child_watcher() -> None:
    """Use asyncio's pidfd child watcher on Python 3.11 when the kernel supports it.

    3.11's default ThreadedChildWatcher starts a thread per child process; the pidfd watcher
    waits in the event loop instead and is measurably faster. 3.12+ picks pidfd by itself.
    Call from inside the running loop (the worker does, at start); calling again only
    re-attaches the watcher to the current loop.
    """
    if sys.version_info >= (3, 12) or not _pidfd_works():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        policy = asyncio.get_event_loop_policy()
        watcher = policy.get_child_watcher()
        if not isinstance(watcher, asyncio.PidfdChildWatcher):
            watcher = asyncio.PidfdChildWatcher()
            policy.set_child_watcher(watcher)
        # set_child_watcher attaches no loop, and a detached pidfd watcher refuses to spawn
        # ("not activated"): attach the running loop when called inside one.
        with contextlib.suppress(RuntimeError):
            watcher.attach_loop(asyncio.get_running_loop())


def _pidfd_works() -> bool:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return False
    try:
        os.close(pidfd_open(os.getpid()))
    except OSError:
        return False
    return True
