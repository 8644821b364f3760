"""The coprocess runtime against real processes: bash and Python coprocesses, the SDK helper,
and every way a warm process can misbehave (hang, flood, garbage, crash, crash loop)."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from workerkit import wait_until

from csext.worker.runtimes.coprocess import (
    CoprocessLimits,
    CoprocessPool,
    CoprocessRuntime,
    group_rss_kb,
    process_env,
)
from csext.worker.runtimes.runner import RunRequest
from csext.worker.settings import DEFAULT_PATH

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "store" / "templates" / "coprocess"
SDK = REPO / "sdk" / "coprocess.py"

BASE_ENV = {
    "PATH": DEFAULT_PATH,
    "LANG": "C.UTF-8",
    "CSEXT_EXTENSION": "demo",
    "CSEXT_HOOK": "event",
    "CSEXT_ACTION": "x",
    "CSEXT_RUN_ID": "run-1",
    "CSEXT_ATTEMPT": "2",
    "CSEXT_DEADLINE": "0",
    "CSEXT_EVENT_KEY": "key-1",
}

# A coprocess written without the SDK, straight from the protocol, that misbehaves on demand.
RAW = """#!{python}
import json, os, signal, subprocess, sys, time
out = sys.stdout.buffer
print("raw coprocess starting", file=sys.stderr, flush=True)
for line in sys.stdin.buffer:
    req = json.loads(line)
    action, rid, payload = req["action"], req["id"], req["payload"]
    reply = {{"id": rid, "exit_code": 0, "stdout": json.dumps({{"pid": os.getpid()}})}}
    if action == "hang":
        child = subprocess.Popen(["sleep", "3600"])
        print("child=%d" % child.pid, file=sys.stderr, flush=True)
        time.sleep(3600)
    elif action == "crash":
        os._exit(3)
    elif action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "big":
        reply["stdout"] = "x" * payload["n"]
    elif action == "sleep":
        time.sleep(payload["s"])
    elif action == "notjson":
        out.write(b"this is not json\\n"); out.flush(); continue
    elif action == "wrongid":
        reply["id"] = "nope"
    elif action == "nocode":
        del reply["exit_code"]
    elif action == "both":
        reply["result"] = {{"a": 1}}
    elif action == "result":
        del reply["stdout"]
        reply["result"] = {{"typed": True}}
        reply["stderr"] = "warn"
    elif action == "exit7":
        reply["exit_code"] = 7
    elif action == "env":
        reply["stdout"] = json.dumps(dict(os.environ))
    elif action == "request":
        reply["stdout"] = line.decode()
    out.write(json.dumps(reply).encode() + b"\\n")
    out.flush()
"""

# A bash handler dropped into the bash template: echoes the payload and some awkward text.
BASH_HANDLER = r"""handle() {
    local action=$1 payload=$2
    case $action in
        echo) printf '%s' "$payload" ;;
        awkward) printf 'quote " backslash \\ tab \t newline\nünïcödé'; echo 'to stderr' >&2 ;;
        fail) echo "failing" >&2; return 3 ;;
        pid) printf '%s' "$$" ;;
    esac
}
"""

SDK_SCRIPT = """#!{python}
import os
from csext_coprocess import Fail, request, serve, time_left

def handle(action, payload):
    if action == "context":
        req = request()
        return {{"run_id": req.get("run_id"), "attempt": req.get("attempt"),
                 "event_key": req.get("event_key"), "left": time_left() > 0,
                 "runtime": os.environ.get("CSEXT_RUNTIME"),
                 "run_env": os.environ.get("CSEXT_RUN_ID")}}
    if action == "print":
        print("printed line")
        return None
    if action == "tuple":
        return 4, {{"x": 1}}, "some stderr"
    if action == "exit":
        raise SystemExit(9)
    if action == "boom":
        raise RuntimeError("boom")
    if action == "fail":
        raise Fail(5, "bad input")
    if action == "text":
        return "plain text"
    return {{"echo": payload}}

