"""deployment-planner and domain-xml: fail-open hooks, typed outputs, safe XML."""

from __future__ import annotations

import orjson
import pytest

from csext.handlers import get_handler
from csext.handlers.domain_xml import UnsafeXml, parse_safely
from csext.schemas.manifest import HookType, Spec
from csext.schemas.run import Outcome, RunResult

PLANNER = get_handler(HookType.DEPLOYMENT_PLANNER)
DOMAIN = get_handler(HookType.DOMAIN_XML)
PLANNER_SPEC = Spec.model_validate({"hook": "deployment-planner", "entrypoint": "x"})
DOMAIN_SPEC = Spec.model_validate({"hook": "domain-xml", "entrypoint": "x"})
PLAN = {"vm": {"type": "User"}, "plan": {"data_center_id": "1"}, "avoid": {"clusters": [4]}}

XML = """<domain type='kvm'>
  <name>i-2-10-VM</name>
  <uuid>9a1c5f1e-3f7b-4f2a-8f5e-0d6c2b1a9e77</uuid>
  <cpu mode='custom'><model>qemu64</model></cpu>
</domain>"""
NEW = XML.replace(
    "<cpu mode='custom'><model>qemu64</model></cpu>", "<cpu mode='host-passthrough'/>"
)


def run(code, stdout=""):
    return RunResult(exit_code=code, stdout=stdout.encode())


# --- deployment planner ----------------------------------------------------------------------


def test_planner_input_tolerates_numbers_as_strings():
    written = orjson.loads(PLANNER.payload_bytes("order-clusters", PLAN, PLANNER_SPEC))
    assert written["plan"]["data_center_id"] == 1
    with pytest.raises(ValueError, match=r"avoid\.clusters"):
        PLANNER.payload_bytes("order-clusters", {"avoid": {"clusters": ["x"]}}, PLANNER_SPEC)


@pytest.mark.parametrize(
    ("stdout", "ids"),
    [
        ("[3, 1, 2]", [3, 1, 2]),
        ('{"clusters": [2, 1]}', [2, 1]),
        ('{"cluster_ids": ["5", 6]}', [5, 6]),
        ("3,1\n2", [3, 1, 2]),
        ("3 1 3 4", [3, 1]),  # duplicates and the avoided cluster 4 dropped
    ],
)
def test_order_clusters_forms(stdout, ids):
    out = PLANNER.interpret("order-clusters", run(0, stdout), PLANNER_SPEC, payload=PLAN)
    assert out.result["cluster_ids"] == ids and out.result["no_preference"] is False


@pytest.mark.parametrize("stdout", ["", "[]", "null", '{"clusters": null}', '{"clusters": []}'])
def test_no_preference(stdout):
    out = PLANNER.interpret("order-clusters", run(0, stdout), PLANNER_SPEC, payload=PLAN)
    assert out.result["no_preference"] is True and out.outcome == Outcome.SUCCESS


def test_avoided_clusters_are_warned_about():
    out = PLANNER.interpret("order-clusters", run(0, "[4]"), PLANNER_SPEC, payload=PLAN)
    assert out.result["no_preference"] is True
    assert out.result["warnings"] == ["dropped clusters in the avoid list: [4]"]


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (RunResult(exit_code=None, timed_out=True), "timeout"),
        (RunResult(exit_code=-9), "crashed"),
        (run(1, "db down"), "failed"),
        (run(0, "first, second"), "invalid-output"),
        (run(0, '{"clusters": "3"}'), "invalid-output"),
        (run(0, '["a"]'), "invalid-output"),
    ],
)
def test_planner_fails_open(raw, kind):
    out = PLANNER.interpret("order-clusters", raw, PLANNER_SPEC, payload=PLAN)
    assert out.result["no_preference"] is True and out.result["fallback"] == kind
    assert out.error.kind == kind
    handle = PLANNER.interpret("can-handle", raw, PLANNER_SPEC)
    if kind == "failed":
        assert handle.result["can_handle"] is False and handle.error is None  # a clean "no"
    elif kind != "invalid-output":  # can-handle is answered by the exit code alone
        assert handle.result["can_handle"] is False and handle.result["fallback"] == kind


