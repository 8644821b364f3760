"""The extension environment: exactly the declared variables, csext's own names winning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from csext.worker.runtimes.environment import event_key, extension_env
from csext.worker.runtimes.runner import ExecRunner, RunRequest

INSPECT = Path(__file__).parent / "fixtures" / "runner" / "inspect.py"


def build(**overrides: Any) -> dict[str, str]:
    arguments: dict[str, Any] = {
        "path": "/usr/bin:/bin",
        "lang": "C.UTF-8",
        "env": {"API_URL": "https://pve:8006"},
        "secrets": {"API_TOKEN": "s3cret"},
        "extension": "proxmox",
        "hook": "orchestrator",
        "action": "start",
        "run_id": "r-1",
        "attempt": 2,
        "deadline": 1_700_000_030.9,
        "event_key": "abc",
    }
    arguments.update(overrides)
    return extension_env(**arguments)


def test_exactly_the_declared_variables() -> None:
    assert build() == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "API_URL": "https://pve:8006",
        "API_TOKEN": "s3cret",
        "CSEXT_EXTENSION": "proxmox",
        "CSEXT_HOOK": "orchestrator",
        "CSEXT_ACTION": "start",
        "CSEXT_RUN_ID": "r-1",
        "CSEXT_ATTEMPT": "2",
        "CSEXT_DEADLINE": "1700000030",
        "CSEXT_EVENT_KEY": "abc",
    }


def test_csext_names_win_over_manifest_env_and_secrets() -> None:
    env = build(
        env={"CSEXT_RUN_ID": "forged", "CSEXT_DEADLINE": "9999999999"},
        secrets={"CSEXT_EXTENSION": "other"},
    )
    assert env["CSEXT_RUN_ID"] == "r-1"
    assert env["CSEXT_DEADLINE"] == "1700000030"
    assert env["CSEXT_EXTENSION"] == "proxmox"


def test_manifest_env_may_set_path_and_secrets_win_over_env() -> None:
    env = build(env={"PATH": "/opt/ext/bin", "TOKEN": "from-env"}, secrets={"TOKEN": "secret"})
    assert env["PATH"] == "/opt/ext/bin"
    assert env["TOKEN"] == "secret"


def test_deadline_is_whole_epoch_seconds_rounded_down() -> None:
    assert build(deadline=1_700_000_000.0)["CSEXT_DEADLINE"] == "1700000000"
    assert build(deadline=1_700_000_000.999)["CSEXT_DEADLINE"] == "1700000000"


def test_event_key_is_stable_and_unambiguous() -> None:
    body = b'{"event":"VM.START"}'
    key = event_key("management-server.ActionEvent.VM-START.VirtualMachine.*", body)
    # Golden value: the key must not change between csext versions (workers of a rolling
    # upgrade must agree), so a change to the scheme must fail here.
    assert key == "60099a359ebc5bb9a944deca8f21c72f65a88706b1ad7f7b98544834610e52fd"
    assert event_key("ab", "c") != event_key("a", "bc")
    assert event_key("x") == event_key(b"x")
    assert event_key() != event_key("")


@given(st.lists(st.binary(max_size=20), max_size=4), st.lists(st.binary(max_size=20), max_size=4))
def test_event_key_differs_for_different_parts(a: list[bytes], b: list[bytes]) -> None:
    assert (event_key(*a) == event_key(*b)) == (a == b)


async def test_the_extension_sees_exactly_this_environment(tmp_path: Path) -> None:
    runner = ExecRunner(run_dir=tmp_path / "runs", output_cap=1 << 20, kill_grace=0.2)
    env = build(path="/usr/local/bin:/usr/bin:/bin")
    result = await runner.run(
        RunRequest(
            entrypoint=INSPECT, action="start", payload=b"{}", timeout=5, env=env, cwd=tmp_path
        )
    )
    assert result.exit_code == 0, result.stderr_tail()
    assert json.loads(result.stdout)["env"] == env
