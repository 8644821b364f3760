"""The bundled redfish-power extension as a real process against a Redfish simulator.

Each run goes through the oob-management hook handler as the worker would (payload file built
by the handler, typed result from its interpretation). The simulator (tests/data/redfish_sim.py)
listens on 127.0.0.1 only, on a random port.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from csext.handlers import get_handler
from csext.schemas.manifest import Manifest
from csext.schemas.run import Outcome
from csext.worker.runtimes.runner import ExecRunner, RunRequest

sys.path.insert(0, str(Path(__file__).parent / "data"))
from redfish_sim import RedfishSimulator

FOLDER = Path(__file__).resolve().parent.parent / "extensions" / "redfish-power"
SPEC = Manifest.model_validate(yaml.safe_load((FOLDER / "extension.yaml").read_text())).spec
HANDLER = get_handler(SPEC.hook_type)
HTTP = {"REDFISH_SCHEME": "http"}


@pytest.fixture
def runner(tmp_path) -> ExecRunner:
    return ExecRunner(run_dir=tmp_path / "runs", output_cap=256 * 1024, kill_grace=1.0)


@pytest.fixture
def bmc():
    with RedfishSimulator(users={"admin": "calvin-pw", "operator": "op-secret"}) as sim:
        yield sim


async def run(runner, action, payload, env=None):
    request = RunRequest(
        entrypoint=FOLDER / SPEC.entrypoint_path,
        action=action,
        payload=HANDLER.payload_bytes(action, payload, SPEC),
        timeout=15,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **SPEC.env, **(env or {})},
        cwd=FOLDER,
    )
    raw = await runner.run(request)
    return raw, HANDLER.interpret(action, raw, SPEC, payload=payload)


def creds(sim, username="admin", password="calvin-pw", **extra):
    return {"address": f"127.0.0.1:{sim.port}", "username": username, "password": password} | extra


def resets(sim):
    return [body["ResetType"] for method, _path, body in sim.requests if method == "POST"]


@pytest.mark.parametrize("state", ["On", "Off"])
async def test_status_reads_the_power_state(runner, bmc, state):
    bmc.power_state = state
    raw, out = await run(runner, "status", creds(bmc), HTTP)
    assert out.outcome == Outcome.SUCCESS, raw.stdout
    assert out.result["power_state"] == state and out.result["success"] is True


async def test_transitional_states_are_unknown(runner, bmc):
    bmc.power_state = "PoweringOn"
    _raw, out = await run(runner, "status", creds(bmc), HTTP)
    assert out.result["power_state"] == "Unknown"


@pytest.mark.parametrize(
    ("action", "reset_type", "state"),
    [
        ("on", "On", "On"),
        ("off", "ForceOff", "Off"),
        ("cycle", "PowerCycle", "On"),
        ("reset", "ForceRestart", "On"),
        ("soft", "GracefulShutdown", "Off"),
    ],
)
async def test_power_operations_post_the_reset_type(runner, bmc, action, reset_type, state):
    bmc.power_state = "On" if action != "on" else "Off"
    raw, out = await run(runner, action, creds(bmc), HTTP)
    assert out.outcome == Outcome.SUCCESS, raw.stdout
    assert resets(bmc) == [reset_type]
    assert bmc.power_state == state and out.result["power_state"] == state


async def test_cycle_uses_force_restart_when_power_cycle_is_not_offered(runner):
    types = ("On", "ForceOff", "ForceRestart", "GracefulShutdown")
    with RedfishSimulator(users={"admin": "calvin-pw"}, power_state="On", reset_types=types) as sim:
        _raw, out = await run(runner, "cycle", creds(sim), HTTP)
    assert out.outcome == Outcome.SUCCESS
    assert resets(sim) == ["ForceRestart"]


async def test_ipmi_port_623_means_the_scheme_default_and_other_ports_are_used(runner, bmc):
    payload = {
        "address": "127.0.0.1",
        "port": bmc.port,
        "username": "admin",
        "password": "calvin-pw",
    }
    _raw, out = await run(runner, "status", payload, HTTP)
    assert out.outcome == Outcome.SUCCESS
    payload["port"] = 623
    raw, out = await run(runner, "status", payload, {**HTTP, "REDFISH_PORT": str(bmc.port)})
    assert out.outcome == Outcome.SUCCESS, raw.stdout


async def test_wrong_password_is_an_auth_failure_and_never_printed(runner, bmc):
    raw, out = await run(runner, "status", creds(bmc, password="not-the-password"), HTTP)
    assert raw.exit_code == 77
    assert out.result["auth_failure"] is True and out.result["success"] is False
    assert b"not-the-password" not in raw.stdout + raw.stderr


async def test_user_list_and_set_password(runner, bmc):
    raw, out = await run(runner, "user-list", creds(bmc), HTTP)
    assert out.outcome == Outcome.SUCCESS, raw.stdout
    users = {u["name"]: u for u in out.result["users"]}
    assert users["admin"]["id"] == "2" and users["operator"]["id"] == "3"
    assert users["admin"]["privilege"] == "ADMINISTRATOR"

    payload = creds(bmc, user_id="3", new_password="brand-new-pw")
    raw, out = await run(runner, "user-set-password", payload, HTTP)
    assert out.outcome == Outcome.SUCCESS, raw.stdout
    assert bmc.password_of("operator") == "brand-new-pw"
    assert b"brand-new-pw" not in raw.stdout + raw.stderr
    assert "brand-new-pw" in HANDLER.secret_values("user-set-password", payload)


async def test_user_set_password_needs_its_fields():
    with pytest.raises(ValueError, match="user_id and new_password"):
        HANDLER.payload_bytes("user-set-password", {"address": "x", "user_id": "2"}, SPEC)


def self_signed(tmp_path: Path) -> Path:
    pem = tmp_path / "bmc.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(pem), "-out", str(pem)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return pem


async def test_https_self_signed_needs_the_ca_file_or_verification_off(runner, tmp_path):
    pem = self_signed(tmp_path)
    with RedfishSimulator(users={"admin": "calvin-pw"}, power_state="On", certfile=str(pem)) as sim:
        https = {"REDFISH_SCHEME": "https"}
        raw, out = await run(runner, "status", creds(sim), https)
        assert out.outcome == Outcome.FAILED and b"CERTIFICATE_VERIFY_FAILED" in raw.stdout
        _raw, out = await run(runner, "status", creds(sim), {**https, "REDFISH_CA_FILE": str(pem)})
        assert out.result["power_state"] == "On"
        _raw, out = await run(
            runner, "status", creds(sim), {**https, "REDFISH_VERIFY_TLS": "false"}
        )
        assert out.result["power_state"] == "On"
