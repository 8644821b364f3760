"""The bundled examples in extensions/, run as real processes through the hook handlers.

Each example's `tests/<case>.yaml` (format: schemas/testcase.py) runs through `ExecRunner` with
the payload file its hook handler builds, and the typed result its handler derives — including
the original payload given to `interpret`, as the worker does. Also: CloudStack's own
Orchestrator script contract, and failure policies on real timeouts and crashes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from csext.handlers import get_handler
from csext.schemas.event import CloudStackEvent
from csext.schemas.manifest import HookType, Manifest, Spec
from csext.schemas.run import Outcome
from csext.store.testcases import load_cases
from csext.worker.runtimes.runner import ExecRunner, RunRequest
from csext.worker.testrun import CaseResult, expectation_failures

ROOT = Path(__file__).resolve().parent.parent / "extensions"
EXAMPLES = sorted(p.name for p in ROOT.iterdir() if (p / "extension.yaml").is_file())
PATH = "/usr/local/bin:/usr/bin:/bin"


def manifest(name: str) -> Manifest:
    return Manifest.model_validate(yaml.safe_load((ROOT / name / "extension.yaml").read_text()))


@pytest.fixture
def runner(tmp_path) -> ExecRunner:
    return ExecRunner(run_dir=tmp_path / "runs", output_cap=256 * 1024, kill_grace=1.0)


async def run_through_hook(
    runner, folder: Path, spec: Spec, action, payload, env=None, timeout=None
):
    handler = get_handler(spec.hook_type)
    request = RunRequest(
        entrypoint=folder / spec.entrypoint_path,
        action=action,
        payload=handler.payload_bytes(action, payload, spec),
        timeout=timeout or spec.timeout,
        env={"PATH": PATH, "LANG": "C.UTF-8", **spec.env, **(env or {})},
        cwd=folder,
    )
    raw = await runner.run(request)
    return raw, handler.interpret(action, raw, spec, payload=payload)


def test_every_hook_type_has_a_bundled_example_and_both_languages_are_there():
    hooks = {manifest(name).spec.hook_type for name in EXAMPLES}
    assert hooks == set(HookType)
    languages = {(ROOT / n / manifest(n).spec.entrypoint_path).suffix for n in EXAMPLES}
    assert {".sh", ".py"} <= languages
    for name in EXAMPLES:
        folder = ROOT / name
        assert manifest(name).metadata.name == name
        for required in ("README.md", "CHANGELOG.md"):
            assert (folder / required).is_file(), f"{name}: {required}"
        entry = folder / manifest(name).spec.entrypoint_path
        assert entry.stat().st_mode & stat.S_IXUSR, f"{name}: entry point not executable"
        cases, problems = load_cases(folder)
        assert cases and not problems, f"{name}: {problems}"


def test_the_two_factor_example_declares_exit_1_means_passed():
    spec = manifest("totp-2fa").spec
    assert spec.exit_codes is not None
    assert spec.exit_codes.success == [1] and spec.exit_codes.failure == [0]


@pytest.mark.parametrize("name", EXAMPLES)
async def test_bundled_example_cases_pass(name, runner, tmp_path):
    folder = ROOT / name
    spec = manifest(name).spec
    cases, _ = load_cases(folder)
    for loaded in cases:
        case = loaded.case
        action, payload = case.action, loaded.payload
        if case.routing_key is not None:
            payload = CloudStackEvent.from_delivery(case.routing_key, payload).model_dump()
            action = action or payload["category"]
        env = {k: v.replace("/tmp/", f"{tmp_path}/") for k, v in {**spec.env, **case.env}.items()}
        raw, meaning = await run_through_hook(runner, folder, spec, action, payload, env)
        got = CaseResult(
            name=loaded.name,
            action=action,
            passed=True,
            exit_code=raw.exit_code,
            stdout=raw.stdout.decode(),
            stderr=raw.stderr.decode(),
            outcome=meaning.outcome.value,
            result=meaning.result,
            retry=meaning.retry,
        )
        failures = expectation_failures(case.expect, got)
        assert not failures, (
            f"{name}/{loaded.name}: {failures}\nstdout: {got.stdout}\nstderr: {got.stderr}"
        )


async def test_local_orchestrator_keeps_state_across_actions(runner, tmp_path):
    folder, spec = ROOT / "local-orchestrator", manifest("local-orchestrator").spec
    payload = (folder / "tests" / "payloads" / "start.json").read_text()
    import orjson

    vm = orjson.loads(payload)
    env = {"STATE_FILE": str(tmp_path / "state.json")}
    for action in ("prepare", "create", "stop"):
        _, out = await run_through_hook(runner, folder, spec, action, vm, env)
        assert out.outcome == Outcome.SUCCESS, (action, out)
    _, status = await run_through_hook(runner, folder, spec, "status", vm, env)
    assert status.result["power_state"] == "PowerOff"
    _, statuses = await run_through_hook(runner, folder, spec, "statuses", vm, env)
    assert statuses.result["power_states"] == {"i-2-4-VM": "PowerOff"}
    _, prepare = await run_through_hook(runner, folder, spec, "prepare", vm, env)
    assert prepare.result["vm_details"]["details"]["deployvm"] == "true"
    assert "local_vmid" in prepare.result["vm_details"]["details"]


CLOUDSTACK_STYLE_SCRIPT = """#!/bin/bash
# Written for CloudStack's Orchestrator (like provisioner.sh): argv 1-3 and the payload file.
action="$1"; payload_file="$2"; timeout="$3"
[ -r "$payload_file" ] || { echo '{"status":"error","error":"no payload"}'; exit 1; }
vm=$(sed -n 's/.*"virtualmachinename":"\\([^"]*\\)".*/\\1/p' "$payload_file")
case "$action" in
  status) echo "PowerOn" ;;
  *) echo "{\\"status\\":\\"success\\",\\"message\\":\\"$action $vm within ${timeout}s\\"}" ;;
