"""The coprocess runtime: warm extension processes, one JSON line in, one JSON line out.

Spawning a process per call costs milliseconds (more for Python or Java); hooks called at
high rates (`spec.runtime: coprocess`) instead keep up to `spec.concurrency` warm processes
per extension, each serving one request at a time over its stdin/stdout. The wire protocol is
in docs/coprocess.md; this module is the worker's side of it.

Each process is started lazily as `<entrypoint> --coprocess` in its own session and process
group, with the extension's environment minus the per-run `CSEXT_*` variables, plus
`CSEXT_RUNTIME=coprocess`. The payload travels inline on the pipe (credentials never touch
disk); the per-run values travel in the request line.

What the pool guarantees, per request:

- deadline: no answer by the deadline -> the group gets SIGTERM, then SIGKILL after
  `kill_grace`; the request is reported `timed_out` once the process is reaped, and a new
  process takes the slot on the next request.
- bounded memory: stdout is read by a protocol that keeps at most one response line of
  `line_limit` bytes (2 x output_cap + 64 KiB); a longer line fails the request (flagged as
  truncated) and replaces the process. stderr is drained into a 64 KiB ring buffer, kept only
  for diagnostics of a process that failed. The `stdout`/`stderr` fields are cut to
  `output_cap` bytes each, like exec runs.
- garbage (not JSON, wrong id, bad fields), output outside a request, death mid-request: the
  request fails with a clear `error` (exit code or signal included) and the process is replaced.
- no hot loop: consecutive failures (a process dying, garbage, a failed spawn) put the pool in
  exponential backoff (`backoff_initial` doubling up to `backoff_max`, the first replacement is
  immediate); while in backoff, requests that would need a new process fail at once with the
  reason. One good answer ends the streak.
- recycling: a process is retired (stdin closed, then SIGTERM/SIGKILL after grace) after
  `max_requests` answers or when its group's RSS exceeds `max_rss_mb` (read from /proc at most
  once a second per process); 0 disables either.
- `aclose()` waits (bounded) for requests in flight, then stops every process and reaps it.

Linux only (process groups, /proc).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Final

import orjson

from csext.schemas.run import RunResult
from csext.worker import metrics
from csext.worker.runtimes.procgroup import GROUP_GONE_TIMEOUT, elapsed_ms, signal_group
from csext.worker.runtimes.runner import RunRequest, spawn_error

log = logging.getLogger(__name__)

COPROCESS_FLAG: Final = "--coprocess"
"""argv[1] of a coprocess; an entrypoint can serve both runtimes by looking at it."""
RUNTIME_ENV: Final = "CSEXT_RUNTIME"
PER_RUN_ENV: Final = frozenset(
    {"CSEXT_ACTION", "CSEXT_RUN_ID", "CSEXT_ATTEMPT", "CSEXT_DEADLINE", "CSEXT_EVENT_KEY"}
)
"""Per-run variables of the exec environment; a coprocess gets them in each request line."""
DEFAULT_MAX_REQUESTS: Final = 100_000
DEFAULT_MAX_RSS_MB: Final = 256
STDERR_RING: Final = 64 * 1024
LINE_SLACK: Final = 64 * 1024
"""Room in a response line for JSON quoting and the other fields, beyond 2 x output_cap."""
RSS_CHECK_INTERVAL: Final = 1.0
EXIT_GRACE: Final = 0.5
"""Seconds after the process exits for the rest of its stdout to arrive."""


ForkGate = Callable[[], Awaitable[None]]
"""Awaited before a fork; returns when forking now lands the child where it belongs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CoprocessLimits:
    """How every pool of a runtime treats its processes."""

    output_cap: int = 1024 * 1024
    """Bytes kept of each of a response's stdout and stderr (settings.output_cap)."""
    kill_grace: float = 2.0
    """Seconds between SIGTERM and SIGKILL (and for a retired process to exit on EOF)."""
    max_requests: int = DEFAULT_MAX_REQUESTS
    """Answers after which a process is replaced; 0: never."""
    max_rss_mb: int = DEFAULT_MAX_RSS_MB
    """Resident memory of a process group (MiB) above which it is replaced; 0: never."""
    backoff_initial: float = 0.1
    backoff_max: float = 10.0

    @property
    def line_limit(self) -> int:
        return 2 * self.output_cap + LINE_SLACK


