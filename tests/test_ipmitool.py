"""`csext ipmitool`: the argv CloudStack's IPMI driver builds, the output it parses, end to end.

The end-to-end tests run the real `csext ipmitool` process → real RabbitMQ → a real worker →
the bundled redfish-power extension → the Redfish simulator on 127.0.0.1, and read the output
the way IpmitoolOutOfBandManagementDriver / IpmitoolWrapper do (ported below).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner
from workerkit import running_worker, settings_for

from csext.bridges import ipmitool
from csext.cli.app import app

sys.path.insert(0, str(Path(__file__).parent / "data"))
from redfish_sim import RedfishSimulator

CSEXT = [sys.executable, "-m", "csext.cli"]
REDFISH = Path(__file__).resolve().parent.parent / "extensions" / "redfish-power"
BASE = ["-I", "lanplus", "-R", "1", "-v"]


# ---------------------------------------------------------------------------- CloudStack's side


def cloudstack_argv(options: list[tuple[str, str]], *command: str) -> list[str]:
    """IpmitoolWrapper.getIpmiToolCommandArgs: -I -R -v, then the options CloudStack has."""
    flags = {"address": "-H", "port": "-p", "username": "-U", "password": "-P"}
    argv = list(BASE)
    for key, value in options:
        argv += [flags[key], value]
    return argv + list(command)


def parse_power_state(stdout: str) -> str:
    """IpmitoolWrapper.parsePowerState on the trimmed stdout."""
    text = stdout.strip()
    return {"Chassis Power is on": "On", "Chassis Power is off": "Off"}.get(text, "Unknown")


def find_ipmi_user(users_list: str, username: str) -> str | None:
    """IpmitoolWrapper.findIpmiUser, line for line."""
    lines = re.split(r"\r?\n", users_list)
    assert len(lines) >= 2, "Error parsing user ID from ipmi user listing"
    id_index, name_index = 0, 1
    legends = re.split(" +", lines[0])
    for idx, legend in enumerate(legends):
        if legend == "ID":
            id_index = idx
        if legend == "Name":
            name_index = idx
    user_id = None
    for line in lines[1:]:
        words = re.split(" +", line)
        if name_index < len(words) and id_index < len(words) and words[name_index] == username:
            user_id = words[id_index]
    return user_id


# ---------------------------------------------------------------------------- argv parsing


@pytest.mark.parametrize(
    "argv",
    [
        [*BASE, "-H", "10.1.2.3", "-p", "623", "-U", "admin", "-P", "pw", "chassis", "power", "on"],
        [*BASE, "-P", "pw", "-U", "admin", "-p", "623", "-H", "10.1.2.3", "chassis", "power", "on"],
        ["-v", "-U", "admin", "-H10.1.2.3", "-I", "lan", "-p623", "-R", "3", "-Ppw", "power", "up"],
        ["-vvv", "-I", "lanplus", "-R", "1", "-p", "623", "-H", "10.1.2.3", "-U", "admin",
         "-P", "pw", "chassis", "power", "on"],
    ],
)  # fmt: skip
def test_options_in_any_order_and_form(argv):
    call = ipmitool.parse_invocation(argv, {})
    assert call is not None
    assert (call.address, call.port, call.username, call.password, call.action) == (
        "10.1.2.3",
        623,
        "admin",
        "pw",
        "on",
    )


def test_missing_port_user_and_password_are_left_out_of_the_payload():
    call = ipmitool.parse_invocation([*BASE, "-H", "bmc-7", "chassis", "power", "status"], {})
    assert call is not None and call.action == "status"
    assert call.payload(55) == {"address": "bmc-7", "driver": "ipmitool", "timeout": 55}


def test_password_from_environment_and_file(tmp_path):
    call = ipmitool.parse_invocation(
        ["-H", "h", "-E", "chassis", "power", "status"], {"IPMI_PASSWORD": "env-pw"}
    )
    assert call is not None and call.password == "env-pw"
    secret = tmp_path / "pw"
    secret.write_text("file-pw\n")
    call = ipmitool.parse_invocation(["-H", "h", "-f", str(secret), "power", "status"], {})
    assert call is not None and call.password == "file-pw"


def test_version_wins_wherever_it_is():
    assert ipmitool.parse_invocation(["-V"], {}) is None
    assert ipmitool.parse_invocation(["-I", "lanplus", "-V", "chassis", "power", "on"], {}) is None


@pytest.mark.parametrize(
    ("words", "action"),
    [
        (["chassis", "power", "off"], "off"),
        (["chassis", "power", "cycle"], "cycle"),
        (["chassis", "power", "reset"], "reset"),
        (["chassis", "power", "soft"], "soft"),
        (["user", "list"], "user-list"),
        (["user", "list", "1"], "user-list"),
    ],
)
def test_commands_map_to_hook_actions(words, action):
    call = ipmitool.parse_invocation([*BASE, "-H", "h", *words], {})
    assert call is not None and call.action == action


def test_user_set_password_carries_id_and_new_password():
    argv = [*BASE, "-H", "h", "-U", "admin", "-P", "old", "user", "set", "password", "3", "-n3w"]
    call = ipmitool.parse_invocation(argv, {})
    assert call is not None and call.action == "user-set-password"
    assert call.payload(10)["user_id"] == "3" and call.payload(10)["new_password"] == "-n3w"
    assert set(call.secrets()) == {"old", "-n3w"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-Q", "-H", "h", "chassis", "power", "on"], "invalid option -- 'Q'"),
        (["-H"], "option requires an argument -- 'H'"),
        (["-H", "h"], "No command provided!"),
        (["-H", "h", "sdr", "list"], "Invalid command: sdr"),
        (["-H", "h", "chassis", "power", "bogus"], "Invalid chassis power command: bogus"),
        (["-H", "h", "chassis", "power"], "chassis power Commands"),
        (["-H", "h", "user", "set", "password", "2"], "cannot prompt"),
        (["-H", "h", "user", "delete", "2"], "Invalid user command"),
        (["-a", "-H", "h", "chassis", "power", "on"], "cannot prompt (-a)"),
        (["chassis", "power", "status"], "-H <address>"),
        (["-H", "h", "-p", "x", "chassis", "power", "status"], "Invalid port"),
    ],
)
def test_bad_argv_is_a_usage_error(argv, message):
    with pytest.raises(ipmitool.UsageError, match=re.escape(message)):
        ipmitool.parse_invocation(argv, {})


# ---------------------------------------------------------------------------- config


def test_routes_by_address_glob_then_default(tmp_path):
    config = tmp_path / "csext.yaml"
    config.write_text(
        "amqp_url: amqp://guest:guest@127.0.0.1:5672/\n"
        "ipmitool_extension: redfish-power\n"
        'ipmitool_route_2: "10.1.* pdu-power"\n'
        "ipmitool_route_10: '10.* catch-all'\n"
        "ipmitool_timeout: 40  # below outofbandmanagement.action.timeout\n"
        "nested:\n  ipmitool_extension: ignored\n"
    )
    loaded = ipmitool.load_config(str(config))
    assert loaded.timeout == 40
    pick = lambda address: ipmitool.choose_extension(loaded, address, str(config))  # noqa: E731
    assert pick("10.1.7.9") == "pdu-power"
    assert pick("10.2.0.1") == "catch-all"
    assert pick("192.168.0.4") == "redfish-power"
    # the worker's own settings loader accepts the file (unknown keys are ignored)
    assert yaml.safe_load(config.read_text())["ipmitool_route_2"] == "10.1.* pdu-power"


def test_bad_config_is_named(tmp_path):
    config = tmp_path / "csext.yaml"
    config.write_text("ipmitool_route_1: just-one-word\n")
    with pytest.raises(ipmitool.BridgeError, match="ipmitool_route_<n>"):
        ipmitool.load_config(str(config))
    config.write_text("ipmitool_timeout: soon\n")
    with pytest.raises(ipmitool.BridgeError, match="ipmitool_timeout"):
        ipmitool.load_config(str(config))
    config.write_text("amqp_url: amqp://x/\n")
    with pytest.raises(ipmitool.BridgeError, match="ipmitool_extension"):
        ipmitool.choose_extension(ipmitool.load_config(str(config)), "h", str(config))


# ---------------------------------------------------------------------------- rendering


def rendered(action, result, error=None, **fields):
    call = ipmitool.Invocation()
    call.action = action
    call.password = "hunter22"
    for key, value in fields.items():
        setattr(call, key, value)
    return ipmitool.render({"result": result, "error": error}, call, "ext")


@pytest.mark.parametrize(("state", "text"), [("On", "on"), ("Off", "off")])
def test_status_prints_exactly_what_cloudstack_compares(state, text):
    out = rendered("status", {"success": True, "power_state": state})
    assert out.code == 0 and out.stdout == f"Chassis Power is {text}\n" and out.stderr == ""
    assert parse_power_state(out.stdout) == state


@pytest.mark.parametrize("state", ["Unknown", "Disabled"])
def test_unknown_status_is_an_error(state):
    out = rendered("status", {"success": True, "power_state": state})
    assert out.code != 0 and out.stdout == "" and "Unable to get Chassis Power Status" in out.stderr


@pytest.mark.parametrize(
    ("action", "line"),
    [
        ("on", "Chassis Power Control: Up/On"),
        ("off", "Chassis Power Control: Down/Off"),
        ("cycle", "Chassis Power Control: Cycle"),
        ("reset", "Chassis Power Control: Reset"),
        ("soft", "Chassis Power Control: Soft"),
    ],
)
def test_power_controls_print_ipmitools_lines(action, line):
    out = rendered(action, {"success": True, "power_state": "On"})
    assert out.code == 0 and out.stdout == line + "\n"


def test_failures_are_non_zero_with_the_reason_and_no_password():
    error = {"kind": "failed", "message": "exit code 1: BMC said hunter22 is busy"}
    result = {"success": False, "power_state": "Unknown", "fallback": "failed"}
    out = rendered("on", result, error)
    assert out.code != 0 and out.stdout == ""
    assert out.stderr.startswith("Set Chassis Power Control to Up/On failed: ")
    assert "busy" in out.stderr and "hunter22" not in out.stderr
    assert "RAKP" not in out.stderr


def test_auth_failure_prints_the_rakp_text():
    result = {"success": False, "auth_failure": True, "error": "HTTP 401 for hunter22"}
    out = rendered("status", result)
    assert out.code != 0 and "RAKP 2 HMAC is invalid" in out.stderr
    assert "hunter22" not in out.stderr


def test_user_table_is_ipmitools_layout_and_cloudstack_finds_the_id():
    users = [
        {"id": "2", "name": "admin", "privilege": "ADMINISTRATOR", "enabled": True},
        {"id": "3", "name": "cloudstack", "privilege": "OPERATOR", "enabled": False},
    ]
    out = rendered("user-list", {"success": True, "users": users})
    lines = out.stdout.splitlines()
    assert lines[0] == "ID  Name\t     Callin  Link Auth\tIPMI Msg   Channel Priv Limit"
    assert lines[1] == "2   admin            true    true       true       ADMINISTRATOR"
    assert find_ipmi_user(out.stdout, "cloudstack") == "3"
    assert find_ipmi_user(out.stdout, "admin") == "2"
    out = rendered("user-set-password", {"success": True}, user_id="3")
    assert out.stdout == "Set User Password command successful (user 3)\n"


@pytest.mark.parametrize("length", [15, 16, 17, 40])
def test_user_names_never_merge_with_the_next_column(length: int):
    # CloudStack splits rows on runs of spaces (IpmitoolWrapper.findIpmiUser @1502b60);
    # ipmitool's names are at most 16 characters, so a longer one is cut, and said so.
    name = "n" * length
    users = [
        {"id": "2", "name": name, "privilege": "ADMINISTRATOR"},
        {"id": "63", "name": "cloudstack", "enabled": False},
    ]
    out = rendered("user-list", {"success": True, "users": users})
    row = out.stdout.splitlines()[1]
    assert re.split(" +", row)[:3] == ["2", name[:16], "true"]
    assert find_ipmi_user(out.stdout, name[:16]) == "2"
    assert find_ipmi_user(out.stdout, "cloudstack") == "63"
    if length > 16:
        assert f"name {name!r} cut to 16 characters" in out.stderr
    else:
        assert out.stderr == ""


# ---------------------------------------------------------------------------- processes


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CSEXT_", "IPMI_"))}
    env["CSEXT_CONFIG"] = str(config)
    return env


def run_ipmitool(argv: list[str], env: dict[str, str], exe: list[str] | None = None):
    # A bound against hangs (not a timing assertion): the process must end by itself.
    return subprocess.run(
        [*(exe or [*CSEXT, "ipmitool"]), *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version_check_as_cloudstack_runs_it(tmp_path):
    done = run_ipmitool(["-V"], clean_env(tmp_path / "absent.yaml"))
    assert done.returncode == 0 and done.stdout.startswith("ipmitool version")


def test_shim_writes_an_executable_that_answers_the_version_check(tmp_path):
    config = tmp_path / "csext.yaml"
    config.write_text("amqp_url: amqp://guest:guest@127.0.0.1:5672/\nipmitool_extension: x\n")
    target = tmp_path / "bin" / "ipmitool"
    csext = str(Path(sys.executable).parent / "csext")
    result = CliRunner().invoke(
        app, ["shim", "--ipmitool", str(target), "--config", str(config), "--csext", csext]
    )
    assert result.exit_code == 0, result.output
    text = target.read_text()
    assert f"CSEXT_CONFIG={config}" in text and 'ipmitool "$@"' in text
    assert os.access(target, os.X_OK)
    done = run_ipmitool(["-V"], clean_env(tmp_path / "other.yaml"), exe=[str(target)])
    assert done.returncode == 0 and done.stdout.startswith("ipmitool version")
    # regenerating is allowed, replacing a file csext did not write is not
    assert CliRunner().invoke(app, ["shim", "--ipmitool", str(target)]).exit_code == 0
    foreign = tmp_path / "real-ipmitool"
    foreign.write_text("#!/bin/sh\n")
    assert CliRunner().invoke(app, ["shim", "--ipmitool", str(foreign)]).exit_code != 0


@pytest.mark.parametrize("broker", ["refused", "silent"])
def test_broker_down_is_a_non_zero_exit_with_stderr_within_the_timeout(tmp_path, broker):
    with socket.socket() as silent:  # accepts TCP, never speaks AMQP
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = closed_port() if broker == "refused" else silent.getsockname()[1]
        config = tmp_path / "csext.yaml"
        config.write_text(
            f"amqp_url: amqp://guest:s3cret@127.0.0.1:{port}/\n"
            "ipmitool_extension: redfish-power\nipmitool_timeout: 3\n"
        )
        argv = cloudstack_argv([("address", "10.0.0.1"), ("password", "bmc-pw")], "chassis")
        done = run_ipmitool([*argv, "power", "status"], clean_env(config))
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.startswith("Error: csext ipmitool: ")
    expected = "cannot reach the broker" if broker == "refused" else "no reply"
    assert expected in done.stderr
    assert "s3cret" not in done.stderr and "bmc-pw" not in done.stderr


def test_fast_path_imports_nothing_heavy():
    probe = (
        "import sys; sys.argv=['csext','ipmitool','-V']\n"
        "from csext.cli import __main__ as m\n"
        "try:\n    m.main()\nexcept SystemExit:\n    pass\n"
        "heavy=[n for n in ('aio_pika','typer','pydantic','yaml','pamqp','aiormq') "
        "if n in sys.modules]\n"
        "sys.stderr.write(repr(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stderr == "[]" and done.stdout.startswith("ipmitool version")


# ---------------------------------------------------------------------------- end to end


def install_redfish(registry: Path, name: str) -> None:
    folder = registry / name
    shutil.copytree(REDFISH, folder)
    manifest = yaml.safe_load((folder / "extension.yaml").read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["env"]["REDFISH_SCHEME"] = "http"  # the simulator speaks plain HTTP
    manifest["spec"]["timeout"] = 20
    (folder / "extension.yaml").write_text(yaml.safe_dump(manifest))


@pytest.fixture
def e2e(tmp_path, amqp_url, unique):
    registry = tmp_path / "registry"
    name = f"redfish-{unique}"
    install_redfish(registry, name)
    config = tmp_path / "csext.yaml"
    config.write_text(
        f"amqp_url: {amqp_url}\n"
        f"ipmitool_extension: nothing-{unique}\n"  # the route below must be what picks it
        f'ipmitool_route_1: "127.0.0.* {name}"\n'
        "ipmitool_timeout: 30\n"
    )
    settings = settings_for(amqp_url, registry, f"ex-{unique}", tmp_path)
    return settings, clean_env(config)


async def ipmi(env, options, *command):
    argv = cloudstack_argv(options, *command)
    return await asyncio.to_thread(run_ipmitool, argv, env)


async def test_power_actions_end_to_end(e2e):
    settings, env = e2e
    with RedfishSimulator(users={"admin": "calvin-pw"}, power_state="Off") as bmc:
        options = [
            ("port", str(bmc.port)),
            ("username", "admin"),
            ("address", "127.0.0.1"),
            ("password", "calvin-pw"),
        ]
        async with running_worker(settings):
            done = await ipmi(env, options, "chassis", "power", "status")
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == "Chassis Power is off"
            for op, line, state in [
                ("on", "Up/On", "On"),
                ("cycle", "Cycle", "On"),
                ("reset", "Reset", "On"),
                ("soft", "Soft", "Off"),
                ("off", "Down/Off", "Off"),
            ]:
                done = await ipmi(env, options, "chassis", "power", op)
                assert done.returncode == 0, done.stderr
                assert done.stdout == f"Chassis Power Control: {line}\n"
                assert bmc.power_state == state
            bmc.power_state = "On"
            done = await ipmi(env, options, "chassis", "power", "status")
            assert parse_power_state(done.stdout) == "On"

            wrong = [*options[:3], ("password", "wrong-pw")]
            done = await ipmi(env, wrong, "chassis", "power", "on")
            assert done.returncode != 0 and "RAKP 2 HMAC is invalid" in done.stderr
            assert "wrong-pw" not in done.stderr + done.stdout


async def test_change_password_flow_end_to_end(e2e):
    settings, env = e2e
    users = {"admin": "calvin-pw", "cloudstack": "old-oob-pw"}
    with RedfishSimulator(users=users) as bmc:
        options = [
            ("address", "127.0.0.1"),
            ("port", str(bmc.port)),
            ("username", "cloudstack"),
            ("password", "old-oob-pw"),
        ]
        async with running_worker(settings):
            # what IpmitoolOutOfBandManagementDriver.getIpmiUserId does
            listing = await ipmi(env, options, "user", "list")
            assert listing.returncode == 0, listing.stderr
            user_id = find_ipmi_user(listing.stdout, "cloudstack")
            assert user_id == "3"
            done = await ipmi(env, options, "user", "set", "password", user_id, "new-oob-pw")
            assert done.returncode == 0, done.stderr
            assert bmc.password_of("cloudstack") == "new-oob-pw"
            # the next power action uses the new password, the old one is refused
            new = [*options[:3], ("password", "new-oob-pw")]
            done = await ipmi(env, new, "chassis", "power", "status")
            assert done.returncode == 0 and done.stdout.strip() == "Chassis Power is off"
            done = await ipmi(env, options, "chassis", "power", "status")
            assert "RAKP 2 HMAC is invalid" in done.stderr
    for record in Path(settings.run_dir).rglob("*"):
        if record.is_file():  # run directories (payload files) are removed after each run
            assert b"new-oob-pw" not in record.read_bytes()
