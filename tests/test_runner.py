"""The exec runtime against real processes: argv contract, caps, deadlines, process groups."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from csext.schemas.errors import ConfigError
from csext.schemas.run import Outcome
from csext.worker.runtimes.runner import ExecRunner, RunRequest, install_child_watcher

FIXTURES = Path(__file__).parent / "fixtures" / "runner"
INSPECT = FIXTURES / "inspect.py"
BEHAVE = FIXTURES / "behave.sh"
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
MIB = 1024 * 1024


@pytest.fixture(autouse=True, scope="module")
def _pidfd_watcher() -> None:
    install_child_watcher()  # as the worker does at start-up


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture(params=[True, False], ids=["lean", "asyncio"])
def runner(run_dir: Path, request: pytest.FixtureRequest) -> Iterator[ExecRunner]:
    runner = ExecRunner(run_dir=run_dir, output_cap=MIB, kill_grace=0.2)
    runner._lean = request.param  # both spawn paths: LeanTransport and asyncio's (fallback)
    yield runner
    assert runner.running == 0
    assert os.listdir(run_dir) == [], "a run directory was left behind"


def request(
    entrypoint: Path = BEHAVE,
    action: str = "exit3",
    payload: bytes = b"",
    timeout: float = 30.0,
    cwd: Path = FIXTURES,
    env: dict[str, str] | None = None,
) -> RunRequest:
    return RunRequest(
        entrypoint=entrypoint,
        action=action,
        payload=payload,
        timeout=timeout,
        env=ENV if env is None else env,
        cwd=cwd,
    )


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return data[data.rfind(")") + 2 :].split()


def alive(pid: int) -> bool:
    """True while `pid` is a live process. A zombie is dead: it waits for init to reap it
    (this sandbox's init reaps orphans lazily)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    fields = proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    members = (proc_stat(int(p)) for p in os.listdir("/proc") if p.isdigit())
    return any(f is not None and f[2] == str(pgid) and f[0] not in ("Z", "X") for f in members)


async def wait_for_file(path: Path, timeout: float = 20.0) -> str:
    async with asyncio.timeout(timeout):
        while not path.exists():
            await asyncio.sleep(0.01)
    return path.read_text()


# ---- the argv, stdin, cwd and environment contract ----------------------------------------


async def test_argv_stdin_cwd_env_and_payload(
    runner: ExecRunner, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CSEXT_TEST_SENTINEL", "worker secret")
    env = {**ENV, "ONLY_THIS": "yes"}
    result = await runner.run(
        request(INSPECT, "start", b'{"vm": "i-2-4-VM"}', timeout=2.5, cwd=tmp_path, env=env)
    )
    assert result.outcome is Outcome.SUCCESS, result
    seen = json.loads(result.stdout)
    entrypoint, action, payload_file, timeout = seen["argv"]
    assert (entrypoint, action, timeout) == (str(INSPECT), "start", "3")
    assert Path(payload_file).name == "payload.json"
    assert Path(payload_file).parent.parent == run_dir
    assert not Path(payload_file).exists()
    assert seen["payload"] == '{"vm": "i-2-4-VM"}'
    assert seen["payload_mode"] == 0o600
    assert seen["dir_mode"] == 0o700
    assert seen["stdin"] == ""
    assert seen["cwd"] == str(tmp_path)
    assert seen["env"] == env  # exactly: nothing of the worker's environment
    assert seen["pid"] == seen["pgid"] == seen["sid"] == result.pid


@pytest.mark.parametrize(("timeout", "argv3"), [(0.2, "1"), (1.0, "1"), (1.01, "2"), (59.5, "60")])
async def test_timeout_argument_is_whole_seconds_rounded_up(
    runner: ExecRunner, timeout: float, argv3: str
) -> None:
    result = await runner.run(request(INSPECT, "status", timeout=timeout))
    assert json.loads(result.stdout)["argv"][3] == argv3


async def test_exit_code_stdout_stderr(runner: ExecRunner) -> None:
    result = await runner.run(request(action="exit3"))
    assert result.exit_code == 3
    assert result.outcome is Outcome.FAILED
    assert (result.stdout, result.stderr) == (b"to stdout\n", b"to stderr\n")
    assert not (result.stdout_truncated or result.stderr_truncated or result.timed_out)
    assert result.error is None
    assert result.duration_ms >= 0


async def test_concurrent_runs_are_independent(runner: ExecRunner) -> None:
    payloads = [json.dumps({"n": n}).encode() for n in range(20)]
    results = await asyncio.gather(*(runner.run(request(INSPECT, "x", p)) for p in payloads))
    seen = [json.loads(r.stdout)["payload"].encode() for r in results]
    assert seen == payloads
    assert len({json.loads(r.stdout)["argv"][2] for r in results}) == 20


# ---- output caps ------------------------------------------------------------------------------


def seq_output() -> bytes:
    return "".join(f"{n}\n" for n in range(1, 1001)).encode()


async def test_output_over_the_cap_keeps_the_first_bytes(run_dir: Path) -> None:
    runner = ExecRunner(run_dir=run_dir, output_cap=1000, kill_grace=0.2)
    result = await runner.run(request(action="seq"))
    assert result.exit_code == 0
    assert result.stdout == seq_output()[:1000]
    assert result.stdout_truncated
    assert not result.stderr_truncated


async def test_output_exactly_at_the_cap_is_not_truncated(run_dir: Path) -> None:
    runner = ExecRunner(run_dir=run_dir, output_cap=len(seq_output()), kill_grace=0.2)
    result = await runner.run(request(action="seq"))
    assert result.stdout == seq_output()
    assert not result.stdout_truncated


async def test_100_mib_of_output_neither_blocks_nor_grows_memory(runner: ExecRunner) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result = await runner.run(request(action="flood", timeout=60))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert result.exit_code == 0, result.stderr_tail()
    assert not result.timed_out
    assert result.stdout == bytes(MIB)
    assert result.stderr == bytes(MIB)
    assert result.stdout_truncated and result.stderr_truncated
    assert grown_mib < 30, f"the test process grew by {grown_mib:.0f} MiB"


# ---- deadlines and process groups -------------------------------------------------------------


async def test_deadline_sigterms_the_group(runner: ExecRunner) -> None:
    result = await runner.run(request(action="sleep", timeout=0.3))
    assert result.timed_out
    assert result.outcome is Outcome.TIMEOUT
    assert result.exit_code == -signal.SIGTERM
    assert result.pid is not None and not group_alive(result.pid)


async def test_deadline_sigkills_a_group_that_ignores_sigterm(
    runner: ExecRunner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    result = await runner.run(request(action="stubborn", payload=bytes(pidfile), timeout=0.5))
    leader, grandchild = map(int, pidfile.read_text().split())
    assert result.timed_out
    assert result.exit_code == -signal.SIGKILL
    assert leader == result.pid
    assert not alive(leader)
    assert not alive(grandchild)
    assert not group_alive(leader)


async def test_normal_exit_kills_what_is_left_of_the_group(
    runner: ExecRunner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    result = await runner.run(request(action="forget", payload=bytes(pidfile)))
    leader, grandchild = map(int, pidfile.read_text().split())
    assert (result.exit_code, result.stdout, result.timed_out) == (0, b"bye\n", False)
    assert not alive(grandchild)
    assert not group_alive(leader)


async def test_a_setsid_grandchild_holding_stdout_does_not_hang_the_run(
    runner: ExecRunner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "escaped"
    try:
        async with asyncio.timeout(30):
            result = await runner.run(request(action="escape", payload=bytes(pidfile)))
        assert result.exit_code == 0
        assert result.stdout == b"leader done\n"
        assert alive(int(pidfile.read_text()))  # documented: outside the group, survives
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


async def test_cancellation_kills_reaps_and_cleans_up(
    runner: ExecRunner, run_dir: Path, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    task = asyncio.create_task(runner.run(request(action="stubborn", payload=bytes(pidfile))))
    leader, grandchild = map(int, (await wait_for_file(pidfile)).split())
    assert runner.running == 1
    assert len(os.listdir(run_dir)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(leader)
    assert not alive(grandchild)
    assert not group_alive(leader)


async def test_cancellation_during_the_spawn_kills_the_whole_group(
    runner: ExecRunner, tmp_path: Path
) -> None:
    # Only asyncio's subprocess transport (the fallback without pidfds) has suspension points
    # inside the spawn; the default LeanTransport spawns synchronously (see worker/child.py),
    # so a cancellation lands before or after it, which the other tests cover.
    runner._lean = False
    pidfile = tmp_path / "pids"
    task = asyncio.create_task(runner.run(request(action="stubborn", payload=bytes(pidfile))))
    await asyncio.sleep(0)  # let run() reach the spawn
    task.cancel()

    def block_until_the_grandchild_exists() -> None:
        # Deliberately holds the loop while the process starts, so the cancellation lands
        # before subprocess_exec returns but after the grandchild holds the pipes.
        give_up = time.monotonic() + 20
        while not pidfile.exists() and time.monotonic() < give_up:
            time.sleep(0.01)

    asyncio.get_running_loop().call_soon(block_until_the_grandchild_exists)
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(20):
            await task
    leader, grandchild = map(int, pidfile.read_text().split())
    assert not alive(leader)
    assert not alive(grandchild)
    assert not group_alive(leader)


async def test_kill_all_sigkills_running_groups(runner: ExecRunner, tmp_path: Path) -> None:
    pidfiles = [tmp_path / "a", tmp_path / "b"]
    tasks = [
        asyncio.create_task(runner.run(request(action="stubborn", payload=bytes(p))))
        for p in pidfiles
    ]
    for pidfile in pidfiles:
        await wait_for_file(pidfile)
    assert runner.running == 2
    runner.kill_all()
    results = await asyncio.gather(*tasks)
    assert [r.exit_code for r in results] == [-signal.SIGKILL, -signal.SIGKILL]
    assert not any(r.timed_out for r in results)
    for pidfile in pidfiles:
        assert not any(alive(int(pid)) for pid in pidfile.read_text().split())


async def test_after_kill_all_new_runs_are_killed_at_once(runner: ExecRunner) -> None:
    runner.kill_all()
    result = await runner.run(request(action="stubborn"))
    assert result.exit_code == -signal.SIGKILL
    assert not result.timed_out


# ---- spawn failures ---------------------------------------------------------------------------


def write_executable(path: Path, content: bytes, mode: int = 0o755) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no such file"),
        ("not-executable", "permission denied"),
        ("directory", "permission denied"),
        ("garbage", "exec format error"),
        ("bad-interpreter", "#! interpreter was not found"),
        ("missing-cwd", "working directory"),
        ("relative", "not an absolute path"),
        ("nul-in-env", "null"),
    ],
)
async def test_spawn_failure_is_a_result_not_an_exception(
    runner: ExecRunner, tmp_path: Path, case: str, message: str
) -> None:
    entrypoint, cwd, env = BEHAVE, FIXTURES, ENV
    if case == "missing":
        entrypoint = tmp_path / "nope.sh"
    elif case == "not-executable":
        entrypoint = write_executable(tmp_path / "x.sh", b"#!/bin/sh\necho hi\n", 0o644)
    elif case == "directory":
        entrypoint = tmp_path
    elif case == "garbage":
        entrypoint = write_executable(tmp_path / "x.bin", b"\x00\x01\x02 not a program\n")
    elif case == "bad-interpreter":
        entrypoint = write_executable(tmp_path / "x.sh", b"#!/nonexistent/interp\n")
    elif case == "missing-cwd":
        cwd = tmp_path / "gone"
    elif case == "relative":
        entrypoint = Path("tests/fixtures/runner/behave.sh")
    elif case == "nul-in-env":
        env = {**ENV, "BAD": "a\0b"}
    result = await runner.run(request(entrypoint, "start", b"{}", cwd=cwd, env=env))
    assert result.exit_code is None
    assert result.outcome is Outcome.ERROR
    assert result.error is not None and message in result.error, result.error
    if case != "relative":
        assert str(entrypoint) in result.error


async def test_run_dir_removed_from_under_the_runner_is_recreated(
    runner: ExecRunner, run_dir: Path
) -> None:
    run_dir.rmdir()
    result = await runner.run(request(action="exit3"))
    assert result.exit_code == 3
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700


# ---- the run directory ------------------------------------------------------------------------


def test_run_dir_is_created_private(tmp_path: Path) -> None:
    run_dir = tmp_path / "a" / "runs"
    ExecRunner(run_dir=run_dir, output_cap=MIB, kill_grace=1)
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700


def test_existing_run_dir_is_made_private(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs"
    run_dir.mkdir(mode=0o755)
    run_dir.chmod(0o755)
    ExecRunner(run_dir=run_dir, output_cap=MIB, kill_grace=1)
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700


def test_symlinked_run_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "runs").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigError, match="is a symlink"):
        ExecRunner(run_dir=tmp_path / "runs", output_cap=MIB, kill_grace=1)


def test_run_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("")
    with pytest.raises(ConfigError, match="is not a directory"):
        ExecRunner(run_dir=tmp_path / "runs", output_cap=MIB, kill_grace=1)


@pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to create a directory owned by another uid"
)
def test_run_dir_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs"
    run_dir.mkdir(mode=0o700)
    os.chown(run_dir, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        ExecRunner(run_dir=run_dir, output_cap=MIB, kill_grace=1)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_cleanup_stale_removes_only_dirs_of_dead_workers(runner: ExecRunner, run_dir: Path) -> None:
    ours = next(iter(os.listdir(run_dir)), None)
    assert ours is None
    with open(f"/proc/{os.getpid()}/stat") as handle:
        start = handle.read().rsplit(")", 1)[1].split()[19]
    me = os.getpid()
    dead = run_dir / f"run-{dead_pid()}-12345-0"
    reused = run_dir / f"run-{me}-{int(start) - 1}-7"  # our pid, another process's start time
    alive = run_dir / f"run-{me}-{start}-3"
    other = run_dir / "not-a-run-dir"
    for path in (dead, reused, alive, other):
        path.mkdir()
    (dead / "payload.json").write_text("{}")
    assert runner.cleanup_stale() == 2
    assert sorted(os.listdir(run_dir)) == sorted([alive.name, other.name])
    alive.rmdir()
    other.rmdir()


async def test_install_child_watcher_is_idempotent_and_warning_free(runner: ExecRunner) -> None:
    install_child_watcher()
    install_child_watcher()
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        policy = asyncio.get_event_loop_policy()
        assert isinstance(policy.get_child_watcher(), asyncio.PidfdChildWatcher)
    result = await runner.run(request(action="exit3"))
    assert result.exit_code == 3


async def test_lean_spawn_without_a_pidfd_leaves_no_process(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of file descriptors right after the fork: the run is reported unrunnable and the
    child it had started is killed and reaped, not left running unwatched."""
    runner = ExecRunner(run_dir=run_dir, output_cap=MIB, kill_grace=0.2)
    if not runner._lean:
        pytest.skip("no pidfds here: the lean spawn is not used")
    pidfile = tmp_path / "pids"
    real_pidfd_open = os.pidfd_open
    spawned: list[int] = []

    def no_fds(pid: int, flags: int = 0) -> int:
        spawned.append(pid)
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "pidfd_open", no_fds)
    result = await runner.run(request(action="sleep", payload=bytes(pidfile)))
    monkeypatch.setattr(os, "pidfd_open", real_pidfd_open)
    assert result.exit_code is None and "Too many open files" in (result.error or "")
    assert spawned and not alive(spawned[0])
    assert os.listdir(run_dir) == []