class _Failure(Exception):
    """A request got no usable answer; the process that served it is replaced."""

    def __init__(self, reason: str, *, kind: str = "garbage") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        """`garbage`, `overflow`, `timeout`, `died` or `closed`."""


def _fail(waiter: asyncio.Future[bytes] | None, failure: _Failure) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_exception(failure)


class _Channel(asyncio.SubprocessProtocol):
    """Reads one process's stdout line by line (bounded) and its stderr into a ring buffer."""

    def __init__(self, line_limit: int) -> None:
        self._limit = line_limit
        self._buffer = bytearray()
        self._loop = asyncio.get_running_loop()
        self.waiter: asyncio.Future[bytes] | None = None
        self.stderr = bytearray()
        self.exited = asyncio.Event()
        self.fault: str | None = None
        """Why this process may not serve another request (it is replaced)."""
        self.ended = False
        """Its stdout closed or it exited."""

    def expect(self) -> asyncio.Future[bytes]:
        """The future of the next response line; failed at once if none can come."""
        waiter = self._loop.create_future()
        if self.fault is None:
            self.waiter = waiter
        elif self.ended:  # it ended while starting up, before the first request
            waiter.set_exception(_Failure(self.fault, kind="died"))
        else:
            waiter.set_exception(_Failure(self.fault))
        return waiter

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self._stdout(data)
            return
        ring = self.stderr
        ring += data
        if len(ring) > STDERR_RING:
            del ring[: len(ring) - STDERR_RING]

    def _stdout(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            self._set_fault("it wrote to stdout outside a request")
            return
        buffer = self._buffer
        if not buffer and data.find(b"\n") == len(data) - 1:  # the usual case: one whole line
            line = data[:-1] if len(data) <= self._limit else None
        else:
            buffer += data
            end = buffer.find(b"\n")
            if end < 0 and len(buffer) <= self._limit:
                return
            line = bytes(buffer[:end]) if 0 <= end <= self._limit else None
            if line is not None and end + 1 < len(buffer):
                self._set_fault("it wrote more than one line for one request")
            buffer.clear()
        self.waiter = None
        if line is None:
            self._set_fault("response line too long")
            waiter.set_exception(
                _Failure(f"response line longer than {self._limit} bytes", kind="overflow")
            )
        else:
            waiter.set_result(line)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.ended = True
            self._set_fault("it closed its stdout")
            _fail(self.waiter, _Failure("it closed its stdout", kind="died"))

    def process_exited(self) -> None:
        self.ended = True
        self.exited.set()
        self._set_fault("it exited")
        if self.waiter is not None:  # stdout EOF normally follows; a grandchild may hold it
            waiter = self.waiter
            self._loop.call_later(EXIT_GRACE, _fail, waiter, _Failure("it exited", kind="died"))

    def _set_fault(self, reason: str) -> None:
        if self.fault is None:
            self.fault = reason


class _Stop(Enum):
    FAILED = "failed"
    """It misbehaved: SIGTERM now, SIGKILL after grace."""
    RETIRE = "retire"
    """Recycled: close stdin and let it exit, then as FAILED after grace."""
    CLOSE = "close"
    """Shutdown: close stdin and SIGTERM together, SIGKILL after grace."""


class _Coprocess:
    __slots__ = (
        "answered",
        "channel",
        "exited_by_itself",
        "next_rss_check",
        "pid",
        "stop",
        "transport",
    )

    def __init__(self, transport: asyncio.SubprocessTransport, channel: _Channel) -> None:
        self.transport = transport
        self.channel = channel
        self.pid: int = transport.get_pid()
        self.answered = 0
        self.next_rss_check = 0.0
        self.stop: asyncio.Task[None] | None = None
        self.exited_by_itself = False

    def send(self, line: bytes) -> None:
        stdin = self.transport.get_pipe_transport(0)
        if isinstance(stdin, asyncio.WriteTransport):
            stdin.write(line)

    def close_stdin(self) -> None:
        stdin = self.transport.get_pipe_transport(0)
        if stdin is not None:
            stdin.close()

    def describe_exit(self) -> str:
        """How the process ended, for an error message (after `_stop`)."""
        code = self.transport.get_returncode()
        if code is None or not self.exited_by_itself:
            return "it closed its stdout (it was then terminated)"
        if code < 0:
            try:
                return f"it was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"it was killed by signal {-code}"
        return f"it exited with code {code}"


class CoprocessPool:
    """Warm processes of one extension; `run` mirrors `ExecRunner.run`."""

    def __init__(
        self,
        *,
        name: str,
        entrypoint: Path,
        env: Mapping[str, str],
        cwd: Path,
        concurrency: int,
        limits: CoprocessLimits,
        fork_gate: ForkGate | None = None,
    ) -> None:
        self.name = name
        self.entrypoint = entrypoint
        self.env = dict(env)
        """The process environment, without the per-run variables and CSEXT_RUNTIME."""
        self.cwd = cwd
        self.concurrency = concurrency
        self._limits = limits
        self._fork_gate = fork_gate
        self._slots = asyncio.Semaphore(concurrency)
        self._idle: list[_Coprocess] = []
        self._live: dict[int, _Coprocess] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._busy = 0
        self._idle_again = asyncio.Event()
        self._closing = False
        self._failures = 0
        self._retry_at = 0.0
        self._last_failure = ""
        self._last_stderr = b""
        self.spawned = 0
        """Processes started so far (for tests and metrics)."""

    @property
    def pids(self) -> list[int]:
        """Processes currently serving or waiting for requests."""
        return list(self._live)

    def matches(self, request: RunRequest, concurrency: int, env: Mapping[str, str]) -> bool:
        """Whether this pool runs what `request` asks for (else the extension changed)."""
        return (
            self.entrypoint == request.entrypoint
            and self.cwd == request.cwd
            and self.concurrency == concurrency
            and self.env == env
        )

    async def run(self, request: RunRequest) -> RunResult:
        """Serve one request; never raises for a failing extension (see RunResult)."""
        started = time.monotonic()
        if self._closing:
            return _error(f"the coprocess pool of {self.name} is closed", started)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.timeout
        if request.timeout <= 0 or not await self._acquire(deadline):
            return RunResult(exit_code=None, timed_out=True, duration_ms=elapsed_ms(started))
        self._busy += 1
        try:
            return await self._run_in_slot(request, started, deadline)
        finally:
            self._busy -= 1
            self._slots.release()
            if not self._busy:
                self._idle_again.set()

    async def _acquire(self, deadline: float) -> bool:
        if not self._slots.locked():
            await self._slots.acquire()
            return True
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            return False
        return True

    async def _run_in_slot(self, request: RunRequest, started: float, deadline: float) -> RunResult:
        if self._closing:
            return _error(f"the coprocess pool of {self.name} is closed", started)
        proc = self._take_idle()
        if proc is None:
            blocked = self._backoff_error(started)
            if blocked is not None:
                return blocked
            try:
                proc = await self._spawn(request)
            except (OSError, ValueError) as exc:
                error = spawn_error(request, exc)
                self._note_failure(error, b"")
                log.warning("coprocess of %s could not be started: %s", self.name, error)
                return _error(error, started)
            if self._closing:
                await self._retire(proc, _Stop.CLOSE)
                return _error(f"the coprocess pool of {self.name} is closed", started)
        return await self._exchange(proc, request, started, deadline)

    def _take_idle(self) -> _Coprocess | None:
        while self._idle:
            proc = self._idle.pop()
            if proc.channel.fault is None:
                return proc
            self._note_failure(f"idle process {proc.pid}: {proc.channel.fault}", proc)
            self._retire(proc, _Stop.FAILED)
        return None

    async def _spawn(self, request: RunRequest) -> _Coprocess:
        if not self.entrypoint.is_absolute():
            raise ValueError(f"entrypoint {self.entrypoint} is not an absolute path")
        loop = asyncio.get_running_loop()
        if self._fork_gate is not None:
            await self._fork_gate()  # no await between this and the fork below
        started = time.monotonic()
        transport, channel = await loop.subprocess_exec(
            lambda: _Channel(self._limits.line_limit),
            str(self.entrypoint),
            COPROCESS_FLAG,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
            env={**self.env, RUNTIME_ENV: "coprocess"},
            start_new_session=True,
        )
        proc = _Coprocess(transport, channel)
        self._live[proc.pid] = proc
        self.spawned += 1
        metrics.coprocess_started(self.name, time.monotonic() - started)
        log.debug("coprocess of %s started, pid %s", self.name, proc.pid)
        return proc

    async def _exchange(
        self, proc: _Coprocess, request: RunRequest, started: float, deadline: float
    ) -> RunResult:
        rid = str(next(self._ids))
        try:
            line = _request_line(rid, request)
        except orjson.JSONDecodeError as exc:
            self._idle.append(proc)
            return _error(f"the payload is not JSON, a coprocess cannot take it: {exc}", started)
        waiter = proc.channel.expect()
        proc.send(line)
        timer = asyncio.get_running_loop().call_at(
            deadline, _fail, waiter, _Failure("deadline", kind="timeout")
        )
        try:
            raw = await waiter
            return self._answered(proc, _parse(raw, rid, self._limits.output_cap), started)
        except _Failure as failure:
            return await self._failed(proc, failure, started)
        except BaseException:  # cancelled: the process is mid-request, it cannot be reused
            proc.channel.waiter = None
            self._retire(proc, _Stop.FAILED)
            raise
        finally:
            timer.cancel()

    def _answered(self, proc: _Coprocess, result: RunResult, started: float) -> RunResult:
        result.duration_ms = elapsed_ms(started)
        result.pid = proc.pid
        self._failures = 0
        proc.answered += 1
        reason = self._recycle_reason(proc)
        if reason is not None:
            log.info("recycling coprocess %s of %s: %s", proc.pid, self.name, reason)
            metrics.coprocess_recycled(self.name)
            self._retire(proc, _Stop.RETIRE)
        elif proc.channel.fault is not None:
            self._note_failure(f"process {proc.pid}: {proc.channel.fault}", proc)
            self._retire(proc, _Stop.FAILED)
        else:
            self._idle.append(proc)
        return result

    def _recycle_reason(self, proc: _Coprocess) -> str | None:
        limits = self._limits
        if limits.max_requests and proc.answered >= limits.max_requests:
            return f"served {proc.answered} requests (max_requests)"
        if not limits.max_rss_mb:
            return None
        now = time.monotonic()
        if now < proc.next_rss_check:
            return None
        proc.next_rss_check = now + RSS_CHECK_INTERVAL
        rss_kb = group_rss_kb(proc.pid)
        if rss_kb > limits.max_rss_mb * 1024:
            return f"its processes use {rss_kb // 1024} MiB RSS (max_rss_mb {limits.max_rss_mb})"
        return None

    async def _failed(self, proc: _Coprocess, failure: _Failure, started: float) -> RunResult:
        patience = EXIT_GRACE if failure.kind == "died" else 0.0
        await self._retire(proc, _Stop.FAILED, patience=patience)
        stderr = bytes(proc.channel.stderr[-self._limits.output_cap :])
        if failure.kind == "timeout":
            return RunResult(
                exit_code=None,
                stderr=stderr,
                timed_out=True,
                duration_ms=elapsed_ms(started),
                pid=proc.pid,
            )
        if self._closing:
            reason = "the coprocess pool was closed while the request ran"
        elif failure.kind == "died":
            reason = f"coprocess {proc.pid} died mid-request: {proc.describe_exit()}"
        else:
            reason = f"coprocess {proc.pid} broke the protocol: {failure.reason}"
        if not self._closing:
            self._note_failure(reason, proc)
            log.warning("coprocess of %s: %s", self.name, reason)
        return RunResult(
            exit_code=proc.transport.get_returncode() if failure.kind == "died" else None,
            stderr=stderr,
            duration_ms=elapsed_ms(started),
            stdout_truncated=failure.kind == "overflow",
            error=reason,
            pid=proc.pid,
        )

    def _note_failure(self, reason: str, proc: _Coprocess | bytes) -> None:
        metrics.coprocess_crashed(self.name)
        self._failures += 1
        self._last_failure = reason
        self._last_stderr = proc if isinstance(proc, bytes) else bytes(proc.channel.stderr)
        exponent = min(self._failures - 2, 30)
        delay = 0.0 if exponent < 0 else self._limits.backoff_initial * 2**exponent
        self._retry_at = time.monotonic() + min(delay, self._limits.backoff_max)

    def _backoff_error(self, started: float) -> RunResult | None:
        wait = self._retry_at - time.monotonic()
        if self._failures < 2 or wait <= 0:
            return None
        return _error(
            f"the coprocess of {self.name} keeps failing ({self._failures} times in a row, "
            f"last: {self._last_failure}); no new process for another {wait:.1f} s",
            started,
            stderr=self._last_stderr[-self._limits.output_cap :],
        )

    def _retire(self, proc: _Coprocess, how: _Stop, *, patience: float = 0.0) -> asyncio.Task[None]:
        """Stop `proc` once (idempotent); the task is kept until it is done.

        `patience`: seconds to wait for it to exit by itself before signalling it (a process
        whose stdout just closed is usually exiting; its own exit code is worth reporting).
        """
        if proc.stop is None:
            self._live.pop(proc.pid, None)
            proc.stop = asyncio.get_running_loop().create_task(self._stop(proc, how, patience))
            self._stopping.add(proc.stop)
            proc.stop.add_done_callback(self._stopping.discard)
        return proc.stop

    async def _stop(self, proc: _Coprocess, how: _Stop, patience: float) -> None:
        grace = self._limits.kill_grace
        if how is _Stop.RETIRE:
            patience = grace
        try:
            if how is not _Stop.FAILED:
                proc.close_stdin()
            proc.exited_by_itself = how is not _Stop.CLOSE and await _wait_exit(proc, patience)
            if not proc.channel.exited.is_set():
                signal_group(proc.pid, signal.SIGTERM)
                if not await _wait_exit(proc, grace):
                    log.info("coprocess %s outlived the kill grace: SIGKILL", proc.pid)
                    signal_group(proc.pid, signal.SIGKILL)
                    await _wait_exit(proc, GROUP_GONE_TIMEOUT)
            await _clear_group(proc.pid)
        finally:
            proc.transport.close()

    async def aclose(self, *, drain_timeout: float | None = None) -> None:
        """Let requests in flight finish (within `drain_timeout`), then stop every process."""
        self._closing = True
        await self._wait_idle(drain_timeout)
        self._idle.clear()
        for proc in list(self._live.values()):
            self._retire(proc, _Stop.CLOSE)
        # Requests cut short by the stop above finish as soon as their process is gone.
        await self._wait_idle(self._limits.kill_grace + GROUP_GONE_TIMEOUT)
        while self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)

    async def _wait_idle(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._busy:
                    self._idle_again.clear()
                    await self._idle_again.wait()


class CoprocessRuntime:
    """A pool per extension name; a changed extension gets a fresh pool."""

    def __init__(self, limits: CoprocessLimits, fork_gate: ForkGate | None = None) -> None:
        """`fork_gate`: awaited right before each spawn; the exec runtime's, so a coprocess is
        never born inside an exec run's cgroup (see ExecRunner.fork_gate)."""
        self._limits = limits
        self._fork_gate = fork_gate
        self._pools: dict[str, CoprocessPool] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def pool(self, name: str) -> CoprocessPool | None:
        return self._pools.get(name)

    async def run(self, name: str, request: RunRequest, *, concurrency: int) -> RunResult:
        """Run `request` on a warm process of extension `name` (started if needed).

        `request.env` is the exec environment of the run: its per-run `CSEXT_*` values go
        into the request line, the rest is the process environment. A different entrypoint,
        cwd, concurrency or environment means the extension changed: the old pool is drained
        and closed in the background, and a new one serves this request.
        """
        env = process_env(request.env)
        pool = self._pools.get(name)
        if pool is None or not pool.matches(request, concurrency, env):
            if pool is not None:
                log.info("extension %s changed: replacing its coprocesses", name)
                self._close_later(pool)
            pool = CoprocessPool(
                name=name,
                entrypoint=request.entrypoint,
                env=env,
                cwd=request.cwd,
                concurrency=concurrency,
                limits=self._limits,
                fork_gate=self._fork_gate,
            )
            self._pools[name] = pool
        return await pool.run(request)

    def _close_later(self, pool: CoprocessPool) -> None:
        task = asyncio.get_running_loop().create_task(pool.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close_extension(self, name: str, *, drain_timeout: float | None = None) -> None:
        """The extension changed or went away: drain and stop its processes."""
        pool = self._pools.pop(name, None)
        if pool is not None:
            await pool.aclose(drain_timeout=drain_timeout)

    async def aclose(self, *, drain_timeout: float | None = None) -> None:
        """Stop every process of every extension and reap them."""
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(
            *(pool.aclose(drain_timeout=drain_timeout) for pool in pools),
            *self._closing,
            return_exceptions=True,
        )


def process_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a coprocess: an exec run's environment minus its per-run values."""
    return {key: value for key, value in env.items() if key not in PER_RUN_ENV}


def _request_line(rid: str, request: RunRequest) -> bytes:
    """`{"id","action","deadline","timeout",[run_id,attempt,event_key],"payload"}` + newline.

    The payload bytes are embedded as they are (no re-encoding) unless they contain a line
    break (pretty-printed JSON) or are empty (sent as null).
    """
    payload = request.payload
    if not payload or b"\n" in payload or b"\r" in payload:
        payload = orjson.dumps(orjson.loads(payload or b"null"))
    doc: dict[str, Any] = {
        "id": rid,
        "action": request.action,
        "deadline": time.time() + request.timeout,
        "timeout": request.timeout,
    }
    env = request.env
    if "CSEXT_RUN_ID" in env:
        doc["run_id"] = env["CSEXT_RUN_ID"]
    if "CSEXT_ATTEMPT" in env:
        attempt = env["CSEXT_ATTEMPT"]
        doc["attempt"] = int(attempt) if attempt.isdigit() else attempt
    if "CSEXT_EVENT_KEY" in env:
        doc["event_key"] = env["CSEXT_EVENT_KEY"]
    doc["payload"] = orjson.Fragment(payload)
    return orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE)


def _parse(raw: bytes, rid: str, cap: int) -> RunResult:
    """A response line as a RunResult; raises _Failure naming what is wrong with it."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Failure(f"the response is not JSON ({exc}): {raw[:100]!r}") from None
    if type(doc) is not dict:
        raise _Failure(f"the response is not a JSON object: {raw[:100]!r}")
    if doc.get("id") != rid:
        raise _Failure(f"the response id {doc.get('id')!r:.40} is not the request id {rid!r}")
    code = doc.get("exit_code")
    if type(code) is not int or not 0 <= code <= 255:
        raise _Failure(f"exit_code must be an integer 0-255 (got {code!r:.40})")
    if "result" in doc:
        if "stdout" in doc:
            raise _Failure('the response has both "stdout" and "result"; send one of them')
        stdout = orjson.dumps(doc["result"])
    else:
        stdout = _text(doc, "stdout")
    stderr = _text(doc, "stderr")
    return RunResult(
        exit_code=code,
        stdout=stdout[:cap],
        stderr=stderr[:cap],
        stdout_truncated=len(stdout) > cap,
        stderr_truncated=len(stderr) > cap,
    )


def _text(doc: dict[str, Any], key: str) -> bytes:
    value = doc.get(key)
    if value is None:
        return b""
    if type(value) is not str:
        raise _Failure(f'"{key}" must be a string (got {type(value).__name__})')
    return value.encode()


def group_rss_kb(pid: int, *, limit: int = 64) -> int:
    """VmRSS (KiB) of `pid` and its descendants (at most `limit` processes); 0 if gone."""
    total = 0
    pending = [pid]
    seen = 0
    while pending and seen < limit:
        current = pending.pop()
        seen += 1
        total += _vmrss_kb(current)
        pending.extend(_children(current))
    return total


def _vmrss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as handle:
                found.extend(int(child) for child in handle.read().split())
        except (OSError, ValueError):
            continue
    return found


async def _wait_exit(proc: _Coprocess, timeout: float) -> bool:
    if proc.channel.exited.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await proc.channel.exited.wait()
    except TimeoutError:
        return False
    return True


async def _clear_group(pgid: int) -> None:
    """SIGKILL what is left of the group (children of the coprocess); wait until it is gone.

    Unlike the exec runner's, this waits for zombies to be reaped too: nothing waits on a
    retired coprocess's report, so it can afford to."""
    if not signal_group(pgid, signal.SIGKILL):
        return
    give_up = time.monotonic() + GROUP_GONE_TIMEOUT
    delay = 0.001
    while time.monotonic() < give_up:
        await asyncio.sleep(delay)
        if not signal_group(pgid, 0):
            return
        delay = min(delay * 2, 0.05)
    log.warning("process group %s still exists %.1f s after SIGKILL", pgid, GROUP_GONE_TIMEOUT)


def _error(reason: str, started: float, *, stderr: bytes = b"") -> RunResult:
    return RunResult(exit_code=None, error=reason, stderr=stderr, duration_ms=elapsed_ms(started))
