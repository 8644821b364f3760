"""The network-orchestrator hook: CloudStack's envelope, encodings, and result rules."""

from __future__ import annotations

import base64

import orjson
import pytest

from csext.handlers import get_handler
from csext.schemas.hooks.network_orchestrator import COMMANDS, NetworkOrchestratorInput
from csext.schemas.manifest import HookType, Spec
from csext.schemas.run import Outcome, RunResult

HANDLER = get_handler(HookType.NETWORK_ORCHESTRATOR)
SPEC = Spec.model_validate({"hook": "network-orchestrator", "entrypoint": "x"})
RULES = [{"id": "1", "protocol": "tcp", "cidr": "10.0.0.0/8"}]


def envelope(**payload):
    return {
        "physical-network-extension-details": {"physicalnetworkname": "pnet1"},
        "network-extension-details": {"device": "r1"},
        "payload": payload,
    }


def validate(command, data):
    return NetworkOrchestratorInput.model_validate(data, context={"action": command})


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "custom-action"])
def test_every_command_accepts_the_envelope(command):
    data = envelope(network_id="204", vlan="1577")
    assert orjson.loads(HANDLER.payload_bytes(command, data, SPEC)) == data


@pytest.mark.parametrize("field", ["fw_rules", "acl_rules", "vm_data", "restore_data"])
def test_encoded_fields_nested_or_base64(field):
    nested = validate("apply-fw-rules", envelope(**{field: RULES}))
    encoded = base64.b64encode(orjson.dumps(RULES)).decode()
    decoded = validate("apply-fw-rules", envelope(**{field: encoded}))
    assert getattr(nested.payload, field) == getattr(decoded.payload, field) == RULES
    with pytest.raises(ValueError, match=f"payload.{field}: {field} must be"):
        HANDLER.payload_bytes("apply-fw-rules", envelope(**{field: "not base64 json!"}), SPEC)


def test_numbers_as_strings_or_numbers():
    as_numbers = validate("implement-network", envelope(network_id=204, vlan=1577, zone_id=1))
    as_strings = validate("implement-network", envelope(network_id="204", vlan="1577", zone_id="1"))
    assert as_numbers.payload.network_id == as_strings.payload.network_id == "204"
    assert as_numbers.payload.vlan == "1577"


def test_envelope_shape_is_checked():
    with pytest.raises(ValueError, match="needs `payload`"):
        HANDLER.payload_bytes("implement-network", {"network-extension-details": {}}, SPEC)
    with pytest.raises(ValueError, match="custom-action needs a top-level `action`"):
        HANDLER.payload_bytes("custom-action", {"network_id": "1"}, SPEC)
    flat = {"network_id": "204", "action": "Dump", "action-params": {"a": "1"},
            "physical-network-extension-details": {}, "network-extension-details": "{\"d\":1}"}  # fmt: skip  # noqa: E501
    assert orjson.loads(HANDLER.payload_bytes("custom-action", flat, SPEC)) == flat


def interpret(command, stdout, code=0):
    return HANDLER.interpret(command, RunResult(exit_code=code, stdout=stdout.encode()), SPEC)


def test_ensure_network_device_must_print_one_json_object():
    ok = interpret("ensure-network-device", '{"device":"r1","ip":"10.0.0.2"}\n')
    assert ok.result["device_details"] == {"device": "r1", "ip": "10.0.0.2"}
    pretty = interpret("ensure-network-device", '{\n "device": "r1"\n}')
    assert pretty.result["warnings"] == ["ensure-network-device should print its JSON on one line"]
    for bad in ("", "ok", '["r1"]', 'log line\n{"device":"r1"}', '{"a":1}{"b":2}'):
        out = interpret("ensure-network-device", bad)
        assert out.result is None and out.error.kind == "invalid-output", bad


def test_status_other_than_success_is_a_failure():
    out = interpret("apply-fw-rules", '{"status":"error","error":"iptables failed"}')
    assert out.outcome == Outcome.FAILED and "iptables failed" in out.error.message
    assert interpret("apply-fw-rules", '{"status":"success"}').outcome == Outcome.SUCCESS
    assert interpret("apply-fw-rules", "").outcome == Outcome.SUCCESS


def test_implement_network_broadcast_uri_flat_or_nested():
    flat = interpret("implement-network", '{"status":"success","network.broadcast_uri":"vlan://7"}')
    nested = interpret(
        "implement-network",
        '{"network":{"broadcast_uri":"vxlan://9","broadcast_domain_type":"Vxlan"}}',
    )
    assert flat.result["broadcast_uri"] == "vlan://7"
    assert nested.result["broadcast_uri"] == "vxlan://9"
    assert nested.result["broadcast_domain_type"] == "Vxlan"


def test_custom_action_output_and_failures():
    assert interpret("custom-action", "done: 3 rules").result["output"] == "done: 3 rules"
    failed = interpret("release-ip", "cannot", code=2)
    assert failed.result is None and failed.error.kind == "failed"
    timeout = HANDLER.interpret("release-ip", RunResult(exit_code=None, timed_out=True), SPEC)
    assert timeout.outcome == Outcome.TIMEOUT and timeout.result is None
