"""`csext forward`: the stdlib AMQP codec (cross-checked against pamqp), its config parsing,
and real calls through a real worker on a real RabbitMQ, run as CloudStack runs them."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import body as pamqp_body
from pamqp import commands, frame, header
from workerkit import running_worker, settings_for, write_extension

from csext.bridges import fastamqp, forward

CSEXT = [sys.executable, "-m", "csext.cli"]

# CloudStack's own Orchestrator contract, as its in-tree scripts implement it: argv 1-3, the
# payload file read as JSON, one JSON line out, exit code 0 only on success.
ORCHESTRATOR_SCRIPT = """#!/usr/bin/env python3
import json, sys
action = sys.argv[1].lower()
payload_file = sys.argv[2]
timeout = int(sys.argv[3]) if len(sys.argv) > 3 else 60
with open(payload_file) as handle:
    data = json.load(handle)
vm = data["cloudstack.vm.details"]["name"]
host = data["externaldetails"]["host"]["node"]
if action == "status":
    print("PowerOn")
elif action in ("create", "deploy", "start", "stop"):
    print(json.dumps({"status": "success", "message": f"{action} {vm} on {host}",
                      "timeout_ok": 0 < timeout <= 60}))
elif action == "fail":
    sys.stderr.write("diagnostics for the operator\\n")
    print(json.dumps({"status": "error", "error": f"cannot reach {host}"}))
    sys.exit(3)
elif action == "sleep":
    import time
    time.sleep(30)
else:
    print(json.dumps({"status": "error", "error": f"unknown action {action}"}))
    sys.exit(1)
