"""`csext new --describe`: the draft → validate → test → repair loop, end to end.

The model is an external service, so these tests run a local OpenAI-compatible server
(stdlib http.server on 127.0.0.1, an ephemeral port) that serves recorded chat completions from
tests/data/assist/ in order and records every request it gets. The CLI is the real one, run as
a process (`python -m csext.cli`), against a fresh Git registry.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from csext.schemas.manifest import HookType
from csext.store.assist import (
    DraftRequest,
    LlmConfig,
    TestOutcome,
    draft_extension,
    load_llm_config,
    prompt,
)
from csext.store.assist.answer import ENTRY_CAP, parse_answer
from csext.store.assist.client import ChatClient
from csext.store.assist.errors import DraftProblem, EndpointError, NoPassingDraft
from csext.store.ops import Store
from csext.store.scaffold import SUFFIX, Language, write_extension

DATA = Path(__file__).parent / "data" / "assist"
BROKER_DOWN = "amqp://guest:guest@127.0.0.1:1/"
API_KEY = "sk-test-4f9c2e81d7a6b3"
GPU_LAST = (
    "Order the clusters so that clusters whose name ends with -gpu come last; keep the given "
    "order otherwise. Accept every VM."
)


@dataclass(frozen=True)
class Reply:
    file: str | None = None
    status: int = 200
    delay: float = 0.0
    echo_auth: bool = False
    """Answer the Authorization header back in the body (as some proxies do in errors)."""


class ModelServer:
    """A fake chat-completions endpoint: serves `replies` in order (the last one repeats)."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                server.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                reply = server.replies[min(len(server.requests), len(server.replies)) - 1]
                if reply.delay:
                    server.release.wait(reply.delay)
                data = (DATA / reply.file).read_bytes() if reply.file else b'{"error": "x"}'
                if reply.echo_auth:
                    data = json.dumps({"error": f"bad key {self.headers['Authorization']}"})
                    data = data.encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def messages(self, index: int) -> list[dict[str, str]]:
        return self.requests[index]["body"]["messages"]

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def model_server() -> Iterator[Any]:
    servers: list[ModelServer] = []

    def start(*replies: Reply) -> ModelServer:
        servers.append(ModelServer(list(replies)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


class Cli:
    """The real `csext` command, as a process, on a registry and secrets file in tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.registry = tmp_path / "registry"
        self.secrets = tmp_path / "private" / "secrets.yaml"
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("CSEXT_")}
        self.env.update(
            CSEXT_REGISTRY=str(self.registry),
            CSEXT_SECRETS_FILE=str(self.secrets),
            CSEXT_AMQP_URL=BROKER_DOWN,
            CSEXT_RUN_DIR=str(tmp_path / "runs"),
            CSEXT_CONFIG=str(tmp_path / "no-config.yaml"),
        )

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return subprocess.run(
            [sys.executable, "-m", "csext.cli", *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def git_log(self) -> list[str]:
        if not (self.registry / ".git").exists():
            return []
        done = subprocess.run(
            ["git", "log", "--format=%s"], cwd=self.registry, capture_output=True, text=True
        )
        return done.stdout.splitlines()

    def llm_key_in_secrets(self, key: str) -> None:
        self.secrets.parent.mkdir(mode=0o700)
        self.secrets.write_text(yaml.safe_dump({"_csext": {"CSEXT_LLM_API_KEY": key}}))
        self.secrets.chmod(0o600)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def llm_env(server: ModelServer, **extra: str) -> dict[str, str]:
    return {"CSEXT_LLM_URL": server.url, "CSEXT_LLM_MODEL": "qwen2.5-coder:7b", **extra}


def describe(cli: Cli, env: dict[str, str], *more: str, hook: str = "deployment-planner") -> Any:
    return cli(
        "new",
        "gpu-last",
        "--hook",
        hook,
        "--lang",
        "python",
        "--describe",
        GPU_LAST,
        *more,
        env=env,
    )


def assert_nothing_saved(cli: Cli) -> None:
    assert not (cli.registry / "gpu-last").exists()
    assert cli.git_log() == []


# --- the loop, end to end ------------------------------------------------------------------


def test_failing_draft_is_sent_back_and_the_repaired_one_is_saved_disabled(
    cli: Cli, model_server: Any
) -> None:
    server = model_server(Reply("planner-draft-failing.json"), Reply("planner-draft-repaired.json"))
    cli.llm_key_in_secrets(API_KEY)
    done = describe(cli, llm_env(server))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "round 1/3: failed: csext test: 1 passed, 1 failed" in out
    assert "cluster_ids" in out and "[2,3,1]" in out and "[1,2,3]" in out
    assert "round 2/3: passed: csext test: 2 passed, 0 failed" in out
    assert "drafted by qwen2.5-coder:7b" in out
    assert API_KEY not in done.stdout + done.stderr

    # What the model was sent: the hook's contract first, then the test report of draft 1.
    assert len(server.requests) == 2
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {API_KEY}"
    first = server.messages(0)[1]["content"]
    for needle in ("# Hook: deployment-planner", "fail-open", "- exit 0: success", GPU_LAST):
        assert needle in first
    repair = server.messages(1)
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert "Draft 1 was not accepted" in repair[3]["content"]
    sent_back = repair[3]["content"]  # the `csext test` report of draft 1, as printed
    assert "FAIL  gpu-last" in sent_back and "cluster_ids" in sent_back
    assert "[2,3,1]" in sent_back and "[1,2,3]" in sent_back

    # Saved: the repaired draft, disabled, one commit, with where it came from.
    folder = cli.registry / "gpu-last"
    assert 'endswith("-gpu"))' in (folder / "gpu-last.py").read_text()
    assert "not c.get" not in (folder / "gpu-last.py").read_text()
    manifest = yaml.safe_load((folder / "extension.yaml").read_text())
    assert manifest["spec"]["enabled"] is False
    assert manifest["metadata"]["description"].startswith("Order the clusters")
    assert (folder / "tests" / "payloads" / "order-clusters.json").is_file()  # samples stay
    assert sorted(p.name for p in (folder / "tests").glob("*.yaml")) == [
        "accepts-every-vm.yaml",
        "gpu-last.yaml",
    ]
    changelog = (folder / "CHANGELOG.md").read_text()
    assert "qwen2.5-coder:7b at " + server.url in changelog
    assert "> " + GPU_LAST[:60] in changelog
    assert "The sort key was inverted" in changelog
    assert "round 1/3: failed" in changelog
    readme = (folder / "README.md").read_text()
    assert "## What it does" in readme and "`can-handle`, `order-clusters`" in readme
    assert "TODO" not in readme
    assert cli.git_log() == [
        "new gpu-last: deployment-planner extension (python), drafted by qwen2.5-coder:7b "
        "in 2 round(s)"
    ]
    tested = cli("test", "gpu-last")
    assert tested.returncode == 0, tested.stdout
    assert "2 passed, 0 failed" in tested.stdout


def test_a_draft_that_fails_its_tests_is_not_saved(cli: Cli, model_server: Any) -> None:
    server = model_server(Reply("planner-draft-failing.json"))
    done = describe(cli, llm_env(server), "--rounds", "1")
    assert done.returncode == 1
    assert "no draft passed in 1 round(s); nothing saved" in done.stderr
    assert "[1,2,3]" in done.stderr
    assert len(server.requests) == 1
    assert_nothing_saved(cli)


def test_json_output_lists_the_rounds(cli: Cli, model_server: Any) -> None:
    server = model_server(Reply("planner-draft-repaired.json"))
    done = describe(cli, llm_env(server), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["change"] == "new" and data["extension"] == "gpu-last"
    assert data["rounds"] == [
        {"round": 1, "verdict": "passed", "summary": "csext test: 2 passed, 0 failed"}
    ]
    assert "round 1/3: passed" in done.stderr


# --- refusals and endpoint trouble: a clear error, nothing saved ----------------------------


def test_an_answer_that_is_not_code_is_refused_and_the_refusal_sent_back(
    cli: Cli, model_server: Any
) -> None:
    server = model_server(Reply("not-code.json"))
    done = describe(cli, llm_env(server), "--rounds", "3")
    assert done.returncode == 1
    assert "round 1/3: refused: the answer is not code" in done.stdout
    assert "no draft passed in 3 round(s); nothing saved" in done.stderr
    assert "the answer is not code" in server.messages(1)[3]["content"]
    # Round 3 gets the first message, the last draft and its errors: the prompt stays bounded.
    assert len(server.requests) == 3 and len(server.messages(2)) == 4
    assert server.messages(2)[3]["content"].startswith("Draft 2 was not accepted")
    assert_nothing_saved(cli)


def test_a_taken_name_is_refused_before_asking_the_model(cli: Cli, model_server: Any) -> None:
    server = model_server(Reply("planner-draft-repaired.json"))
    assert cli("new", "gpu-last", "--hook", "deployment-planner").returncode == 0
    done = describe(cli, llm_env(server))
    assert done.returncode == 1
    assert "already exists: pick another name" in done.stderr
    assert server.requests == []


def test_code_in_another_language_is_refused(cli: Cli, model_server: Any) -> None:
    server = model_server(Reply("wrong-language.json"))
    done = describe(cli, llm_env(server), "--rounds", "1", hook="user-authenticator")
    assert done.returncode == 1
    assert "holds code that is not python (```javascript)" in done.stderr
    assert_nothing_saved(cli)


def test_an_endpoint_that_is_down_is_a_clear_error(cli: Cli) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"CSEXT_LLM_URL": f"http://127.0.0.1:{port}/v1", "CSEXT_LLM_MODEL": "m"}
    done = describe(cli, env)
    assert done.returncode == 1
    assert f"the model endpoint m at http://127.0.0.1:{port}/v1 cannot be reached" in done.stderr
    assert "Traceback" not in done.stderr
    assert_nothing_saved(cli)


def test_an_endpoint_that_answers_slowly_is_a_clear_error(cli: Cli, model_server: Any) -> None:
    server = model_server(Reply("planner-draft-repaired.json", delay=30))
    done = describe(cli, llm_env(server, CSEXT_LLM_TIMEOUT="0.5"))
    assert done.returncode == 1
    assert "did not answer within 0.5 s" in done.stderr
    assert "CSEXT_LLM_TIMEOUT" in done.stderr
    assert_nothing_saved(cli)


def test_no_endpoint_configured_says_how_to_configure_one(cli: Cli) -> None:
    done = describe(cli, {})
    assert done.returncode == 1
    for needle in ("CSEXT_LLM_URL", "Ollama", "llama.cpp", "vLLM", "docs/assist.md"):
        assert needle in done.stderr
    assert_nothing_saved(cli)


def test_the_api_key_is_masked_in_errors(cli: Cli, model_server: Any) -> None:
    server = model_server(Reply(status=401, echo_auth=True))
    done = describe(cli, llm_env(server, CSEXT_LLM_API_KEY=API_KEY))
    assert done.returncode == 1
    assert "answered HTTP 401" in done.stderr and "check CSEXT_LLM_API_KEY" in done.stderr
    assert "bad key Bearer ***" in done.stderr
    assert API_KEY not in done.stdout + done.stderr
    assert_nothing_saved(cli)


# --- the library, as the web UI calls it -----------------------------------------------------


def test_draft_extension_as_a_library_call(tmp_path: Path, model_server: Any) -> None:
    """The web UI's entry point: the runner is injected, so a runner that fails every draft
    shows the loop ends after `rounds` without touching the registry."""
    server = model_server(Reply("planner-draft-repaired.json"))
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(yaml.safe_dump({"other-ext": {"TOKEN": "hunter2-token"}}))
    secrets.chmod(0o600)
    store = Store(tmp_path / "registry", secrets)
    seen: list[Path] = []

    def never_passes(folder: Path) -> TestOutcome:
        seen.append(folder)
        assert (folder / "gpu-last.py").read_text().startswith("#!/usr/bin/env python3")
        return TestOutcome(False, "FAIL  gpu-last\n  stdout: hunter2-token\n0 passed, 1 failed")

    request = DraftRequest(
        name="gpu-last",
        hook=HookType.DEPLOYMENT_PLANNER,
        lang=Language.PYTHON,
        description=GPU_LAST,
        rounds=2,
    )
    chat = ChatClient(LlmConfig(url=server.url, model="m"))
    rounds: list[str] = []
    with pytest.raises(NoPassingDraft):
        draft_extension(store, request, chat=chat, run_tests=never_passes, on_round=rounds.append)
    assert len(seen) == 2 and len(rounds) == 2
    sent_back = server.messages(1)[3]["content"]  # a secret value a draft printed is masked
    assert "stdout: ***" in sent_back and "hunter2" not in sent_back
    assert not (tmp_path / "registry" / "gpu-last").exists()


def test_an_endpoint_answering_garbage_is_an_endpoint_error(model_server: Any) -> None:
    server = model_server(Reply("not-code.json", status=500))
    chat = ChatClient(LlmConfig(url=server.url, model="m"))
    with pytest.raises(EndpointError, match="answered HTTP 500"):
        chat.complete([{"role": "user", "content": "hi"}])


# --- what an answer must be ------------------------------------------------------------------


def _answer(code: str, tag: str = "python") -> str:
    cases = "- name: a\n  action: x\n  payload: {}\n"
    return f"```{tag}\n{code}\n```\n```markdown\n## What\n```\n```yaml\n{cases}```\n"


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (_answer("#!/usr/bin/env python3\nprint(1)") * 2, "2 python blocks"),
        (_answer("print(1)"), "must start with #!/usr/bin/env python3"),
        (_answer("#!/usr/bin/env bash\necho 1"), "must start with #!/usr/bin/env python3"),
        (_answer("#!/usr/bin/env python3\n" + "#" * ENTRY_CAP), f"the cap is {ENTRY_CAP}"),
        (_answer("#!/usr/bin/env python3").replace("payload: {}", "payloadFile: p.json"), "inline"),
        (_answer("#!/usr/bin/env python3").replace("- name: a\n", "- name: A B\n"), "name must"),
        (_answer("#!/usr/bin/env python3").replace("```yaml", "```text"), "no ```yaml block"),
    ],
)
def test_answers_that_are_refused(answer: str, problem: str) -> None:
    with pytest.raises(DraftProblem) as caught:
        parse_answer(answer, Language.PYTHON)
    assert problem in str(caught.value)


def test_an_accepted_answer_keeps_the_notes() -> None:
    draft = parse_answer(
        "Notes here.\n" + _answer("#!/usr/bin/env python3\nprint(1)"), Language.PYTHON
    )
    assert draft.notes == "Notes here."
    assert list(draft.cases) == ["a"]
    assert draft.readme_section == "## What"


# --- configuration, the optional client, the prompt -----------------------------------------


def test_the_core_install_does_not_import_the_client_library() -> None:
    code = (
        "import sys, csext.cli.app, csext.store.assist, csext.cli.assist; "
        "print('httpx' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_without_csext_ai_installed_the_error_says_what_to_install(
    cli: Cli, tmp_path: Path
) -> None:
    missing = tmp_path / "no-httpx" / "httpx"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ImportError('simulated: httpx not installed')\n")
    env = {
        "PYTHONPATH": str(missing.parent),
        "CSEXT_LLM_URL": "http://127.0.0.1:9/v1",
        "CSEXT_LLM_MODEL": "m",
    }
    done = describe(cli, env)
    assert done.returncode == 1
    assert "pip install 'csext[ai]'" in done.stderr
    assert_nothing_saved(cli)


def test_the_environment_wins_over_the_secrets_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets.yaml"
    section = {"CSEXT_LLM_URL": "http://file/v1", "CSEXT_LLM_API_KEY": API_KEY}
    secrets.write_text(yaml.safe_dump({"_csext": section}))
    secrets.chmod(0o600)
    for name in ("URL", "MODEL", "API_KEY", "TIMEOUT", "TEMPERATURE"):
        monkeypatch.delenv(f"CSEXT_LLM_{name}", raising=False)
    monkeypatch.setenv("CSEXT_LLM_URL", "http://env/v1")
    config = load_llm_config(secrets)
    assert config.url == "http://env/v1"
    assert config.key == API_KEY
    assert API_KEY not in repr(config)
    assert config.mask(f"echo {API_KEY}") == "echo ***"


@pytest.mark.parametrize("hook", list(HookType))
@pytest.mark.parametrize("lang", list(Language))
def test_a_prompt_is_built_for_every_hook_and_language(
    hook: HookType, lang: Language, tmp_path: Path
) -> None:
    folder = tmp_path / "x"
    write_extension(folder, "x", hook, lang)
    scaffold = prompt.Scaffold(folder, f"x{SUFFIX[lang]}")
    text = prompt.first_message(hook, lang, scaffold, "do it")["content"]
    assert f"# Hook: {hook.value}" in text and "- exit 0: success" in text
    assert "failure policy:" in text and text.endswith("do it")
    assert len(text) < 60_000
    assert f"```{lang.value}" in prompt.system_message(lang)["content"]


def test_a_bash_draft_passes_and_is_saved(cli: Cli, model_server: Any) -> None:
    server = model_server(Reply("lab-otp-bash.json"))
    done = cli(
        "new",
        "lab-otp",
        "--hook",
        "two-factor",
        "--lang",
        "bash",
        "--describe",
        "A lab second factor: the code 424242 passes, any other code fails.",
        env=llm_env(server),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "round 1/3: passed: csext test: 3 passed, 0 failed" in done.stdout
    assert "```bash" in server.messages(0)[0]["content"]
    assert "fail-closed" in server.messages(0)[1]["content"]
    assert (cli.registry / "lab-otp" / "lab-otp.sh").read_text().startswith("#!/usr/bin/env bash")
    assert cli("test", "lab-otp").returncode == 0
