"""The store's CLI end to end (typer's CliRunner) against a temporary Git registry."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import aio_pika
import pytest
import yaml
from typer.testing import CliRunner

from csext.cli.app import app
from csext.worker.amqp.names import CONTROL_EXCHANGE

BROKER_DOWN = "amqp://guest:guest@127.0.0.1:1/"


class Cli:
    def __init__(self, tmp_path: Path, amqp_url: str = BROKER_DOWN) -> None:
        self.registry = tmp_path / "registry"
        self.secrets = tmp_path / "private" / "secrets.yaml"
        self.env = {
            "CSEXT_REGISTRY": str(self.registry),
            "CSEXT_SECRETS_FILE": str(self.secrets),
            "CSEXT_AMQP_URL": amqp_url,
            "CSEXT_RUN_DIR": str(tmp_path / "runs"),
            "CSEXT_CONFIG": str(tmp_path / "no-config.yaml"),
        }

    def __call__(self, *args: str, input: str | None = None, ok: bool = True, env=None):
        result = CliRunner().invoke(app, list(args), input=input, env={**self.env, **(env or {})})
        if ok:
            assert result.exit_code == 0, (result.output, result.stderr)
        return result

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json").stdout)

    def git_log(self) -> list[str]:
        out = subprocess.run(
            ["git", "log", "--format=%s|%an <%ae>"],
            cwd=self.registry,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.splitlines()

    def manifest(self, name: str) -> dict:
        return yaml.safe_load((self.registry / name / "extension.yaml").read_text())


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def hello(cli: Cli) -> Cli:
    cli("new", "hello", "--hook", "event")
    return cli


def test_new_creates_one_commit_in_a_fresh_git_registry(cli: Cli) -> None:
    result = cli("new", "hello", "--hook", "event", "--lang", "python")
    assert "new hello: event extension (python)" in result.stdout
    assert "could not tell workers to reload" in result.stderr  # broker down: a warning only
    assert (cli.registry / ".git").is_dir()
    assert cli.git_log() == ["new hello: event extension (python)|csext <csext@localhost>"]
    folder = cli.registry / "hello"
    assert os.access(folder / "hello.py", os.X_OK)
    for name in ("extension.yaml", "README.md", "CHANGELOG.md", "tests/resourcestateevent.yaml"):
        assert (folder / name).is_file(), name
    assert cli.manifest("hello")["spec"]["enabled"] is False


def test_new_refuses_existing_name_and_bad_name(hello: Cli) -> None:
    again = hello("new", "hello", "--hook", "event", ok=False)
    assert again.exit_code == 1 and "already exists" in again.stderr
    bad = hello("new", "Bad Name", "--hook", "event", ok=False)
    assert bad.exit_code == 1 and "not a valid extension name" in bad.stderr


def test_enable_disable_commit_with_author_and_keep_comments(hello: Cli) -> None:
    hello("enable", "hello", "--author", "Ada <ada@example.org>")
    assert hello.manifest("hello")["spec"]["enabled"] is True
    text = (hello.registry / "hello" / "extension.yaml").read_text()
    assert "# AMQP topic patterns" in text  # edited in place, comments kept
    assert hello.git_log()[0] == "enable hello|Ada <ada@example.org>"
    again = hello("enable", "hello")
    assert "already enabled" in again.stdout and len(hello.git_log()) == 2
    hello("disable", "hello")
    assert hello.git_log()[0].startswith("disable hello|")
    assert [row["status"] for row in hello.json("list")] == ["disabled"]


def test_list_filters_and_json(hello: Cli) -> None:
    hello("new", "power", "--hook", "oob-management")
    hello("enable", "power")
    assert [r["name"] for r in hello.json("list", "--enabled")] == ["power"]
    assert [r["name"] for r in hello.json("list", "--disabled")] == ["hello"]
    assert [r["name"] for r in hello.json("list", "--hook", "event")] == ["hello"]
    table = hello("list").stdout
    assert table.splitlines()[0].split()[:3] == ["NAME", "STATUS", "HOOK"]


def test_enable_refuses_incompatible_extension(hello: Cli) -> None:
    path = hello.registry / "hello" / "extension.yaml"
    path.write_text(path.read_text().replace('csext: ">=0.1,<1.0"', 'csext: ">=99.0"'))
    result = hello("enable", "hello", ok=False)
    assert result.exit_code == 1
    assert "needs csext >=99.0" in result.stderr and "this is csext" in result.stderr
    assert hello.manifest("hello")["spec"]["enabled"] is False
    assert len(hello.git_log()) == 1


def test_enable_refuses_missing_secret_and_accepts_once_set(hello: Cli) -> None:
    path = hello.registry / "hello" / "extension.yaml"
    path.write_text(path.read_text().replace("secrets: []", "secrets: [API_TOKEN]"))
    refused = hello("enable", "hello", ok=False)
    assert "API_TOKEN" in refused.stderr and "csext secret set" not in refused.stdout
    assert hello.manifest("hello")["spec"]["enabled"] is False
    hello("secret", "set", "hello", "API_TOKEN", input="t0ps3cret\n")
    assert stat.S_IMODE(hello.secrets.stat().st_mode) == 0o600
    listed = hello("secret", "list", "hello")
    assert "API_TOKEN" in listed.stdout and "t0ps3cret" not in listed.stdout
    hello("enable", "hello")
    shown = hello("show", "hello", "--json")
    assert "t0ps3cret" not in shown.stdout


def test_secrets_file_readable_by_others_is_refused(hello: Cli) -> None:
    hello.secrets.parent.mkdir()
    hello.secrets.write_text("hello: {API_TOKEN: x}\n")
    hello.secrets.chmod(0o644)
    result = hello("secret", "set", "hello", "OTHER", input="v", ok=False)
    assert result.exit_code == 1 and "mode 0644" in result.stderr and "chmod 600" in result.stderr
    assert hello.secrets.read_text() == "hello: {API_TOKEN: x}\n"


def test_validate_names_file_field_and_fix(hello: Cli) -> None:
    assert "1 checked, 0 with errors" in hello("validate").stdout
    path = hello.registry / "hello" / "extension.yaml"
    path.write_text(path.read_text().replace("timeout: 30", "timeout: -5"))
    result = hello("validate", ok=False)
    assert result.exit_code == 1
    assert f"{path}: spec.timeout: Input should be greater than 0" in result.stdout
    single = hello("validate", str(hello.registry / "hello"), ok=False)
    assert single.exit_code == 1 and "spec.timeout" in single.stdout
    assert [r["ok"] for r in json.loads(hello("validate", "--json", ok=False).stdout)] == [False]


def test_validate_names_a_prefetch_below_concurrency(hello: Cli) -> None:
    path = hello.registry / "hello" / "extension.yaml"
    path.write_text(path.read_text().replace("timeout: 30", "timeout: 30\n  prefetch: 1"))
    hello.manifest("hello")  # still YAML
    result = hello("validate", ok=False)
    assert result.exit_code == 1
    assert "spec.prefetch (1) is below spec.concurrency" in result.stdout
    assert "set it to at least" in result.stdout


def test_validate_reports_bad_test_case(hello: Cli) -> None:
    case = hello.registry / "hello" / "tests" / "broken.yaml"
    case.write_text("action: x\nexpect: {exitcode: 0}\n")
    result = hello("validate", ok=False)
    assert f"{case}: expect.exitcode: Extra inputs are not permitted" in result.stdout


def test_broken_manifest_is_listed_as_broken(hello: Cli) -> None:
    (hello.registry / "hello" / "extension.yaml").write_text("metadata: {name: hello}\n")
    rows = hello.json("list")
    assert rows[0]["status"] == "broken" and any("spec" in p for p in rows[0]["problems"])


def test_set_content_and_path(hello: Cli, tmp_path: Path) -> None:
    script = tmp_path / "new.sh"
    script.write_text('#!/usr/bin/env bash\necho \'{"status": "success"}\'\n')
    hello("set", "hello", "--content", str(script))
    entry = hello.registry / "hello" / "hello.sh"
    assert entry.read_text() == script.read_text() and os.access(entry, os.X_OK)
    assert hello.git_log()[0].startswith("set hello: content from new.sh|")

    not_exec = tmp_path / "tool"
    not_exec.write_text("#!/bin/sh\n")
    refused = hello("set", "hello", "--path", str(not_exec), ok=False)
    assert "is not executable" in refused.stderr
    assert hello("set", "hello", "--path", "relative/tool", ok=False).exit_code == 1
    missing = hello("set", "hello", "--path", str(tmp_path / "nope"), ok=False)
    assert "does not exist" in missing.stderr
    not_exec.chmod(0o755)
    hello("set", "hello", "--path", str(not_exec))
    assert hello.manifest("hello")["spec"]["entrypoint"] == str(not_exec)
    assert hello("set", "hello", ok=False).exit_code == 1  # neither option


def test_set_content_refuses_syntax_errors(hello: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nif then fi (\n")
    result = hello("set", "hello", "--content", str(bad), ok=False)
    assert "bash syntax error" in result.stderr
    noshebang = tmp_path / "plain.sh"
    noshebang.write_text("echo hi\n")
    assert "no '#!' line" in hello("set", "hello", "--content", str(noshebang), ok=False).stderr
    assert len(hello.git_log()) == 1


def _editor(tmp_path: Path, code: str) -> str:
    editor = tmp_path / "editor.py"
    editor.write_text(f"#!{sys.executable}\nimport sys\npath = sys.argv[1]\n{code}\n")
    editor.chmod(0o755)
    return str(editor)


def test_edit_commits_a_valid_edit(hello: Cli, tmp_path: Path) -> None:
    editor = _editor(
        tmp_path, "text = open(path).read()\nopen(path, 'w').write(text + '# edited\\n')"
    )
    result = hello("edit", "hello", env={"EDITOR": editor, "VISUAL": ""})
    assert "edit hello: hello.sh" in result.stdout
    assert (hello.registry / "hello" / "hello.sh").read_text().endswith("# edited\n")
    assert os.access(hello.registry / "hello" / "hello.sh", os.X_OK)
    unchanged = hello("edit", "hello", env={"EDITOR": _editor(tmp_path, "pass"), "VISUAL": ""})
    assert "no changes" in unchanged.stdout and len(hello.git_log()) == 2


def test_edit_rejects_an_invalid_edit_and_keeps_it(hello: Cli, tmp_path: Path) -> None:
    before = (hello.registry / "hello" / "hello.sh").read_text()
    editor = _editor(tmp_path, "open(path, 'a').write('case x in\\n')")
    result = hello("edit", "hello", env={"EDITOR": editor, "VISUAL": ""}, ok=False)
    assert result.exit_code == 1 and "not saved" in result.stderr
    assert (hello.registry / "hello" / "hello.sh").read_text() == before
    kept = Path(result.stderr.split("kept in ")[1].split()[0])
    assert kept.read_text().endswith("case x in\n")
    assert len(hello.git_log()) == 1


def test_remove_needs_confirmation(hello: Cli) -> None:
    refused = hello("remove", "hello", ok=False)
    assert refused.exit_code == 1 and "--yes" in refused.stderr
    assert (hello.registry / "hello").is_dir()
    hello("remove", "hello", "--yes")
    assert not (hello.registry / "hello").exists()
    assert hello.git_log()[0].startswith("remove hello|")
    missing = hello("remove", "hello", "--yes", ok=False)
    assert "no extension named 'hello'" in missing.stderr


def test_history_diff_rollback(hello: Cli) -> None:
    hello("enable", "hello")
    history = hello.json("history", "hello")
    assert [c["subject"] for c in history] == ["enable hello", "new hello: event extension (bash)"]
    diff = hello.json("diff", "hello")
    assert "-  enabled: false" in diff["diff"] and "+  enabled: true" in diff["diff"]
    full = hello("diff", "hello", history[1]["sha"]).stdout
    assert "+  enabled: true" in full
    hello("rollback", "hello", history[1]["sha"])
    assert hello.manifest("hello")["spec"]["enabled"] is False
    assert hello.git_log()[0].startswith(f"rollback hello to {history[1]['sha'][:10]}|")
    hello("remove", "hello", "--yes")
    hello("rollback", "hello", history[0]["sha"])  # brings a removed extension back
    assert hello.manifest("hello")["spec"]["enabled"] is True
    bad = hello("rollback", "hello", "no-such-rev", ok=False)
    assert "no commit 'no-such-rev'" in bad.stderr
    registry_history = hello.json("history")
    assert len(registry_history) == 5


def test_hand_edited_registry_is_validated_not_assumed(hello: Cli) -> None:
    (hello.registry / "stray").mkdir()
    (hello.registry / "wrong").mkdir()
    (hello.registry / "wrong" / "extension.yaml").write_text(
        "metadata: {name: other}\nspec: {hook: event, entrypoint: run.sh}\n"
    )
    reports = json.loads(hello("validate", "--json", ok=False).stdout)
    wrong = next(r for r in reports if r["name"] == "wrong")
    assert any("must equal the folder name" in e for e in wrong["errors"])
    stray = next(r for r in reports if r["name"] == "stray")
    assert stray["ok"] and "no extension.yaml" in stray["warnings"][0]


def test_missing_git_is_a_clear_error(hello: Cli) -> None:
    result = hello("enable", "hello", env={"PATH": "/nonexistent"}, ok=False)
    assert "csext needs the git executable: apt-get install git" in result.stderr


def test_test_command_passes_and_fails(hello: Cli, tmp_path: Path) -> None:
    result = hello("test", "hello")
    assert "5 passed, 0 failed" in result.stdout
    assert "PASS  alertevent  AlertEvent  success (exit 0)" in result.stdout
    one = hello.json("test", "hello", "--case", "alertevent")
    assert [c["name"] for c in one] == ["alertevent"] and one[0]["passed"]
    case = hello.registry / "hello" / "tests" / "zfail.yaml"
    case.write_text(
        "action: ActionEvent\npayload: {routing_key: a.b.c.d.e, category: ActionEvent, body: {}}\n"
        "expect: {exitCode: 3, stdoutJson: {status: error}}\n"
    )
    failed = hello("test", "hello", ok=False)
    assert failed.exit_code == 1 and "5 passed, 1 failed" in failed.stdout
    assert "FAIL  zfail  ActionEvent  success (exit 0)" in failed.stdout
    assert "      exitCode: expected 3, got 0" in failed.stdout
    assert 'stdoutJson.status: expected "error", got "success"' in failed.stdout
    assert "      stdout: " in failed.stdout  # what the extension printed, for the failure only


def test_test_command_adhoc_payload(hello: Cli) -> None:
    payload = hello.registry / "hello" / "tests" / "payloads" / "alertevent.json"
    body = json.loads(payload.read_text())
    event = hello.registry.parent / "event.json"
    event.write_text(
        json.dumps(
            {
                "routing_key": "management-server.AlertEvent.X.*.*",
                "category": "AlertEvent",
                "body": body,
            }
        )
    )
    result = hello("test", "hello", "--action", "AlertEvent", "--payload", str(event))
    assert "PASS  adhoc" in result.stdout
    assert hello("test", "hello", "--payload", str(event), ok=False).exit_code == 1
    unknown = hello("test", "hello", "--case", "nope", ok=False)
    assert "no test case nope" in unknown.stderr


@pytest.mark.broker
async def test_changes_are_broadcast_on_csext_control(tmp_path: Path, amqp_url: str) -> None:
    cli = Cli(tmp_path, amqp_url)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            CONTROL_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        result = await asyncio.to_thread(cli, "new", "hello", "--hook", "event")
        assert result.stderr == ""
        await asyncio.to_thread(cli, "enable", "hello")
        bodies = []
        async with queue.iterator(timeout=10) as messages:
            async for message in messages:
                await message.ack()
                body = json.loads(message.body)
                if body["extension"] == "hello":
                    bodies.append(body)
                if len(bodies) == 2:
                    break
    head = cli.git_log()
    assert [(b["event"], b["change"]) for b in bodies] == [
        ("registry-changed", "new"),
        ("registry-changed", "enable"),
    ]
    assert all(len(b["commit"]) == 40 for b in bodies) and len(head) == 2