def test_can_handle():
    assert PLANNER.interpret("can-handle", run(0), PLANNER_SPEC).result["can_handle"] is True
    assert (
        PLANNER.interpret("can-handle", run(0, '{"can_handle": false}'), PLANNER_SPEC).result[
            "can_handle"
        ]
        is False
    )


# --- domain XML ------------------------------------------------------------------------------


def transform(stdout, code=0, payload=None):
    payload = {"xml": XML} if payload is None else payload
    return DOMAIN.interpret("transform", run(code, stdout), DOMAIN_SPEC, payload=payload)


def test_new_xml_with_diff():
    out = transform(NEW)
    assert out.outcome == Outcome.SUCCESS
    assert out.result["xml"] == NEW and out.result["changed"] is True
    assert "-  <cpu mode='custom'><model>qemu64</model></cpu>" in out.result["diff"]
    assert "+  <cpu mode='host-passthrough'/>" in out.result["diff"]


def test_empty_output_means_unchanged():
    out = transform("  \n")
    assert out.result == {
        "fallback": None,
        "warnings": [],
        "xml": XML,
        "changed": False,
        "diff": "",
    }


@pytest.mark.parametrize(
    ("stdout", "reason"),
    [
        ("<domain><name>i-2-10-VM", "not well-formed"),
        ("not xml at all", "not well-formed"),
        ('<!DOCTYPE d [<!ENTITY x "i-2-10-VM">]><domain><name>&x;</name></domain>', "DOCTYPE"),
        ('<!DOCTYPE d SYSTEM "file:///etc/passwd"><domain/>', "DOCTYPE"),
        (NEW.replace("i-2-10-VM", "i-2-11-VM"), "name and uuid"),
        (NEW.replace("9a1c5f1e", "00000000"), "name and uuid"),
        ("<vm><name>i-2-10-VM</name></vm>", "root element must be <domain>"),
    ],
)
def test_invalid_output_keeps_the_original_and_fails_the_run(stdout, reason):
    out = transform(stdout)
    assert out.outcome == Outcome.FAILED
    assert out.result["xml"] == XML and out.result["changed"] is False
    assert out.result["fallback"] == "invalid-output"
    assert reason in out.error.message


@pytest.mark.parametrize(
    "raw", [RunResult(exit_code=None, timed_out=True), RunResult(exit_code=-9), run(3, "oops")]
)
def test_timeout_crash_and_failure_keep_the_original(raw):
    out = DOMAIN.interpret("transform", raw, DOMAIN_SPEC, payload={"xml": XML})
    assert out.result["xml"] == XML and out.result["fallback"] is not None
    assert out.outcome != Outcome.SUCCESS


def test_billion_laughs_is_refused_before_expansion():
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
        + "]><domain>&i;</domain>"
    )
    with pytest.raises(UnsafeXml, match="DOCTYPE"):
        parse_safely(bomb)


def test_domain_input_is_checked():
    with pytest.raises(ValueError, match="transform needs `xml`"):
        DOMAIN.payload_bytes("transform", {"vm_name": "i-2-10-VM"}, DOMAIN_SPEC)
    with pytest.raises(ValueError, match="not well-formed"):
        DOMAIN.payload_bytes("transform", {"xml": "<domain>"}, DOMAIN_SPEC)
    with pytest.raises(ValueError, match="on-start needs `vm_name`"):
        DOMAIN.payload_bytes("on-start", {}, DOMAIN_SPEC)
    written = orjson.loads(DOMAIN.payload_bytes("transform", {"xml": XML}, DOMAIN_SPEC))
    assert written["xml"] == XML


def test_on_start_and_stop_ignore_output():
    out = DOMAIN.interpret("on-stop", run(0, "whatever"), DOMAIN_SPEC, payload={"vm_name": "v"})
    assert out.outcome == Outcome.SUCCESS and out.result["xml"] is None
