"""Every command's error path through the real `csext` command line.

One format everywhere: `csext: error: <what>` as the first line on stderr, an optional
`  fix: <what to do>` line, the exit code docs/cli.md documents for that kind of failure, and
never a traceback (unless --debug asks for one). The table of cases runs through the real app
in-process (typer's CliRunner: the same parsing and error reporting, without a Python start-up
per case on a busy machine); the entry point itself (`python -m csext.cli`, a terminal, the
worker) is checked with subprocesses below.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from csext.cli.app import app

BROKER_DOWN = "amqp://guest:guest@127.0.0.1:1/"
ERROR_LINE = re.compile(r"^csext: error: \S")


def invoke(*args: str, env: dict[str, str], stdin: str = "") -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the app run in this process."""
    result = CliRunner().invoke(app, list(args), input=stdin, env=env)
    assert result.exit_code is not None, result
    return result.exit_code, result.stdout, result.stderr


def run(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "csext.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A registry with one extension, `hello`; the broker unreachable (port 1)."""
    home = tmp_path_factory.mktemp("cli-errors")
    values = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    values.update(
        {
            "CSEXT_REGISTRY": str(home / "registry"),
            "CSEXT_SECRETS_FILE": str(home / "private" / "secrets.yaml"),
            "CSEXT_AMQP_URL": BROKER_DOWN,
            "CSEXT_RUN_DIR": str(home / "runs"),
            "CSEXT_CONFIG": str(home / "config.yaml"),
            "CSEXT_CONNECT_TIMEOUT": "1",
            "XDG_CONFIG_HOME": str(home / "xdg-config"),
            "XDG_CACHE_HOME": str(home / "xdg-cache"),
        }
    )
    (home / "config.yaml").write_text("# every setting from the environment\n")
    made = run("new", "hello", "--hook", "event", env=values)
    assert made.returncode == 0, made.stderr
    (home / "not-json.json").write_text("{nope")
    return values


# (arguments, exit code, words the error must contain)
CASES = [
    (["show", "nope"], 1, "no extension named 'nope'"),
    (["validate", "/nonexistent"], 1, "is not a directory"),
    (["new", "Bad_Name", "--hook", "event"], 1, "not a valid extension name"),
    (["new", "x", "--hook", "orchestrater"], 2, "did you mean 'orchestrator'"),
    (["edit", "nope"], 1, "no extension named 'nope'"),
    (["set", "hello"], 1, "give exactly one of --content FILE or --path"),
    (["enable", "nope"], 1, "no extension named 'nope'"),
    (["disable", "nope"], 1, "no extension named 'nope'"),
    (["remove", "hello"], 1, "not removed"),
    (["diff", "nope"], 1, "no history"),
    (["rollback", "hello", "deadbeef"], 1, "no commit 'deadbeef'"),
    (["secret", "set", "nope", "KEY"], 1, "no extension named 'nope'"),
    (["secret", "unset", "hello", "KEY"], 1, "has no secret KEY"),
    (["secret", "list", "nope"], 1, "no extension named 'nope'"),
    (["test", "hello", "--case", "nope"], 1, "no test case nope"),
    (["export", "nope"], 1, "no extension named 'nope'"),
    (["import", "/nonexistent.tar.gz"], 1, "does not exist"),
    (["install", "/nonexistent/repo"], 1, "git clone of /nonexistent/repo failed"),
    (["update", "hello"], 1, "was not installed from Git"),
    (["index", "build", "/nonexistent"], 1, "is not a folder of extensions"),
    (["index", "add", "/nonexistent"], 1, "no such file or folder"),
    (["index", "remove", "nope"], 1, "no index named 'nope'"),
    (["search", "x", "--hook", "bogus"], 2, "unknown hook 'bogus'"),
    (["schema", "bogus"], 2, "unknown hook 'bogus'"),
    (["schema"], 2, "give a hook or --all"),
    (["shim"], 2, "give an extension NAME and --output PATH"),
    (["call", "hello", "greet", "--payload", "/nonexistent.json"], 66, "cannot read"),
    (["call", "hello", "greet", "--payload", "NOT_JSON"], 65, "is not JSON"),
    (["call", "hello", "greet"], 69, "cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/"),
    (["emit", "--category", "ActionEvent", "--type", "X", "--body", "/nonexistent"], 66, "read"),
    (["emit", "--category", "ActionEvent", "--type", "X", "--body", "-"], 69, "cannot reach"),
    (["runs", "--since", "bogus"], 2, "--since 'bogus'"),
    (["runs"], 69, "cannot reach RabbitMQ"),
    (["dead", "list"], 69, "cannot reach RabbitMQ"),
    (["dead", "replay"], 1, "nothing replayed"),
    (["nosuchcommand"], 2, "No such command 'nosuchcommand'"),
    (["list", "--nosuchflag"], 2, "No such option: --nosuchflag"),
]


@pytest.mark.parametrize(("args", "code", "words"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_error_format_and_exit_code(env, args, code, words) -> None:
    not_json = str(Path(env["CSEXT_REGISTRY"]).parent / "not-json.json")
    args = [not_json if a == "NOT_JSON" else a for a in args]
    exit_code, stdout, stderr = invoke(*args, env=env, stdin="{}")
    assert_error(stderr, words)
    assert exit_code == code, stderr
    assert "Traceback" not in stdout


def assert_error(stderr: str, words: str) -> None:
    """One `csext: error:` line first, then only indented lines (the fix, details)."""
    lines = stderr.splitlines()
    assert lines and ERROR_LINE.match(lines[0]), stderr
    assert words in stderr, stderr
    assert all(line.startswith(("  ", "\t")) for line in lines[1:]), stderr
    assert "Traceback" not in stderr and 'File "' not in stderr


def test_the_entry_point_reports_the_same_way(env) -> None:
    """`python -m csext.cli` (the console script's module) with a payload that is not JSON."""
    not_json = str(Path(env["CSEXT_REGISTRY"]).parent / "not-json.json")
    result = run("call", "hello", "greet", "--payload", not_json, env=env)
    assert result.returncode == 65
    assert_error(result.stderr, "is not JSON")


def test_the_worker_logs_then_reports_an_unreachable_broker(env) -> None:
    result = run("worker", env=env)
    assert result.returncode == 69
    assert "csext: error: cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/" in result.stderr
    assert "Traceback" not in result.stderr and "guest:guest" not in result.stderr


def test_invalid_settings_list_every_problem_and_exit_2(env) -> None:
    bad = {**env, "CSEXT_CONCURRENCY": "zero", "CSEXT_AMQP_URL": "http://x"}
    exit_code, _, stderr = invoke("list", env=bad)
    assert exit_code == 2
    assert_error(stderr, "invalid settings")
    assert "concurrency" in stderr and "amqp_url" in stderr


def test_json_mode_prints_the_error_as_json_too(env) -> None:
    exit_code, stdout, stderr = invoke("show", "nope", "--json", env=env)
    assert exit_code == 1
    assert json.loads(stdout)["error"].startswith("no extension named 'nope'")
    assert_error(stderr, "no extension named 'nope'")
    _, stdout, _ = invoke("show", "nope", env=env)  # the next command is not in JSON mode
    assert stdout == ""


def test_debug_shows_the_traceback_for_bug_reports(env) -> None:
    for args, extra in ((["--debug", "runs"], {}), (["runs"], {"CSEXT_DEBUG": "1"})):
        result = run(*args, env={**env, **extra})
        assert result.returncode == 69
        assert "Traceback (most recent call last)" in result.stderr
        assert "BrokerUnavailable" in result.stderr
        assert "csext: error: cannot reach RabbitMQ" in result.stderr


def test_version(env) -> None:
    from csext.store.compat import csext_version

    result = run("--version", env=env)  # the console script's module, as installed
    assert result.returncode == 0
    assert result.stdout == f"csext {csext_version()}\n" and csext_version() != "0"


def test_help_has_no_bool_placeholders_and_offers_completion(env) -> None:
    _, root, _ = invoke("--help", env=env)
    assert "--install-completion" in root and "--version" in root
    for args in (["--help"], ["list", "--help"], ["dead", "replay", "--help"], ["test", "-h"]):
        exit_code, shown, _ = invoke(*args, env=env)
        assert exit_code == 0 and "--help" in shown
        assert "<bool>" not in shown, shown


def test_hooks_take_cloudstacks_spellings(env) -> None:
    schema = run("schema", "Orchestrator", env=env)
    assert schema.returncode == 0 and json.loads(schema.stdout)["hook"] == "orchestrator"
    listed = run("list", "--hook", "NetworkOrchestrator", "--json", env=env)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    made = run("new", "orch", "--hook", "OrchestratorExtension", "--json", env=env)
    assert made.returncode == 0, made.stderr
    assert (
        json.loads(run("list", "--hook", "orchestrator", "--json", env=env).stdout)[0]["name"]
        == "orch"
    )


def test_a_payload_that_does_not_fit_names_the_field(env, tmp_path: Path) -> None:
    payload = tmp_path / "event.json"
    payload.write_text(
        json.dumps({"routing_key": "a.b.c.d.e", "category": "ActionEvent", "resource_type": 5})
    )
    exit_code, stdout, _ = invoke(
        "test", "hello", "--action", "ActionEvent", "--payload", str(payload), env=env
    )
    assert exit_code == 1
    assert "resource_type: Input should be a valid string (got 5)" in stdout


def on_terminal(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run csext on a pseudo-terminal (stdout and stderr): (exit code, what the screen got)."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: csext on the pseudo-terminal
        os.execve(sys.executable, [sys.executable, "-m", "csext.cli", *args], env)
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode()


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_expected_failures_print_no_traceback_even_on_a_terminal(env) -> None:
    """On a terminal the error is coloured (rich); still one error line, no traceback."""
    exit_code, text = on_terminal("show", "nope", env=env)
    assert exit_code == 1
    assert "\x1b[" in text  # coloured
    assert "csext: error: no extension named 'nope'" in plain(text) and "Traceback" not in text


def test_tables_on_a_terminal_plain_text_when_piped(env) -> None:
    exit_code, text = on_terminal("list", env=env)
    assert exit_code == 0 and "─" in text and "hello" in text  # rich's header rule
    piped = run("list", env=env)
    assert piped.returncode == 0 and "─" not in piped.stdout and "\x1b[" not in piped.stdout
    assert piped.stdout.splitlines()[0].split() == [
        "NAME", "STATUS", "HOOK", "VERSION", "RUNTIME", "DESCRIPTION"
    ]  # fmt: skip
    exit_code, text = on_terminal("test", "hello", env=env)  # progress bar, coloured verdicts
    assert exit_code == 0 and "5 passed, 0 failed" in plain(text)
    assert re.search(r"(\x1b\[[0-9;]*m)+PASS", text), text  # PASS is coloured


def test_unknown_manifest_keys_are_refused_with_a_suggestion(env) -> None:
    import yaml

    manifest = Path(env["CSEXT_REGISTRY"]) / "hello" / "extension.yaml"
    original = manifest.read_text()
    data = yaml.safe_load(original)
    data["x-team"] = "ops"  # keys of the user's own: `x-` at any level
    data["spec"]["x-note"] = "reviewed"
    data["spec"]["retries"] = 3
    data["spec"]["concurency"] = 2
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        exit_code, stdout, _ = invoke("validate", str(manifest.parent), env=env)
        assert exit_code == 1
        assert "unknown key 'retries' (did you mean 'retry'?)" in stdout
        assert "unknown key 'concurency' (did you mean 'concurrency'?)" in stdout
        exit_code, _, stderr = invoke("enable", "hello", env=env)
        assert exit_code == 1
        assert_error(stderr, "unknown key 'retries' (did you mean 'retry'?)")
        del data["spec"]["retries"], data["spec"]["concurency"]
        manifest.write_text(yaml.safe_dump(data, sort_keys=False))
        exit_code, stdout, _ = invoke("validate", str(manifest.parent), env=env)
        assert exit_code == 0, stdout
    finally:
        manifest.write_text(original)