esac
"""


async def test_cloudstacks_own_orchestrator_script_contract_runs_unchanged(runner, tmp_path):
    script = tmp_path / "ext" / "myext.sh"
    script.parent.mkdir()
    script.write_text(CLOUDSTACK_STYLE_SCRIPT)
    script.chmod(0o755)
    spec = Spec.model_validate({"type": "Orchestrator", "entrypoint": "myext.sh", "timeout": 30})
    payload = {"virtualmachinename": "i-2-4-VM", "virtualmachineid": "2b7a", "externaldetails": {}}
    raw, out = await run_through_hook(runner, script.parent, spec, "start", payload)
    assert raw.exit_code == 0 and out.outcome == Outcome.SUCCESS
    assert out.result["message"] == "start i-2-4-VM within 30s"
    _, status = await run_through_hook(runner, script.parent, spec, "status", payload)
    assert status.result["power_state"] == "PowerOn"


def _script(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "ext"
    folder.mkdir(exist_ok=True)
    script = folder / "run.sh"
    script.write_text("#!/bin/bash\n" + body)
    script.chmod(0o755)
    return folder


@pytest.mark.parametrize(("body", "kind"), [("sleep 30\n", "timeout"), ("kill -9 $$\n", "crashed")])
async def test_failure_policies_on_real_timeout_and_crash(runner, tmp_path, body, kind):
    folder = _script(tmp_path, body)
    xml = "<domain><name>v</name><uuid>u</uuid></domain>"
    checks = [
        ("two-factor", "check", {"code": "123456", "user_account": {"username": "a"}}, {"passed": False}),  # noqa: E501
        ("user-authenticator", "authenticate", {"username": "a", "password": "p"}, {"authenticated": False}),  # noqa: E501
        ("deployment-planner", "order-clusters", {}, {"no_preference": True}),
        ("domain-xml", "transform", {"xml": xml}, {"xml": xml, "changed": False}),
        ("oob-management", "status", {"address": "h"}, {"power_state": "Unknown"}),
        ("orchestrator", "start", {}, None),
    ]  # fmt: skip
    for hook, action, payload, expected in checks:
        spec = Spec.model_validate({"hook": hook, "entrypoint": "run.sh", "timeout": 1})
        _, out = await run_through_hook(runner, folder, spec, action, payload)
        assert out.error is not None and out.error.kind == kind, hook
        if expected is None:
            assert out.result is None
        else:
            assert {k: out.result[k] for k in expected} == expected, hook
            assert out.result["fallback"] == kind


def test_examples_do_not_write_into_their_folder_by_default():
    for name in EXAMPLES:
        for key, value in manifest(name).spec.env.items():
            if key.endswith(("_FILE", "_DIR")) and "/" in value:
                assert os.path.isabs(value), f"{name}: {key}"
