"""Every hook's scaffold, in both languages and both runtimes, passes `csext test` unmodified;
coprocess scaffolds also serve real calls through a worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from workerkit import delete_extension_queues, running_worker, settings_for

from csext.schemas.manifest import HookType, Runtime
from csext.store import ops, query, scaffold, scaffold_coprocess
from csext.store.testcases import load_cases
from csext.worker.amqp.rpc_client import RpcClient
from csext.worker.settings import load_settings
from csext.worker.testrun import run_cases_sync, select_cases

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("runtime", list(Runtime))
@pytest.mark.parametrize("lang", list(scaffold.Language))
@pytest.mark.parametrize("hook", list(HookType))
def test_fresh_scaffold_passes_its_own_tests(
    tmp_path: Path, hook: HookType, lang: scaffold.Language, runtime: Runtime
) -> None:
    store = ops.Store(tmp_path / "reg", tmp_path / "secrets.yaml")
    name = f"x-{hook.value}"
    change = scaffold.new(store, name, hook, lang, runtime)
    assert change.commit is not None
    report = query.validate(store.root / name, store)[0]
    assert report.ok, report.errors
    assert f"runtime: {runtime.value}" in (store.root / name / "extension.yaml").read_text()
    cases, problems = load_cases(store.root / name)
    assert not problems and len(cases) == len(scaffold.HOOKS[hook].actions)
    settings = load_settings(registry=store.root, run_dir=tmp_path / "runs")
    ext, selected, _ = select_cases(store, name, [], None, None)
    assert ext.spec.runtime is runtime
    results = run_cases_sync(settings, ext, selected)
    failed = [(r.name, r.failures, r.stdout, r.error) for r in results if not r.passed]
    assert not failed


@pytest.mark.parametrize("runtime", list(Runtime))
def test_unknown_action_fails_in_both_languages(tmp_path: Path, runtime: Runtime) -> None:
    store = ops.Store(tmp_path / "reg", tmp_path / "secrets.yaml")
    settings = load_settings(registry=store.root, run_dir=tmp_path / "runs")
    for lang in scaffold.Language:
        name = f"auth-{lang.value}"
        scaffold.new(store, name, HookType.TWO_FACTOR, lang, runtime)
        payload = tmp_path / "p.json"
        payload.write_text('{"user_account": {"username": "a"}}')
        ext, cases, _ = select_cases(store, name, [], "setup", payload)
        assert run_cases_sync(settings, ext, cases)[0].passed
        cases[0] = cases[0].__class__(
            "odd",
            payload,
            cases[0].case.model_copy(update={"action": "frobnicate"}),
            cases[0].payload,
        )
        result = run_cases_sync(settings, ext, cases)[0]
        assert not result.passed


def test_coprocess_scaffold_writes_the_helper_and_the_template_protocol(tmp_path: Path) -> None:
    """One source each: the helper module and the bash template's protocol loop."""
    from csext.sdk import coprocess as sdk

    assert sdk.serve.__module__ == "csext.sdk.coprocess"
    template = (ROOT / "store" / "templates" / "coprocess" / "bash" / "main.sh").read_text()
    assert template[template.index("# ---- protocol") :] == scaffold_coprocess.bash_protocol()
    store = ops.Store(tmp_path / "reg", tmp_path / "secrets.yaml")
    scaffold.new(store, "warm", HookType.EVENT, scaffold.Language.PYTHON, Runtime.COPROCESS)
    written = (store.root / "warm" / scaffold_coprocess.SDK_NAME).read_text()
    assert written == (ROOT / "sdk" / "coprocess.py").read_text()
    scaffold.new(store, "warmsh", HookType.EVENT, scaffold.Language.BASH, Runtime.COPROCESS)
    assert (
        (store.root / "warmsh" / "warmsh.sh")
        .read_text()
        .endswith(scaffold_coprocess.bash_protocol())
    )


@pytest.mark.broker
async def test_coprocess_scaffolds_serve_calls_through_a_worker(
    tmp_path: Path, amqp_url: str, unique: str
) -> None:
    store = ops.Store(tmp_path / "reg", tmp_path / "secrets.yaml")
    py, sh = f"{unique}-py", f"{unique}-sh"
    scaffold.new(store, py, HookType.TWO_FACTOR, scaffold.Language.PYTHON, Runtime.COPROCESS)
    scaffold.new(store, sh, HookType.OOB_MANAGEMENT, scaffold.Language.BASH, Runtime.COPROCESS)
    for name in (py, sh):
        ops.enable(store, name)
    settings = settings_for(amqp_url, store.root, f"{unique}-ex", tmp_path)
    try:
        async with running_worker(settings) as worker, RpcClient(amqp_url) as client:
            for _ in range(3):  # the same warm process answers every call
                setup = await client.call(py, "setup", {"user_account": {"username": "a"}})
                power = await client.call(sh, "status", {"address": "192.0.2.20"})
                assert setup.exit_code == 0 and setup.result["secret"] == "JBSWY3DPEHPK3PXP"
                assert power.exit_code == 0 and power.result["power_state"] == "On"
            odd = await client.call(py, "frobnicate", {"user_account": {"username": "a"}})
            assert odd.error is not None and odd.error.kind == "bad-request"
            coprocesses = worker.runtimes._coprocess
            for name in (py, sh):
                pool = coprocesses.pool(name)
                assert pool is not None and pool.spawned == 1 and len(pool.pids) == 1
    finally:
        await delete_extension_queues(amqp_url, py, sh)
