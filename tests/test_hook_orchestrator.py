"""The orchestrator hook: CloudStack's Orchestrator payload and output parsing."""

from __future__ import annotations

import copy

import orjson
import pytest

from csext.handlers import get_handler
from csext.handlers.orchestrator import merge_patch, power_state_of
from csext.schemas.manifest import HookType, Spec
from csext.schemas.run import Outcome, RunResult

HANDLER = get_handler(HookType.ORCHESTRATOR)
SPEC = Spec.model_validate({"hook": "orchestrator", "entrypoint": "x"})

# The reference's example payload for `start` (reference/cloudstack.md §1.4).
PAYLOAD = {
    "externaldetails": {
        "extension": {"url": "https://pve:8006", "user": "root@pam", "token": "tok-123", "secret": "sec-456"},  # noqa: E501
        "resourcemap": {},
        "host": {"node": "pve1", "network_bridge": "vmbr0"},
        "virtualmachine": {"template_type": "template", "template_id": "9000"},
    },
    "virtualmachineid": "2b7a768a-3bc2-4c3c-ae05-2b3480b53478",
    "virtualmachinename": "i-2-4-VM",
    "cloudstack.vm.details": {
        "id": 4, "name": "i-2-4-VM", "uuid": "2b7a768a-3bc2-4c3c-ae05-2b3480b53478", "cpus": 1,
        "minRam": 536870912, "maxRam": 536870912, "vncPassword": "vnc-pass-1",
        "details": {"deployvm": "true", "proxmox_vmid": "105"},
        "nics": [{"uuid": "3cd4", "mac": "02:01:00:cc:00:01", "ip": "10.1.1.245",
                  "broadcastUri": "vlan://1577", "deviceId": 0, "defaultNic": True}],
    },
    "caller": {"id": "93567ed9", "name": "admin", "type": "ADMIN", "roleid": "6b86674b",
               "rolename": "Root Admin", "roletype": "Admin"},
    "futureKey": {"kept": True},
}  # fmt: skip


def run(stdout: bytes | str = b"", code: int = 0) -> RunResult:
    data = stdout.encode() if isinstance(stdout, str) else stdout
    return RunResult(exit_code=code, stdout=data)


def interpret(action, stdout=b"", code=0, payload=None):
    return HANDLER.interpret(action, run(stdout, code), SPEC, payload=payload)


def test_payload_file_is_cloudstacks_payload_unchanged():
    assert orjson.loads(HANDLER.payload_bytes("start", PAYLOAD, SPEC)) == PAYLOAD


def test_payload_must_be_an_object_and_fit():
    with pytest.raises(ValueError, match="JSON object"):
        HANDLER.payload_bytes("start", [1, 2], SPEC)
    with pytest.raises(ValueError, match=r"cloudstack\.vm\.details"):
        HANDLER.payload_bytes("start", {"cloudstack.vm.details": {"cpus": "many"}}, SPEC)


def test_payload_credentials_are_reported_as_secrets():
    secrets = HANDLER.secret_values("start", PAYLOAD)
    assert {"tok-123", "sec-456", "vnc-pass-1"} <= set(secrets)
    assert "root@pam" not in secrets


@pytest.mark.parametrize(
    ("stdout", "state"),
    [
        ("PowerOn", "PowerOn"),
        ("poweroff\n", "PowerOff"),
        ("  POWERON  ", "PowerOn"),
        ('{"status":"success","power_state":"poweron"}', "PowerOn"),
        ('{"power_state":"PowerOff"}', "PowerOff"),
        ('{"power_state":"running"}', "PowerUnknown"),
        ("running", "PowerUnknown"),
        ("", "PowerUnknown"),
        ("{not json", "PowerUnknown"),
    ],
)
def test_status_is_parsed_as_cloudstack_does(stdout, state):
    assert power_state_of(stdout.strip()) == state
    assert interpret("status", stdout).result["power_state"] == state


def test_statuses_map():
    out = interpret(
        "statuses",
        '{"status":"success","power_state":{"i-3-23-VM":"poweroff","i-2-25-VM":"PowerOn","x":"?"}}',
    )
    assert out.result["power_states"] == {
        "i-3-23-VM": "PowerOff",
        "i-2-25-VM": "PowerOn",
        "x": "PowerUnknown",
    }
    # No map: not a failure. CloudStack then asks `status` per VM; the in-tree provisioner.sh
    # (@3e744c3) answers exactly this, exit 0, when it cannot list its VMs.
    unsupported = interpret("statuses", '{"status": "error", "message": "Not supported"}')
    assert unsupported.outcome == Outcome.SUCCESS and unsupported.error is None
    assert unsupported.result["power_states"] is None and unsupported.result["warnings"] == []
    odd = interpret("statuses", '{"status":"success","power_state":"poweron"}')
    assert odd.outcome == Outcome.SUCCESS and odd.result["power_states"] is None
    assert any("falls back to `status` per VM" in w for w in odd.result["warnings"])