serve(handle)
"""


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def raw_script(tmp_path: Path) -> Path:
    return write_script(tmp_path / "raw.py", RAW.format(python=sys.executable))


def sdk_script(tmp_path: Path) -> Path:
    shutil.copy(SDK, tmp_path / "csext_coprocess.py")
    return write_script(tmp_path / "sdk.py", SDK_SCRIPT.format(python=sys.executable))


def request(
    entry: Path, action: str, payload: Any = None, *, timeout: float = 10.0, env: Any = None
) -> RunRequest:
    return RunRequest(
        entrypoint=entry,
        action=action,
        payload=orjson.dumps(payload),
        timeout=timeout,
        env=BASE_ENV if env is None else env,
        cwd=entry.parent,
    )


def pid_of(result: Any) -> int:
    assert result.exit_code == 0, result
    return int(orjson.loads(result.stdout)["pid"])


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return False
    return data[data.rfind(b")") + 2 : data.rfind(b")") + 3] != b"Z"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


PoolFactory = Callable[..., CoprocessPool]


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolFactory]:
    pools: list[CoprocessPool] = []

    def make(entry: Path, *, concurrency: int = 1, **limits: Any) -> CoprocessPool:
        limits.setdefault("kill_grace", 0.5)
        pool = CoprocessPool(
            name="demo",
            entrypoint=entry,
            env=process_env(BASE_ENV),
            cwd=entry.parent,
            concurrency=concurrency,
            limits=CoprocessLimits(**limits),
        )
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.aclose(drain_timeout=1)


async def test_python_round_trip_reuses_one_warm_process(tmp_path, make_pool):
    pool = make_pool(raw_script(tmp_path))
    results = [await pool.run(request(pool.entrypoint, "echo", {"n": i})) for i in range(20)]
    assert {pid_of(r) for r in results} == {results[0].pid}
    assert pool.spawned == 1
    typed = await pool.run(request(pool.entrypoint, "result"))
    assert (typed.exit_code, orjson.loads(typed.stdout), typed.stderr) == (
        0,
        {"typed": True},
        b"warn",
    )
    failed = await pool.run(request(pool.entrypoint, "exit7"))
    assert (failed.exit_code, failed.error, failed.outcome.value) == (7, None, "failed")


async def test_request_line_and_environment(tmp_path, make_pool):
    pool = make_pool(raw_script(tmp_path))
    payload = {"text": "line\nbreak", "n": [1, 2]}
    pretty = orjson.dumps(payload, option=orjson.OPT_INDENT_2)  # has raw newlines
    req = request(pool.entrypoint, "request", timeout=7.5)
    result = await pool.run(RunRequest(**{**_fields(req), "payload": pretty}))
    line = orjson.loads(result.stdout)
    assert list(line) == [
        "id",
        "action",
        "deadline",
        "timeout",
        "run_id",
        "attempt",
        "event_key",
        "payload",
    ]
    assert line["payload"] == payload
    assert (line["action"], line["timeout"], line["run_id"], line["attempt"]) == (
        "request",
        7.5,
        "run-1",
        2,
    )
    assert line["deadline"] == pytest.approx(time.time() + 7.5, abs=5)
    env = orjson.loads((await pool.run(request(pool.entrypoint, "env"))).stdout)
    assert env["CSEXT_RUNTIME"] == "coprocess" and env["CSEXT_EXTENSION"] == "demo"
    assert not {"CSEXT_RUN_ID", "CSEXT_ACTION", "CSEXT_DEADLINE"} & set(env)


def _fields(req: RunRequest) -> dict[str, Any]:
    return {name: getattr(req, name) for name in RunRequest.__slots__}


async def test_bash_template_round_trip(tmp_path, make_pool):
    entry = tmp_path / "main.sh"
    shutil.copy(TEMPLATES / "bash" / "main.sh", entry)
    pool = make_pool(entry)
    status = await pool.run(request(entry, "status"))
    assert (status.exit_code, orjson.loads(status.stdout)["status"]) == (0, "success")
    other = await pool.run(request(entry, "deploy", {"a": 1}))
    assert orjson.loads(other.stdout) == {
        "status": "success",
        "action": "deploy",
        "payload_bytes": 7,
    }
    assert pool.spawned == 1


async def test_bash_protocol_escapes_output(tmp_path, make_pool):
    template = (TEMPLATES / "bash" / "main.sh").read_text()
    start, end = template.index("handle() {"), template.index("# ---- protocol")
    entry = write_script(tmp_path / "main.sh", template[:start] + BASH_HANDLER + template[end:])
    pool = make_pool(entry)
    payload = {"s": 'a "quoted" \\ string\twith\nnewline', "u": "é€", "list": [1, None]}
    echoed = await pool.run(request(entry, "echo", payload))
    assert orjson.loads(echoed.stdout) == payload
    awkward = await pool.run(request(entry, "awkward"))
    assert awkward.stdout.decode() == 'quote " backslash \\ tab \t newline\nünïcödé'
    assert awkward.stderr == b"to stderr\n"
    failed = await pool.run(request(entry, "fail"))
    assert (failed.exit_code, failed.stderr) == (3, b"failing\n")
    pids = {(await pool.run(request(entry, "pid"))).stdout for _ in range(5)}
    assert len(pids) == 1 and pool.spawned == 1


async def test_python_template_and_sdk(tmp_path, make_pool):
    entry = tmp_path / "main.py"
    shutil.copy(TEMPLATES / "python" / "main.py", entry)
    shutil.copy(SDK, tmp_path / "csext_coprocess.py")
    pool = make_pool(entry)
    status = await pool.run(request(entry, "status"))
    assert orjson.loads(status.stdout) == {"status": "success", "message": "ok"}
    echo = await pool.run(request(entry, "deploy", {"vm": "i-1"}))
    assert orjson.loads(echo.stdout)["payload"] == {"vm": "i-1"}
    failed = await pool.run(request(entry, "fail"))
    assert (failed.exit_code, failed.stderr) == (2, b"failing on request\n")


async def test_sdk_return_conventions(tmp_path, make_pool):
    entry = sdk_script(tmp_path)
    pool = make_pool(entry)

    async def call(action: str) -> Any:
        return await pool.run(request(entry, action, {"p": 1}))

    context = orjson.loads((await call("context")).stdout)
    assert context == {
        "run_id": "run-1",
        "attempt": 2,
        "event_key": "key-1",
        "left": True,
        "runtime": "coprocess",
        "run_env": None,
    }
    assert (await call("print")).stdout == b"printed line\n"
    tuple_result = await call("tuple")
    assert (tuple_result.exit_code, orjson.loads(tuple_result.stdout)) == (4, {"x": 1})
    assert tuple_result.stderr == b"some stderr"
    assert (await call("exit")).exit_code == 9
    boom = await call("boom")
    assert boom.exit_code == 1 and b"RuntimeError: boom" in boom.stderr
    assert ((await call("fail")).exit_code, (await call("fail")).stderr) == (5, b"bad input\n")
    assert (await call("text")).stdout == b"plain text"
    assert orjson.loads((await call("other")).stdout) == {"echo": {"p": 1}}
    assert pool.spawned == 1  # sys.exit and exceptions did not end the process


def test_sdk_exec_mode(tmp_path):
    entry = sdk_script(tmp_path)
    payload = tmp_path / "payload.json"
    payload.write_text('{"p": 2}')
    env = {"PATH": DEFAULT_PATH, "CSEXT_RUN_ID": "exec-run"}
    done = subprocess.run([entry, "other", payload, "5"], capture_output=True, env=env, check=False)
    assert (done.returncode, orjson.loads(done.stdout)) == (0, {"echo": {"p": 2}})
    failed = subprocess.run(
        [entry, "fail", payload, "5"], capture_output=True, env=env, check=False
    )
    assert (failed.returncode, failed.stderr) == (5, b"bad input\n")
    context = subprocess.run(
        [entry, "context", payload, "5"], capture_output=True, env=env, check=False
    )
    assert orjson.loads(context.stdout)["run_id"] == "exec-run"


async def test_deadline_kills_group_and_replaces_process(tmp_path, make_pool):
    pool = make_pool(raw_script(tmp_path))
    first = pid_of(await pool.run(request(pool.entrypoint, "echo")))
    hung = await pool.run(request(pool.entrypoint, "hang", timeout=0.5))
    assert hung.timed_out and hung.error is None and hung.outcome.value == "timeout"
    assert hung.pid == first and not alive(first)
    child = int(hung.stderr.decode().split("child=")[1].split()[0])
    await wait_until(lambda: not alive(child))  # the group was killed, not just the leader
    assert not group_alive(first)
    after = pid_of(await pool.run(request(pool.entrypoint, "echo")))
    assert after != first and pool.spawned == 2


async def test_response_over_line_limit_fails_and_replaces(tmp_path, make_pool):
    pool = make_pool(raw_script(tmp_path), output_cap=1024)
    limit = CoprocessLimits(output_cap=1024).line_limit
    first = pid_of(await pool.run(request(pool.entrypoint, "echo")))
    flood = await pool.run(request(pool.entrypoint, "big", {"n": limit + 10}))
    assert flood.stdout_truncated and flood.exit_code is None
    assert f"longer than {limit} bytes" in (flood.error or "")
    assert not alive(first)
    # Over output_cap but within the line limit: cut and flagged, like an exec run.
    cut = await pool.run(request(pool.entrypoint, "big", {"n": 5000}))
    assert (cut.exit_code, len(cut.stdout), cut.stdout_truncated, cut.error) == (
        0,
        1024,
        True,
        None,
    )
    assert cut.pid != first


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("notjson", "the response is not JSON"),
        ("wrongid", "the response id 'nope' is not the request id"),
        ("nocode", "exit_code must be an integer 0-255 (got None)"),
        ("both", 'both "stdout" and "result"'),
    ],
)
async def test_garbage_fails_request_and_replaces(tmp_path, make_pool, action, message):
    pool = make_pool(raw_script(tmp_path))
    first = pid_of(await pool.run(request(pool.entrypoint, "echo")))
    bad = await pool.run(request(pool.entrypoint, action))
    assert bad.outcome.value == "error" and bad.exit_code is None
    assert "broke the protocol" in (bad.error or "") and message in (bad.error or "")
    assert not alive(first)
    assert pid_of(await pool.run(request(pool.entrypoint, "echo"))) != first


@pytest.mark.parametrize(
    ("action", "code", "message"),
    [("crash", 3, "exited with code 3"), ("kill", -9, "killed by signal SIGKILL")],
)
async def test_death_mid_request(tmp_path, make_pool, action, code, message):
    pool = make_pool(raw_script(tmp_path))
    first = pid_of(await pool.run(request(pool.entrypoint, "echo")))
    died = await pool.run(request(pool.entrypoint, action))
    assert died.exit_code == code and "died mid-request" in (died.error or "")
    assert message in (died.error or "")
    assert b"raw coprocess starting" in died.stderr  # the ring buffer, for diagnostics
    assert pid_of(await pool.run(request(pool.entrypoint, "echo"))) != first


async def test_crash_loop_backs_off_instead_of_spinning(tmp_path, make_pool):
    entry = write_script(
        tmp_path / "broken.sh", "#!/bin/sh\necho 'cannot start: no config' >&2\nexit 1\n"
    )
    initial = 0.1
    pool = make_pool(entry, backoff_initial=initial, backoff_max=5.0)
    started = time.monotonic()
    results = []
    while time.monotonic() - started < 1.0:
        results.append(await pool.run(request(entry, "echo")))
        await asyncio.sleep(0.005)  # pacing: a steady stream of requests, not a wait
    elapsed = time.monotonic() - started
    # Spawn k >= 3 comes at least initial * (2**(k-2) - 1) after spawn 2.
    bound = 2 + math.log2(elapsed / initial + 1)
    assert 2 <= pool.spawned <= bound + 1, (pool.spawned, elapsed)
    assert all(r.error for r in results), [r for r in results if not r.error]
    fast = [r for r in results if "keeps failing" in (r.error or "")]
    assert len(fast) >= len(results) - pool.spawned
    assert "exited with code 1" in (fast[0].error or "")
    assert b"cannot start: no config" in fast[0].stderr


async def test_missing_entrypoint_is_a_clear_error(tmp_path, make_pool):
    pool = make_pool(tmp_path / "nope.sh")
    result = await pool.run(request(pool.entrypoint, "echo"))
    assert result.error is not None and "no such file" in result.error


async def test_recycling_after_max_requests(tmp_path, make_pool):
    pool = make_pool(raw_script(tmp_path), max_requests=3)
    pids = [pid_of(await pool.run(request(pool.entrypoint, "echo"))) for _ in range(7)]
    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4] == pids[5] != pids[6]
    await wait_until(lambda: not alive(pids[0]) and not alive(pids[3]))


async def test_recycling_on_rss(tmp_path, make_pool):
    assert group_rss_kb(os.getpid()) > 1024
    pool = make_pool(raw_script(tmp_path), max_rss_mb=1)  # any Python process is bigger
    pids = [pid_of(await pool.run(request(pool.entrypoint, "echo"))) for _ in range(3)]
    assert len(set(pids)) == 3


async def test_concurrency_bounds_processes(tmp_path, make_pool):
    pool = make_pool(raw_script(tmp_path), concurrency=3)
    runs = [pool.run(request(pool.entrypoint, "sleep", {"s": 0.2})) for _ in range(9)]
    results = await asyncio.gather(*runs)
    assert all(r.exit_code == 0 for r in results)
    assert len({r.pid for r in results}) == 3 and pool.spawned == 3


async def test_aclose_leaves_no_process(tmp_path):
    entry = raw_script(tmp_path)
    pool = CoprocessPool(
        name="demo",
        entrypoint=entry,
        env=process_env(BASE_ENV),
        cwd=tmp_path,
        concurrency=3,
        limits=CoprocessLimits(kill_grace=0.5),
    )
    idle = [
        pid_of(r)
        for r in await asyncio.gather(
            *(pool.run(request(entry, "sleep", {"s": 0.2})) for _ in range(2))
        )
    ]
    in_flight = asyncio.ensure_future(pool.run(request(entry, "hang", timeout=60)))
    await wait_until(lambda: any(b"child=" in p.channel.stderr for p in pool._live.values()))
    await pool.aclose(drain_timeout=0.2)
    cut = await in_flight
    assert cut.error == "the coprocess pool was closed while the request ran"
    child = int(cut.stderr.decode().split("child=")[1].split()[0])
    for pid in [*idle, cut.pid, child]:
        assert not alive(pid), pid
    assert not any(group_alive(pid) for pid in [*idle, cut.pid])
    late = await pool.run(request(entry, "echo"))
    assert late.error is not None and "closed" in late.error


async def test_aclose_kills_a_process_that_ignores_term_and_eof(tmp_path):
    entry = write_script(
        tmp_path / "stubborn.sh",
        """#!/bin/bash
