"""The bootstrap and packaging files stay correct: docker-compose.yml, Dockerfile, .ci/run,
the Makefile targets and the shell scripts.

Docker does not run in CI, so the compose file is checked structurally with PyYAML (and with
`docker compose config -q` where a compose plugin exists), the Dockerfile by its instructions.
The RabbitMQ bootstrap script runs for real against the test broker.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))
WORKER_SHUTDOWN_GRACE = 35.0
MAKE_TARGETS = [
    "help",
    "install",
    "run",
    "test",
    "lint",
    "format",
    "mypy",
    "bench",
    "bench-smoke",
    "faults",
    "up",
    "down",
    "clean",
]


def _run(*argv: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found = compose.get("services")
    assert isinstance(found, dict)
    return found


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _seconds(duration: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_compose_services(services: dict[str, Any]) -> None:
    assert set(services) >= {"rabbitmq", "worker"}
    rabbit = services["rabbitmq"]
    assert rabbit["image"] == "rabbitmq:3.13-management"
    published = {str(p).split(":")[-1] for p in rabbit["ports"]}
    assert published >= {"5672", "15672"}


def test_compose_rabbitmq_healthcheck(services: dict[str, Any]) -> None:
    check = services["rabbitmq"]["healthcheck"]["test"]
    command = shlex.split(check) if isinstance(check, str) else list(check)
    assert command[0] in ("CMD", "CMD-SHELL")
    assert command[1:] == ["rabbitmq-diagnostics", "-q", "ping"]


def test_compose_worker_runtime(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert worker["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert worker["init"] is True, "init reaps orphaned extension processes"
    assert worker["restart"] == "unless-stopped"
    assert _seconds(worker["stop_grace_period"]) > WORKER_SHUTDOWN_GRACE
    build = worker["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    assert (ROOT / context / "Dockerfile").is_file()


def test_compose_worker_registry_volume(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "./extensions:/srv/csext/extensions" in worker["volumes"]
    registry = _environment(worker).get("CSEXT_REGISTRY", "/srv/csext/extensions")
    assert registry == "/srv/csext/extensions"


def test_compose_worker_can_log_in(services: dict[str, Any]) -> None:
    """The worker's URL names the rabbitmq service and credentials the broker accepts."""
    url = urlsplit(_environment(services["worker"])["CSEXT_AMQP_URL"])
    assert (url.scheme, url.hostname, url.port or 5672) == ("amqp", "rabbitmq", 5672)
    rabbit_env = _environment(services["rabbitmq"])
    user = rabbit_env.get("RABBITMQ_DEFAULT_USER", "guest")
    password = rabbit_env.get("RABBITMQ_DEFAULT_PASS", "guest")
    assert (url.username, url.password) == (user, password)
    if user == "guest":
        # guest may only log in over loopback unless loopback_users is emptied.
        assert "-rabbit loopback_users []" in rabbit_env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]


def _has_compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    return _run("docker", "compose", "version").returncode == 0


def test_compose_config_validates() -> None:
    if not _has_compose_plugin():
        pytest.skip("no docker CLI with a working compose plugin here")
    result = _run("docker", "compose", "-f", ROOT / "docker-compose.yml", "config", "-q")
    assert result.returncode == 0, result.stderr


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), " ".join(rest.split())))
    return pairs


def _args(instruction: str) -> list[str]:
    return [rest for keyword, rest in _dockerfile() if keyword == instruction]


def test_dockerfile_base_and_install() -> None:
    assert _args("FROM") == ["python:3.11-slim"]
    runs = " ".join(_args("RUN"))
    assert re.search(r"apt-get install\b[^&]*\bgit\b", runs), "git is a runtime requirement"
    assert re.search(r"pip install \.(\s|$)", runs), "install the package from the repo root"
    assert "pip install -e" not in runs, "the image needs a real, non-editable install"
    copied = " ".join(_args("COPY"))
    for folder in ("worker", "handlers", "schemas", "store"):
        assert folder in copied
    assert "pyproject.toml" in copied


def test_dockerfile_runtime() -> None:
    copies = _args("COPY")
    assert any(re.search(r"extensions/? /srv/csext/extensions/?$", c) for c in copies)
    assert "CSEXT_REGISTRY=/srv/csext/extensions" in _args("ENV")
    users = _args("USER")
    assert users and users[-1] not in ("root", "0"), "the worker must not run as root"
    assert _args("ENTRYPOINT") == ['["csext"]']
    assert _args("CMD") == ['["worker"]']


def test_dockerignore_keeps_the_build_inputs() -> None:
    ignored = {
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    }
    assert {".git", ".venv"} <= ignored
    needed = {"pyproject.toml", "README.md", "worker", "handlers", "schemas", "store", "extensions"}
    assert not needed & ignored


def test_ci_run_calls_make_lint_mypy_test() -> None:
    script = ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK), ".ci/run must be executable"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") or text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text
    assert re.search(r"^make lint mypy test\b", text, re.MULTILINE), "CI gates lint and types too"
    assert _run("bash", "-n", script).returncode == 0


def test_there_are_scripts() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"ensure-rabbitmq.sh", "ensure-venv.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_syntax(script: Path) -> None:
    result = _run("bash", "-n", script)
    assert result.returncode == 0, result.stderr
    assert os.access(script, os.X_OK), f"{script.name} must be executable"
    assert "set -euo pipefail" in script.read_text()


def test_make_help_lists_the_targets() -> None:
    result = _run("make", "--no-print-directory", "help")
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines()[1:] if line.strip()}
    missing = set(MAKE_TARGETS) - listed
    assert not missing, f"make help does not list {sorted(missing)}"


def test_make_test_bootstraps_then_runs_pytest() -> None:
    """Dry run: the venv install, the broker check, then pytest with PYTEST_ARGS."""
    result = _run("make", "-n", "test", "PYTEST_ARGS=-k marker_xyz")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "scripts/ensure-rabbitmq.sh" in out
    assert ".venv/bin/pytest -k marker_xyz" in out
    assert out.index("ensure-rabbitmq.sh") < out.index(".venv/bin/pytest")


def _ensure_rabbitmq(host: str, port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CSEXT_AMQP_HOST": host, "CSEXT_AMQP_PORT": str(port)}
    return _run("bash", ROOT / "scripts" / "ensure-rabbitmq.sh", env=env)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.broker
def test_ensure_rabbitmq_accepts_a_reachable_broker(amqp_url: str) -> None:
    url = urlsplit(amqp_url)
    result = _ensure_rabbitmq(url.hostname or "127.0.0.1", url.port or 5672)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing to do" in result.stdout


def test_ensure_rabbitmq_refuses_to_set_up_a_remote_broker(closed_port: int) -> None:
    """An unreachable broker that is not on loopback is reported, never installed here.

    0.0.0.0 reaches this machine on Linux but is not a loopback name, so the probe is refused
    at once and the script must stop before any install or start.
    """
    result = _ensure_rabbitmq("0.0.0.0", closed_port)
    assert result.returncode == 1
    assert f"nothing answers AMQP on 0.0.0.0:{closed_port}" in result.stderr
    assert "installing" not in result.stdout and "starting" not in result.stdout


def test_every_code_package_is_installed():
    """A package missing from pyproject's list works in the editable install (tests, make run)
    but is absent from the wheel the Dockerfile installs."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    on_disk = set()
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            on_disk.add(".".join((package, *relative)))
    assert on_disk == set(config["packages"])
