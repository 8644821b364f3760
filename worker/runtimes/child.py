"""A child process watched straight from the event loop: a pidfd for its exit, two pipes.

`loop.subprocess_exec` spawns through `subprocess.Popen` too, then wraps the child in a
transport, three pipe transports, futures for their connection and a child-watcher callback.
Skipping that saves ~50 µs of worker CPU per run (~15 % of the runner's own cost; 8 no-op runs
at a time, measured in bench/optimisations.md). `LeanTransport` keeps the same spawn (Popen,
vfork, `start_new_session`) and feeds the same `asyncio.SubprocessProtocol` callbacks the runner's
collector implements (`pipe_data_received`, `pipe_connection_lost`, `process_exited`) from
three `add_reader` callbacks: stdout, stderr and a pidfd that becomes readable when the child
exits (Linux ≥ 5.3). The runner falls back to `loop.subprocess_exec` where pidfds do not work.

Like asyncio's transport, `close()` SIGKILLs a leader that is still running; the child is
reaped as soon as it exits, whoever closed what.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

_READ_SIZE = 1 << 18


class ChildTransport(Protocol):
    """What the runner needs of a spawned child: `LeanTransport` or asyncio's transport."""

    def get_pid(self) -> int: ...

    def get_returncode(self) -> int | None: ...

    def close(self) -> None: ...


class LeanTransport:
    """The subset of `asyncio.SubprocessTransport` the exec runner uses."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        protocol: asyncio.SubprocessProtocol,
    ) -> None:
        """Spawn now (synchronously: the fork happens before this returns). Raises OSError
        (or ValueError) exactly as `subprocess.Popen` does."""
        self._loop = asyncio.get_running_loop()
        self._protocol = protocol
        self._returncode: int | None = None
        self._pipes: dict[int, int] = {}
        """fd → 1 (stdout) or 2 (stderr), while open."""
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        try:
            self._pidfd = os.pidfd_open(self._popen.pid)
        except OSError:  # e.g. out of file descriptors: the child must not outlive the error
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._popen.pid, signal.SIGKILL)
            self._popen.wait()
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        for fd, which in ((out_r, 1), (err_r, 2)):
            os.set_blocking(fd, False)
            self._pipes[fd] = which
            self._loop.add_reader(fd, self._read, fd)
        self._loop.add_reader(self._pidfd, self._reap)

    def get_pid(self) -> int:
        return self._popen.pid

    def get_returncode(self) -> int | None:
        return self._returncode

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self._protocol.pipe_data_received(self._pipes[fd], data)
            return
        which = self._close_pipe(fd)
        self._protocol.pipe_connection_lost(which, None)

    def _close_pipe(self, fd: int) -> int:
        which = self._pipes.pop(fd)
        self._loop.remove_reader(fd)
        os.close(fd)
        return which

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self._popen.pid, os.WNOHANG)
        except ChildProcessError:  # reaped by someone else: the status is lost
            pid, status = self._popen.pid, 255 << 8
        if pid == 0:
            return  # not yet (spurious wake-up)
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._returncode = self._popen.returncode = os.waitstatus_to_exitcode(status)
        self._protocol.process_exited()

    def close(self) -> None:
        """Stop reading; SIGKILL the leader if it still runs (it is reaped when it exits)."""
        for fd in list(self._pipes):
            self._close_pipe(fd)
        if self._returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