trap '' TERM
while IFS= read -r line; do
    id=${line#*\\"id\\":\\"}; id=${id%%\\"*}
    printf '{"id":"%s","exit_code":0,"stdout":"%s"}\\n' "$id" "$$"
done
while :; do sleep 0.05; done
""",
    )
    pool = CoprocessPool(
        name="demo",
        entrypoint=entry,
        env=process_env(BASE_ENV),
        cwd=tmp_path,
        concurrency=1,
        limits=CoprocessLimits(kill_grace=0.3),
    )
    result = await pool.run(request(entry, "x"))
    pid = int(result.stdout)
    await pool.aclose()
    assert not alive(pid) and not group_alive(pid)


async def test_runtime_replaces_pool_when_extension_changes(tmp_path):
    entry = raw_script(tmp_path)
    runtime = CoprocessRuntime(CoprocessLimits(kill_grace=0.5))
    try:
        first = pid_of(await runtime.run("demo", request(entry, "echo"), concurrency=2))
        again = pid_of(
            await runtime.run(
                "demo",
                request(entry, "echo", env={**BASE_ENV, "CSEXT_RUN_ID": "run-2"}),
                concurrency=2,
            )
        )
        assert again == first  # per-run variables do not make a new pool
        changed = {**BASE_ENV, "TOKEN": "rotated"}
        third = pid_of(
            await runtime.run("demo", request(entry, "echo", env=changed), concurrency=2)
        )
        assert third != first
        await wait_until(lambda: not alive(first))
        await runtime.close_extension("demo")
        assert runtime.pool("demo") is None and not alive(third)
        other = pid_of(await runtime.run("other", request(entry, "echo"), concurrency=1))
    finally:
        await runtime.aclose()
    assert not alive(other)


async def test_cancelled_request_kills_its_process(tmp_path, make_pool):
    pool = make_pool(raw_script(tmp_path))
    task = asyncio.ensure_future(pool.run(request(pool.entrypoint, "hang", timeout=60)))
    await wait_until(lambda: len(pool.pids) == 1)
    pid = pool.pids[0]
    await wait_until(lambda: b"child=" in pool._live[pid].channel.stderr)  # in the handler
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: not alive(pid) and not group_alive(pid))
    assert pid_of(await pool.run(request(pool.entrypoint, "echo"))) != pid