"""

PAYLOAD = {
    "externaldetails": {
        "extension": {"url": "https://pve:8006", "user": "root@pam", "secret": "s"},
        "resourcemap": {},
        "host": {"node": "pve1", "network_bridge": "vmbr0"},
        "virtualmachine": {"template_type": "template", "template_id": "9000"},
    },
    "virtualmachineid": "2b7a768a-3bc2-4c3c-ae05-2b3480b53478",
    "virtualmachinename": "i-2-4-VM",
    "cloudstack.vm.details": {"id": 4, "name": "i-2-4-VM", "cpus": 1, "details": {}},
    "caller": {"name": "admin", "type": "ADMIN", "roletype": "Admin"},
}


# ---------------------------------------------------------------------------- codec vs pamqp


def unmarshal_all(data: bytes) -> list[object]:
    frames = []
    while data:
        consumed, _channel, value = frame.unmarshal(data)
        frames.append(value)
        data = data[consumed:]
    return frames


def test_publish_frames_decode_with_pamqp() -> None:
    body = b"x" * 10_000
    props = {
        "content_type": "application/json",
        "headers": {"x-csext-deadline": 1_700_000_000_123},
        "delivery_mode": 1,
        "correlation_id": "abc",
        "reply_to": "amq.rabbitmq.reply-to",
        "expiration": "5000",
    }
    data = fastamqp.publish(1, "csext.rpc", "my-ext", body, props, frame_max=4096)
    method, head, *bodies = unmarshal_all(data)
    assert isinstance(method, commands.Basic.Publish)
    assert (method.exchange, method.routing_key, method.mandatory) == ("csext.rpc", "my-ext", True)
    assert isinstance(head, header.ContentHeader)
    assert head.body_size == len(body)
    p = head.properties
    assert (p.content_type, p.correlation_id, p.reply_to, p.expiration, p.delivery_mode) == (
        "application/json",
        "abc",
        "amq.rabbitmq.reply-to",
        "5000",
        1,
    )
    assert p.headers == {"x-csext-deadline": 1_700_000_000_123}
    assert all(isinstance(b, pamqp_body.ContentBody) for b in bodies)
    assert all(len(b.value) <= 4096 - 8 for b in bodies)
    assert b"".join(b.value for b in bodies) == body


def test_start_ok_decodes_with_pamqp() -> None:
    [start_ok] = unmarshal_all(fastamqp.start_ok("user", "p@ss", "csext forward x"))
    assert isinstance(start_ok, commands.Connection.StartOk)
    assert start_ok.mechanism == "PLAIN"
    assert start_ok.response == "\0user\0p@ss"
    assert start_ok.client_properties["connection_name"] == "csext forward x"


shortstrs = st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode()) <= 255)
"""pamqp leaves empty strings out of a content header, so the strings here are non-empty."""
header_values = st.one_of(st.integers(-(2**31), 2**31 - 1), shortstrs, st.booleans())


@given(
    correlation_id=shortstrs,
    content_type=st.none() | shortstrs,
    headers=st.none() | st.dictionaries(st.text(min_size=1, max_size=10), header_values),
    size=st.integers(0, 2**40),
)
def test_reply_header_from_pamqp_is_parsed(correlation_id, content_type, headers, size) -> None:
    props = commands.Basic.Properties(
        content_type=content_type,
        headers=headers,
        correlation_id=correlation_id,
        delivery_mode=2,
        message_id="m",
        timestamp=None,
        app_id="csext",
    )
    data = frame.marshal(header.ContentHeader(0, size, props), 1)
    body_size, parsed = fastamqp.parse_header_properties(data[7:-1])
    assert body_size == size
    assert parsed["correlation_id"] == correlation_id
    assert parsed.get("content_type") == content_type
    assert parsed["app_id"] == "csext"


def test_close_and_tune_from_pamqp_are_parsed() -> None:
    close = frame.marshal(commands.Connection.Close(403, "ACCESS_REFUSED - bad login", 0, 0), 0)
    assert fastamqp.parse_close(close[7:-1]) == (403, "ACCESS_REFUSED - bad login")
    tune = frame.marshal(commands.Connection.Tune(2047, 131072, 60), 0)
    assert fastamqp.parse_tune(tune[7:-1]) == (2047, 131072, 60)
    start = frame.marshal(commands.Connection.Start(mechanisms="AMQPLAIN PLAIN"), 0)
    assert fastamqp.parse_start_mechanisms(start[7:-1]) == ["AMQPLAIN", "PLAIN"]


# ---------------------------------------------------------------------------- config and args


def test_url_parsing_and_redaction() -> None:
    url = fastamqp.parse_url("amqps://u%40x:s%3Dcret@mq.example:5700/prod%2Fa?cafile=/ca.pem")
    assert (url.host, url.port, url.username, url.password) == ("mq.example", 5700, "u@x", "s=cret")
    assert (url.vhost, url.tls, url.query) == ("prod/a", True, {"cafile": "/ca.pem"})
    assert "cret" not in url.safe and "cret" not in repr(url)
    assert fastamqp.parse_url("amqp://h/").vhost == "/"
    assert fastamqp.parse_url("amqp://h").port == 5672
    with pytest.raises(fastamqp.AmqpError, match="amqp://"):
        fastamqp.parse_url("http://h/")


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("amqp_url: amqp://a:b@h:5672/", "amqp://a:b@h:5672/"),
        ("amqp_url: 'amqp://a:b@h/'  # broker", "amqp://a:b@h/"),
        ('amqp_url: "amqp://a:b@h/"', "amqp://a:b@h/"),
        ("amqp_url: amqp://a:b#c@h/ # comment", "amqp://a:b#c@h/"),
    ],
)
def test_config_line_parser(tmp_path: Path, line: str, value: str) -> None:
    config = tmp_path / "csext.yaml"
    config.write_text(
        f"registry: /srv/ext\n  amqp_url: nested-is-ignored\n{line}\nlog_level: INFO\n"
    )
    assert forward.amqp_url({"CSEXT_CONFIG": str(config)}) == value
    assert forward.amqp_url({"CSEXT_CONFIG": str(config), "CSEXT_AMQP_URL": "amqp://e/"}) == (
        "amqp://e/"
    )


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(forward.ForwardError, match="does not exist"):
        forward.amqp_url({"CSEXT_CONFIG": str(tmp_path / "nope.yaml")})


def test_arguments_are_lenient_like_cloudstack_scripts() -> None:
    call = forward.parse_args(["--extension", "x", "start", "/p.json"])
    assert call is not None and call.timeout == forward.DEFAULT_TIMEOUT
    call = forward.parse_args(["start", "/p.json", "1800", "--extension=x"])
    assert call is not None and (call.action, call.timeout) == ("start", 1800.0)
    assert forward.margin_for(1800) == forward.MAX_MARGIN
    assert forward.margin_for(3) == pytest.approx(0.3)
    with pytest.raises(forward.ForwardError, match="--extension"):
        forward.parse_args(["start", "/p.json"])
    with pytest.raises(forward.ForwardError, match="timeout"):
        forward.parse_args(["-e", "x", "start", "/p.json", "soon"])


def test_exit_status_mapping() -> None:
    assert [forward.exit_status(c) for c in (0, 3, 255, -9, 256, None, True)] == [
        0,
        3,
        255,
        137,
        1,
        1,
        1,
    ]


# ---------------------------------------------------------------------------- real calls


async def run_forward(
    args: list[str], env: dict[str, str], bound: float = 60
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CSEXT,
        "forward",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # A bound against hangs (not a timing assertion): forward must end by itself.
    out, err = await asyncio.wait_for(proc.communicate(), bound)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def error_line(stdout: str) -> str:
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    data = json.loads(lines[0])
    assert data["status"] == "error"
    return str(data["error"])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def payload_file(tmp_path: Path) -> Path:
    path = tmp_path / "1700000000000.json"
    path.write_text(json.dumps(PAYLOAD))
    path.chmod(0o600)
    return path


@pytest.fixture
def base_env(amqp_url: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    env["CSEXT_AMQP_URL"] = amqp_url
    return env


@pytest.mark.broker
async def test_orchestrator_contract_runs_unchanged_behind_forward(
    amqp_url: str, unique: str, tmp_path: Path, payload_file: Path, base_env: dict[str, str]
) -> None:
    registry = tmp_path / "registry"
    folder = write_extension(
        registry, unique, ORCHESTRATOR_SCRIPT, hook="orchestrator", entry=f"{unique}.py"
    )
    script = folder / f"{unique}.py"
    settings = settings_for(amqp_url, registry, f"ex-{unique}", tmp_path)
    async with running_worker(settings):
        for action in ("start", "status", "fail", "create"):
            direct = await asyncio.create_subprocess_exec(
                str(script),
                action,
                str(payload_file),
                "60",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            d_out, d_err = await direct.communicate()
            code, out, err = await run_forward(
                ["--extension", unique, action, str(payload_file), "60"], base_env
            )
            assert (code, out, err) == (direct.returncode, d_out.decode(), d_err.decode())
        code, out, _ = await run_forward(["-e", unique, "status", str(payload_file)], base_env)
        assert (code, out) == (0, "PowerOn\n")
        code, out, err = await run_forward(
            ["-e", unique, "--no-stderr", "fail", str(payload_file), "60"], base_env
        )
        assert code == 3 and "cannot reach pve1" in out and err == ""


@pytest.mark.broker
async def test_unknown_extension_fails_at_once(
    amqp_url: str, unique: str, tmp_path: Path, payload_file: Path, base_env: dict[str, str]
) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    async with running_worker(settings_for(amqp_url, registry, f"ex-{unique}", tmp_path)):
        code, out, _ = await run_forward(
            ["--extension", f"{unique}-nope", "start", str(payload_file), "600"], base_env, bound=60
        )
    assert code != 0
    assert "unknown-extension" in error_line(out)


@pytest.mark.broker
async def test_deadline_passed_is_an_error_not_a_hang(
    amqp_url: str, unique: str, tmp_path: Path, payload_file: Path, base_env: dict[str, str]
) -> None:
    registry = tmp_path / "registry"
    write_extension(registry, unique, ORCHESTRATOR_SCRIPT, hook="orchestrator")
    async with running_worker(settings_for(amqp_url, registry, f"ex-{unique}", tmp_path)):
        code, out, _ = await run_forward(
            ["--extension", unique, "sleep", str(payload_file), "3"], base_env, bound=30
        )
    assert code != 0
    assert error_line(out)


@pytest.mark.broker
async def test_no_worker_for_the_extension_is_an_error(
    unique: str, payload_file: Path, base_env: dict[str, str]
) -> None:
    code, out, _ = await run_forward(
        ["--extension", unique, "start", str(payload_file), "2"], base_env, bound=30
    )
    assert code != 0
    message = error_line(out)
    # No worker at all: no reply by the deadline (or no route, or no csext.rpc exchange yet).
    # Another test's worker may be running on the shared broker: then it answers at once.
    expected = ("no reply", "route", "no exchange", "unknown-extension")
    assert any(text in message for text in expected), message


async def test_broker_unreachable_is_a_json_error(
    payload_file: Path, base_env: dict[str, str]
) -> None:
    env = {**base_env, "CSEXT_AMQP_URL": f"amqp://guest:s3cret@127.0.0.1:{closed_port()}/"}
    code, out, _ = await run_forward(["-e", "x", "start", str(payload_file), "5"], env, bound=30)
    assert code != 0
    message = error_line(out)
    assert "cannot reach the broker" in message and "s3cret" not in message


async def test_bad_payload_file_is_a_json_error(tmp_path: Path, base_env: dict[str, str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, out, _ = await run_forward(["-e", "x", "start", str(bad), "5"], base_env)
    assert code != 0 and "not valid JSON" in error_line(out)
    code, out, _ = await run_forward(["-e", "x", "start", str(tmp_path / "none.json")], base_env)
    assert code != 0 and "cannot read payload file" in error_line(out)


async def test_usage_errors_are_json_errors(base_env: dict[str, str]) -> None:
    code, out, _ = await run_forward(["start"], base_env)
    assert code != 0 and "--extension" in error_line(out)
    code, out, _ = await run_forward(["--help"], base_env)
    assert code == 0 and "usage: csext forward" in out


def test_fast_path_imports_nothing_heavy() -> None:
    import subprocess

    probe = (
        "import sys; sys.argv=['csext','forward','--help']\n"
        "from csext.cli import __main__ as m\n"
        "try:\n    m.main()\nexcept SystemExit:\n    pass\n"
        "heavy=[n for n in ('aio_pika','typer','pydantic','yaml','pamqp','aiormq') "
        "if n in sys.modules]\n"
        "sys.stderr.write(repr(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stderr == "[]"


def test_reply_frames_round_trip_through_reader() -> None:
    deliver = frame.marshal(commands.Basic.Deliver("ctag", 1, False, "", "amq.gen-x"), 1)
    head = frame.marshal(
        header.ContentHeader(0, 5, commands.Basic.Properties(correlation_id="c1")), 1
    )
    body = frame.marshal(pamqp_body.ContentBody(b"hello"), 1)
    conn = fastamqp.Connection(fastamqp.parse_url("amqp://h/"), deadline=float("inf"))
    conn._buffer = bytearray(deliver + head + body)
    kind, _, payload = conn.read_frame("test")
    assert kind == fastamqp.FRAME_METHOD
    assert struct.unpack(">HH", payload[:4]) == fastamqp.BASIC_DELIVER
    message = conn._read_content()  # no socket: everything is already buffered
    assert (message.properties["correlation_id"], message.body) == ("c1", b"hello")


def test_kvm_hook_helpers() -> None:
    original = '<domain><name>i-1</name><uuid>u1</uuid><a x="$y"/></domain>'
    escaped = "".join("\\" + ch if ch in "\\\"'`$|&;()<>*?![]{}~" else ch for ch in original)
    assert forward.unescape_agent_value(escaped) == original
    assert forward.same_domain(original, original.replace("$y", "z"))
    assert not forward.same_domain(original, original.replace("i-1", "i-2"))
    assert not forward.same_domain(original, original.replace("u1", "u2"))
    assert not forward.same_domain(original, '{"status":"error"}')


@pytest.mark.parametrize(
    ("reply", "stdout", "status"),
    [
        # The extension ran: its stdout and exit code go to CloudStack unchanged, whatever
        # csext's own reading was (ExternalPathPayloadProvisioner parses the output itself).
        (
            {
                "exit_code": 0,
                "stdout": '{"status": "error", "message": "Not supported"}\n',
                "error": None,
            },
            b'{"status": "error", "message": "Not supported"}\n',
            0,
        ),
        (
            {
                "exit_code": 0,
                "stdout": '{"console": {}}',
                "error": {"kind": "invalid-output", "message": "Missing required fields"},
            },
            b'{"console": {}}',
            0,
        ),
        ({"exit_code": 3, "stdout": "", "error": {"kind": "failed", "message": "x"}}, b"", 3),
        ({"exit_code": -9, "stdout": "partial", "error": {"kind": "crashed"}}, b"partial", 137),
    ],
)
def test_an_extension_that_ran_is_passed_on_byte_for_byte(reply, stdout, status) -> None:
    import io

    out, err = io.BytesIO(), io.BytesIO()
    call = forward.Call(extension="x", action="statuses", payload_file="", timeout=60)
    assert forward.emit({**reply, "stderr": "diag\n"}, call, out, err) == status
    assert out.getvalue() == stdout and err.getvalue() == b"diag\n"


@pytest.mark.parametrize(
    "error",
    [
        {"kind": "timeout", "message": "extension timed out after 58000 ms"},
        {"kind": "unknown-extension", "message": "no extension 'x'"},
        {"kind": "spawn-failed", "message": "not executable"},
    ],
)
def test_failures_of_csext_itself_print_the_error_line(error) -> None:
    import io

    out, err = io.BytesIO(), io.BytesIO()
    call = forward.Call(extension="x", action="start", payload_file="", timeout=60)
    reply = {"exit_code": None, "stdout": "", "stderr": "", "error": error}
    assert forward.emit(reply, call, out, err) == forward.ERROR_EXIT
    assert error["kind"] in error_line(out.getvalue().decode())