@pytest.mark.parametrize(
    ("console", "ok"),
    [
        ({"url": "https://c/x", "protocol": "direct"}, True),
        ({"host": "10.0.0.5", "port": 5900, "password": "p", "protocol": "vnc"}, True),
        # getInstanceConsole @0337e34 fails only when url AND (host or port) are missing;
        # protocol is optional.
        ({"url": "https://c/x"}, True),
        ({"host": "10.0.0.5", "port": "5900"}, True),
        ({"host": "10.0.0.5"}, False),
        ({"protocol": "vnc", "port": 5900}, False),
        (None, False),
    ],
)
def test_getconsole_requires_cloudstacks_fields(console, ok):
    out = interpret("getconsole", orjson.dumps({"status": "success", "console": console}))
    if ok:
        assert out.outcome == Outcome.SUCCESS and out.result["console"]
    else:
        assert out.result is None and "Missing" in out.error.message


def test_prepare_is_a_merge_patch_on_the_vm_details():
    out = interpret(
        "prepare", '{"details":{"proxmox_vmid":"106","deployvm":null}}', payload=PAYLOAD
    )
    assert out.result["vm_patch"] == {"details": {"proxmox_vmid": "106", "deployvm": None}}
    merged = out.result["vm_details"]
    assert merged["details"] == {"proxmox_vmid": "106"} and merged["cpus"] == 1
    assert interpret("prepare", "").result["vm_patch"] is None
    garbage = interpret("prepare", "not json")
    assert "Failed to parse VM" in garbage.error.message
    odd = interpret("prepare", '{"cpus": 8}')
    assert any("changes ['cpus']" in w for w in odd.result["warnings"])


def test_prepare_is_judged_on_the_whole_stdout():
    # CloudStack merges the WHOLE output as the patch (prepareExternalProvisioning @0337e34):
    # progress text before a JSON last line fails there, so it fails here too.
    chatty = interpret("prepare", 'preparing...\n{"details":{"proxmox_vmid":"106"}}')
    assert chatty.result is None and "Failed to parse VM" in chatty.error.message
    two = interpret("prepare", '{"a":1}\n{"details":{}}')
    assert two.result is None and "Failed to parse VM" in two.error.message
    empty_line = interpret("prepare", "\n")  # provisioner.sh prints "" for a VM without NICs
    assert empty_line.outcome == Outcome.SUCCESS and empty_line.result["vm_patch"] is None
    pretty = interpret("prepare", '{\n  "details": {"proxmox_vmid": "7"}\n}\n')
    assert pretty.result["vm_patch"] == {"details": {"proxmox_vmid": "7"}}


def test_merge_patch_rfc7386():
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    original = copy.deepcopy(target)
    assert merge_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert target == original  # not mutated
    assert merge_patch({"a": [1]}, {"a": [2]}) == {"a": [2]}


def test_status_other_than_success_on_exit_zero_is_reported():
    out = interpret("start", '{"status":"error","error":"half started"}')
    assert out.outcome == Outcome.SUCCESS  # CloudStack only checks the exit code
    assert "status 'error': half started" in out.result["warnings"][0]


def test_failure_is_an_error_with_the_extensions_message():
    out = interpret("stop", '{"status":"error","error":"VM is locked"}', code=1)
    assert out.outcome == Outcome.FAILED and out.result is None
    assert out.error.kind == "failed" and "VM is locked" in out.error.message


def test_custom_action_returns_the_whole_stdout():
    text = '{"status":"success","printmessage":"true","message":[{"snap":"s1"}]}'
    out = interpret("CreateSnapshot", text)
    assert out.result["details"] == text
    assert out.result["print_message"] is True and out.result["message"] == [{"snap": "s1"}]


def test_deploy_alias_and_timeout_policy():
    assert interpret("deploy", "").result["success"] is True
    timeout = HANDLER.interpret("create", RunResult(exit_code=None, timed_out=True), SPEC)
    assert timeout.outcome == Outcome.TIMEOUT and timeout.result is None
    assert timeout.error.kind == "timeout"
    crash = HANDLER.interpret("create", RunResult(exit_code=-11), SPEC)
    assert crash.error.kind == "crashed" and crash.result is None
