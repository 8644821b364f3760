"""The event hook: CloudStack bodies, filters, and the bindings that route keys to extensions.

Routing keys are built the way CloudStack builds them (RabbitMQEventBus.createRoutingKey:
`.` -> `-` in each part, empty part -> `*`) and published to a real topic exchange bound with
`binding_patterns`; each extension's queue must get exactly its events.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import orjson
import pytest

from csext.handlers import get_handler
from csext.handlers.event import accepts, binding_patterns, normalise
from csext.schemas.event import CloudStackEvent, build_routing_key, event_fields, topic_matches
from csext.schemas.manifest import HookType, Spec
from csext.schemas.run import Outcome, RunResult

VM = "2b7a768a-3bc2-4c3c-ae05-2b3480b53478"
HANDLER = get_handler(HookType.EVENT)


def spec(**events) -> Spec:
    return Spec.model_validate({"hook": "event", "entrypoint": "x", "events": events})


def event(category, type_, resource_type=None, uuid=None, body=None) -> dict:
    key = build_routing_key(category, type_, resource_type, uuid)
    return CloudStackEvent.from_delivery(key, body or {}).model_dump()


STATE = {
    "resource": "VirtualMachine",
    "id": VM,
    "old-state": "Starting",
    "new-state": "Running",
    "status": "postStateTransitionEvent",
    "eventDateTime": "2026-01-15 10:22:31 +0000",
}

# (name, event) pairs covering every category, as CloudStack publishes them.
EVENTS = {
    "vm-running-post": event(
        "ResourceStateEvent", "OperationSucceeded", "VirtualMachine", VM, STATE
    ),
    "vm-running-pre": event(
        "ResourceStateEvent",
        "OperationSucceeded",
        "VirtualMachine",
        VM,
        {**STATE, "status": "preStateTransitionEvent"},
    ),
    "vm-stopped": event(
        "ResourceStateEvent",
        "OperationSucceeded",
        "VirtualMachine",
        VM,
        {**STATE, "old-state": "Stopping", "new-state": "Stopped"},
    ),
    "volume-state": event("ResourceStateEvent", "OperationSucceeded", "Volume", "v-1", {}),
    "vm-start-action": event(
        "ActionEvent",
        "VM.START",
        "VirtualMachine",
        VM,
        {"event": "VM.START", "status": "Completed", "entity": "VirtualMachine"},
    ),
    "vm-stop-action": event("ActionEvent", "VM.STOP", "VirtualMachine", VM, {"event": "VM.STOP"}),
    "alert-memory": event("AlertEvent", "ALERT.MEMORY", None, None, {"subject": "low"}),
    "usage-vm-start": event("UsageEvent", "VM.START", "com.cloud.vm.VirtualMachine", VM, {}),
    "async-job": event("AsyncJobEvent", "VM.START", "AsyncJob", "job-1", {"jobId": "job-1"}),
}

# (extension name, spec, names of the events it must get: after bindings AND accepts)
EXTENSIONS = [
    ("vm-post-running", spec(filters={"resourceTypes": ["VirtualMachine"], "newStates": ["running"], "phase": "post"}), {"vm-running-post"}),  # noqa: E501
    ("vm-start-actions", spec(filters={"categories": ["ActionEvent"], "types": ["VM.START"]}), {"vm-start-action"}),  # noqa: E501
    ("alerts", spec(filters={"categories": ["AlertEvent"]}), {"alert-memory"}),
    ("usage-vms", spec(filters={"categories": ["UsageEvent"], "resourceTypes": ["com.cloud.vm.VirtualMachine"]}), {"usage-vm-start"}),  # noqa: E501
    ("vm-anything", spec(filters={"resourceUuids": [VM], "categories": ["ActionEvent", "ResourceStateEvent"]}),  # noqa: E501
     {"vm-running-post", "vm-running-pre", "vm-stopped", "vm-start-action", "vm-stop-action"}),
    ("explicit", spec(patterns=["*.AsyncJobEvent.#"]), {"async-job"}),
]  # fmt: skip


def test_patterns_are_the_narrowest_cloudstack_keys():
    vm_state = spec(
        filters={"categories": ["ResourceStateEvent"], "resourceTypes": ["VirtualMachine"]}
    )
    assert binding_patterns(vm_state) == ["management-server.ResourceStateEvent.*.VirtualMachine.*"]
    action = spec(filters={"categories": ["ActionEvent"], "types": ["VM.START", "VM.STOP"]})
    assert binding_patterns(action) == [
        "management-server.ActionEvent.VM-START.*.*",
        "management-server.ActionEvent.VM-STOP.*.*",
    ]
    states_only = spec(filters={"newStates": ["Running"]})
    assert binding_patterns(states_only) == ["management-server.ResourceStateEvent.*.*.*"]
    usage = spec(filters={"resourceTypes": ["com.cloud.vm.VirtualMachine"]})
    assert binding_patterns(usage) == ["management-server.*.*.com-cloud-vm-VirtualMachine.*"]
    assert binding_patterns(spec()) == []
    assert binding_patterns(spec(patterns=["#", "#"])) == ["#"]


def test_too_many_combinations_widen_instead_of_exploding():
    many = spec(
        filters={
            "types": [f"T{i}" for i in range(10)],
            "resourceUuids": [f"u{i}" for i in range(10)],
        }
    )
    patterns = binding_patterns(many)
    assert len(patterns) <= 32
    assert "management-server.*.T3.*.*" in patterns  # uuids widened first, types kept


@pytest.mark.parametrize(("name", "ext_spec", "wanted"), EXTENSIONS)
def test_bindings_and_accepts_select_exactly_the_wanted_events(name, ext_spec, wanted):
    patterns = binding_patterns(ext_spec)
    got = {
        key
        for key, ev in EVENTS.items()
        if any(topic_matches(p, ev["routing_key"]) for p in patterns) and accepts(ev, ext_spec)
    }
    assert got == wanted, name


def test_accepts_checks_states_case_insensitively_and_body_values():
    s = spec(
        filters={
            "oldStates": ["STARTING"],
            "statuses": ["poststatetransitionevent"],
            "body": {"resource": "VirtualMachine"},
        }
    )
    assert accepts(EVENTS["vm-running-post"], s)
    assert not accepts(EVENTS["vm-stopped"], s)
    assert accepts(EVENTS["alert-memory"], spec())


@pytest.mark.broker
async def test_real_rabbitmq_routes_each_key_to_the_right_queues(amqp_url, unique):
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(f"{unique}.events", "topic", durable=True)
        queues = {}
        try:
            for name, ext_spec, _ in EXTENSIONS:
                queue = await channel.declare_queue(f"{unique}.{name}", auto_delete=True)
                for pattern in binding_patterns(ext_spec):
                    await queue.bind(exchange, pattern)
                queues[name] = queue
            for key, ev in EVENTS.items():
                message = aio_pika.Message(
                    orjson.dumps(ev["body"]),
                    content_type="text/plain",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers={"name": key},
                )
                await exchange.publish(message, routing_key=ev["routing_key"])
            for name, ext_spec, wanted in EXTENSIONS:
                got = await _drain(queues[name], ext_spec)
                assert got == wanted, name
        finally:
            for queue in queues.values():
                await queue.delete(if_unused=False, if_empty=False)
            await exchange.delete()


async def _drain(queue, ext_spec) -> set[str]:
    """Every message in the queue (publisher confirms: all were routed before publish returned)."""
    got = set()
    async with asyncio.timeout(10):
        while True:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                return got
            ev = CloudStackEvent.from_delivery(message.routing_key, orjson.loads(message.body))
            if accepts(ev.model_dump(), ext_spec):
                got.add(message.headers["name"])


def test_payload_keeps_cloudstack_keys_and_adds_normalised_fields():
    body = {**STATE, "extra": "kept", "description": "a \\u003cb\\u003e &amp; c"}
    ev = event("ResourceStateEvent", "OperationSucceeded", "VirtualMachine", VM, body)
    payload = orjson.loads(HANDLER.payload_bytes("ResourceStateEvent", ev, spec()))
    assert payload["body"]["old-state"] == "Starting" and payload["body"]["extra"] == "kept"
    # CloudStack's text exactly as parsed from its JSON: `&amp;` and a literal `\u003c`
    # stay as they are (Gson's own \u003c escape is already `<` once the JSON is parsed).
    assert payload["body"]["description"] == "a \\u003cb\\u003e &amp; c"
    assert payload["body"] == body
    assert payload["old_state"] == "Starting" and payload["new_state"] == "Running"
    assert payload["phase"] == "post" and payload["resource_id"] == VM
    assert payload["event_date_time"] == "2026-01-15 10:22:31 +0000"


@pytest.mark.parametrize(
    ("category", "body", "field", "value"),
    [
        (
            "ActionEvent",
            {"event": "VM.START", "status": "Completed", "entityuuid": VM},
            "event",
            "VM.START",
        ),
        ("AlertEvent", {"event": "ALERT.MEMORY", "dataCenterId": "z1"}, "event", "ALERT.MEMORY"),
        ("UsageEvent", {"event": "VM.START", "id": VM, "zone": "z1"}, "resource_id", VM),
        (
            "AsyncJobEvent",
            {"commandEventType": "VM.START", "instanceUuid": VM, "jobId": 7},
            "resource_id",
            VM,
        ),
        ("ResourceStateEvent", {}, "old_state", None),
    ],
)
def test_every_category_tolerates_missing_keys(category, body, field, value):
    ev = event(category, "VM.START", "VirtualMachine", None, body)
    payload = orjson.loads(HANDLER.payload_bytes(category, ev, spec()))
    assert payload[field] == value
    assert payload["category"] == category


def test_bad_event_payload_is_a_value_error():
    with pytest.raises(ValueError, match="body"):
        HANDLER.payload_bytes("ActionEvent", {"routing_key": "k", "body": [1]}, spec())


def test_rpc_actions_of_an_event_extension_pass_through():
    assert orjson.loads(HANDLER.payload_bytes("greet", {"name": "Ada"}, spec())) == {"name": "Ada"}


def test_exit_codes_decide_ack_retry_and_failure():
    s = spec()
    assert HANDLER.interpret("ActionEvent", RunResult(exit_code=0), s).outcome == Outcome.SUCCESS
    retry = HANDLER.interpret("ActionEvent", RunResult(exit_code=75), s)
    assert retry.retry and retry.outcome == Outcome.FAILED
    # Unlisted non-zero codes are retried (then dead-lettered); `exitCodes.failure` is permanent.
    unlisted = HANDLER.interpret("ActionEvent", RunResult(exit_code=2, stdout=b"boom"), s)
    assert unlisted.retry and unlisted.outcome == Outcome.FAILED
    permanent = Spec.model_validate(
        {"hook": "event", "entrypoint": "x", "exitCodes": {"failure": [2]}}
    )
    failed = HANDLER.interpret("ActionEvent", RunResult(exit_code=2, stdout=b"boom"), permanent)
    assert not failed.retry and failed.error.kind == "failed" and "boom" in failed.error.message
    # An RPC action of an event extension fails without retries.
    greet = HANDLER.interpret("greet", RunResult(exit_code=1), s)
    assert not greet.retry and greet.outcome == Outcome.FAILED
    timeout = HANDLER.interpret("ActionEvent", RunResult(exit_code=None, timed_out=True), s)
    assert timeout.retry and timeout.outcome == Outcome.TIMEOUT
    crash = HANDLER.interpret("ActionEvent", RunResult(exit_code=-9), s)
    assert crash.error.kind == "crashed" and not crash.retry


@pytest.mark.parametrize(
    ("key", "body"),
    [
        (
            "management-server.ResourceStateEvent.VirtualMachine-Start.VirtualMachine.u-1",
            {
                "old-state": "Starting",
                "new-state": "Running",
                "status": "postStateTransitionEvent",
                "id": "u-1",
                "eventDateTime": "2026-01-15 10:22:31 +0000",
            },
        ),
        (
            "management-server.ResourceStateEvent.*.VirtualMachine.u-1",
            {"old_state": "Stopped", "new-state": "Starting", "status": "preStateTransitionEvent"},
        ),
        (
            "management-server.ActionEvent.VM-START.VirtualMachine.u-2",
            {
                "event": "VM.START",
                "status": "Completed",
                "entityuuid": "u-2",
                "description": "a &lt;b&gt; \\u003cc\\u003e",
            },
        ),
        ("management-server.AsyncJobEvent.*.*.*", {"commandEventType": "VM.STOP", "jobId": "7"}),
        (
            # ApiServer.handleAsyncJobPublishEvent @02182a1: jobResult and cmdInfo are objects
            "management-server.AsyncJobEvent.ASYNC_JOB_COMPLETE.VirtualMachine.u-3",
            {
                "command": "org.apache.cloudstack.api.command.user.vm.StartVMCmd",
                "processStatus": "0",
                "resultCode": "0",
                "status": "SUCCEEDED",
                "jobResult": {"virtualmachine": {"id": "u-3", "state": "Running"}},
                "cmdInfo": {"id": "u-3", "ctxDetails": {"VirtualMachine": "u-3"}},
                "instanceUuid": "u-3",
            },
        ),
        ("management-server.AlertEvent.*.*.*", {}),
        ("too.short", {"status": "odd"}),
        ("management-server.UsageEvent.x.y.z", {"id": 5}),  # not strings: the model path
        ("management-server.ResourceStateEvent.x.y.z", {"old-state": None}),
    ],
)
def test_fast_event_payload_is_the_model_dump(key: str, body: dict[str, Any]) -> None:
    """The hot path's payload file is byte for byte what the pydantic model writes."""
    event = event_fields(key, body)
    model = orjson.dumps(normalise(event).model_dump(mode="json"))
    assert HANDLER.payload_bytes(event["category"] or "event", event, spec()) == model
