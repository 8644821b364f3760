"""What `csext new` writes for each hook: its actions, a sample payload and a working answer.

The answers follow what each hook's handler parses (handlers/, docs/hooks.md) and what
CloudStack itself expects (reference: CloudStack's Extensions and hook interfaces); the sample
payloads are shaped like what CloudStack sends. Every scaffold passes `csext test` unmodified
(tests/test_store_scaffold.py checks all hooks in both languages).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from csext.schemas.hooks.network_orchestrator import COMMANDS as NETWORK_COMMANDS
from csext.schemas.manifest import HookType

VM = "2b7a768a-3bc2-4c3c-ae05-2b3480b53478"
OK = {"status": "success"}


@dataclass(frozen=True, slots=True)
class Action:
    names: tuple[str, ...]
    """Actions one branch handles; the first names the test case."""
    todo: str
    output: Any
    """Printed on stdout: a JSON object (dict), raw text (str), or nothing (None)."""
    payload: dict[str, Any]
    expect: dict[str, Any] = field(default_factory=lambda: {"outcome": "success", "exitCode": 0})
    routing_key: str | None = None
    """Event hooks: the case gives a routing key and the raw CloudStack body as payload."""

    @property
    def slug(self) -> str:
        return self.names[0].lower()

    @property
    def todo_lines(self) -> list[str]:
        return [
            "TODO: " + line if i == 0 else line for i, line in enumerate(self.todo.splitlines())
        ]


@dataclass(frozen=True, slots=True)
class HookTemplate:
    summary: str
    actions: tuple[Action, ...]
    timeout: float = 30.0
    custom_actions: bool = False
    """Unknown actions are custom actions (answered with success) rather than errors."""
    manifest_extra: tuple[str, ...] = ()
    """More `spec:` lines (already indented one level below spec)."""


def _success(**result: Any) -> dict[str, Any]:
    expect: dict[str, Any] = {"outcome": "success", "exitCode": 0}
    if result:
        expect["result"] = result
    return expect


# --- event ---------------------------------------------------------------------------------

_EVENT_BODIES: dict[str, tuple[str, dict[str, Any], str]] = {
    "ResourceStateEvent": (
        f"management-server.ResourceStateEvent.OperationSucceeded.VirtualMachine.{VM}",
        {
            "resource": "VirtualMachine",
            "id": VM,
            "old-state": "Starting",
            "new-state": "Running",
            "status": "postStateTransitionEvent",
            "eventDateTime": "2026-01-15 10:22:31 +0000",
        },
        "react to a state transition (body: resource, id, old-state, new-state, status).",
    ),
    "ActionEvent": (
        f"management-server.ActionEvent.VM-START.VirtualMachine.{VM}",
        {
            "event": "VM.START",
            "status": "Completed",
            "entity": "VirtualMachine",
            "entityuuid": VM,
            "description": "Successfully completed starting Vm",
            "eventDateTime": "2026-01-15 10:22:31 +0000",
        },
        "react to an API action (body: event such as VM.START, status, entityuuid).",
    ),
    "AlertEvent": (
        "management-server.AlertEvent.ALERT-MEMORY.*.*",
        {"event": "ALERT.MEMORY", "subject": "Memory low", "body": "Zone 1 memory is low"},
        "react to an alert (body: event, subject, body, dataCenterId, podId).",
    ),
    "UsageEvent": (
        f"management-server.UsageEvent.VM-START.com-cloud-vm-VirtualMachine.{VM}",
        {"event": "VM.START", "resource": "com.cloud.vm.VirtualMachine", "id": VM},
        "record usage (body: account, zone, event, resource, id).",
    ),
    "AsyncJobEvent": (
        f"management-server.AsyncJobEvent.VM-START.VirtualMachine.{VM}",
        {"command": "StartVMCmd", "status": "SUCCEEDED", "instanceUuid": VM, "jobId": "42"},
        "follow an async job (body: command, status, instanceUuid, jobId, jobResult).",
    ),
}

EVENT = HookTemplate(
    summary="Reacts to CloudStack events (state transitions, API actions, alerts).",
    actions=tuple(
        Action(
            (category,),
            f"{todo}\nThe payload is the event: routing_key, category, type, resource_type,\n"
            "resource_uuid and body (CloudStack's JSON). Exit 75 to retry later.",
            {"status": "success", "message": f"{category} handled"},
            body,
            routing_key=key,
        )
        for category, (key, body, todo) in _EVENT_BODIES.items()
    ),
    manifest_extra=(
        "events:",
        "  # AMQP topic patterns on <source>.<category>.<type>.<resourceType>.<uuid>",
        "  patterns:",
        "    - management-server.ResourceStateEvent.*.VirtualMachine.*",
        "    # - management-server.ActionEvent.VM-START.*.*",
        "    # - management-server.AlertEvent.#",
    ),
)

# --- orchestrator --------------------------------------------------------------------------

_VM_PAYLOAD = {
    "externaldetails": {
        "extension": {"url": "https://hypervisor.example:8006"},
        "resourcemap": {},
        "host": {"node": "node1"},
        "virtualmachine": {},
    },
    "virtualmachineid": VM,
    "virtualmachinename": "i-2-4-VM",
    "cloudstack.vm.details": {
        "id": 4,
        "name": "i-2-4-VM",
        "uuid": VM,
        "cpus": 1,
        "minRam": 536870912,
        "maxRam": 536870912,
        "details": {"deployvm": "true"},
        "nics": [],
    },
    "caller": {"id": "93567ed9", "name": "admin", "type": "ADMIN"},
}


def _vm(name: str, todo: str) -> Action:
    names = ("create", "deploy") if name == "create" else (name,)
    answer = {"status": "success", "message": f"{name} done"}
    return Action(names, todo, answer, _VM_PAYLOAD, _success())


ORCHESTRATOR = HookTemplate(
    summary="Runs CloudStack VM operations on an external system (Orchestrator extension).",
    timeout=300.0,
    custom_actions=True,
    actions=(
        Action(
            ("prepare",),
            "optional: change the VM before create. Print nothing for no change, or a JSON\n"
            'merge patch of cloudstack.vm.details, e.g. {"details": {"myvmid": "105"}}.',
            None,
            _VM_PAYLOAD,
        ),
        _vm("create", "create (deploy) the VM described by cloudstack.vm.details."),
        _vm("start", "start the VM (virtualmachinename, externaldetails.host...)."),
        _vm("stop", "stop the VM; a VM that is already gone counts as stopped."),
        _vm("reboot", "reboot the VM."),
        _vm("delete", "delete the VM; a VM that is already gone counts as deleted."),
        Action(
            ("status",),
            "print the VM's power state: PowerOn or PowerOff.",
            {"status": "success", "power_state": "PowerOn"},
            _VM_PAYLOAD,
            _success(power_state="PowerOn"),
        ),
        Action(
            ("statuses",),
            "print the power state of every VM of this host, keyed by internal name.",
            {"status": "success", "power_state": {"i-2-4-VM": "poweron"}},
            {"externaldetails": _VM_PAYLOAD["externaldetails"]},
            _success(power_states={"i-2-4-VM": "PowerOn"}),
        ),
        Action(
            ("getconsole",),
            "return how to reach the VM's console: host + port (vnc) or a url (direct).",
            {
                "status": "success",
                "console": {"host": "192.0.2.10", "port": 5900, "protocol": "vnc"},
            },
            _VM_PAYLOAD,
            _success(console={"host": "192.0.2.10", "port": 5900}),
        ),
    ),
)

# --- network-orchestrator ------------------------------------------------------------------

_NET_ENVELOPE = {
    "physical-network-extension-details": {"physicalnetworkname": "pnet1"},
    "network-extension-details": {},
    "payload": {
        "network_id": "204",
        "vlan": "100",
        "zone_id": "1",
        "guest_type": "Isolated",
        "gateway": "10.1.1.1",
        "cidr": "10.1.1.0/24",
    },
}
_NET_SIMPLE = tuple(
    c for c in NETWORK_COMMANDS if c not in ("ensure-network-device", "custom-action")
)

NETWORK_ORCHESTRATOR = HookTemplate(
    summary="Configures external network devices for CloudStack networks.",
    timeout=60.0,
    actions=(
        Action(
            ("ensure-network-device",),
            "make sure the device for this network exists; print ONE line of JSON\n"
            "describing it: CloudStack stores it and passes it back as current_details.",
            {"device": "example-router", "vlan": "100"},
            _NET_ENVELOPE,
            _success(device_details={"device": "example-router"}),
        ),
        Action(
            _NET_SIMPLE,
            "apply the network change the command names (payload: network_id, vlan,\n"
            'cidr, gateway, public_ip, fw_rules...). Print {"status": "error", ...} and exit 1\n'
            "on failure.",
            OK,
            _NET_ENVELOPE,
        ),
        Action(
            ("custom-action",),
            "run the custom action named by `action` with `action-params`; stdout goes\n"
            "back to the API caller.",
            {"status": "success", "message": "custom action done"},
            {"network_id": "204", "action": "Example", "action-params": {}},
        ),
    ),
)

# --- oob-management ------------------------------------------------------------------------

_BMC = {"address": "192.0.2.20", "port": 623, "username": "admin", "password": "changeme"}


def _power(name: str, state: str, todo: str) -> Action:
    return Action(
        (name,),
        todo,
        {"power_state": state},
        _BMC,
        _success(power_state=state, success=True),
    )


OOB_MANAGEMENT = HookTemplate(
    summary="Powers hosts through their BMC (CloudStack out-of-band management).",
    timeout=60.0,
    actions=(
        _power("on", "On", "power the host on (payload: address, port, username, password)."),
        _power("off", "Off", "power the host off (hard)."),
        _power("cycle", "On", "power cycle the host."),
        _power("reset", "On", "hard reset the host."),
        _power("soft", "Off", "ask the OS to shut down (ACPI soft off)."),
        _power("status", "On", "print the host's power state: On or Off (exit 77: bad login)."),
    ),
)

# --- user-authenticator --------------------------------------------------------------------

USER_AUTHENTICATOR = HookTemplate(
    summary="Authenticates CloudStack users against an external source.",
    timeout=10.0,
    actions=(
        Action(
            ("authenticate",),
            "check username/password (and domain) against your user store. This scaffold\n"
            "denies everyone until you fill it in (fail closed).",
            {"authenticated": False, "count_failed_attempt": False},
            {"username": "alice", "password": "wonderland", "domain_id": 1, "domain": "/"},
            _success(authenticated=False),
        ),
    ),
)

# --- two-factor ----------------------------------------------------------------------------

_ACCOUNT = {"id": "7", "uuid": "0f6c", "username": "alice", "account_name": "admin"}

TWO_FACTOR = HookTemplate(
    summary="Checks second-factor codes for CloudStack logins.",
    timeout=10.0,
    actions=(
        Action(
            ("check",),
            "verify `code` for user_account (its `key` is what setup returned). This\n"
            "scaffold rejects every code until you fill it in (fail closed).",
            {"passed": False, "message": "not implemented yet"},
            {"user_account": {**_ACCOUNT, "key": "JBSWY3DPEHPK3PXP"}, "code": "123456"},
            _success(passed=False),
        ),
        Action(
            ("setup",),
            "create the user's secret and print it (it is masked in csext's records).",
            {"secret": "JBSWY3DPEHPK3PXP", "message": "scan this secret in your app"},
            {"user_account": _ACCOUNT},
            _success(secret="JBSWY3DPEHPK3PXP"),
        ),
    ),
)

# --- deployment-planner --------------------------------------------------------------------

_PLAN = {
    "vm": {"uuid": VM, "name": "i-2-4-VM", "type": "User"},
    "plan": {"data_center_id": 1},
    "avoid": {},
    "clusters": [{"id": 1, "name": "c1"}, {"id": 2, "name": "c2"}],
}

DEPLOYMENT_PLANNER = HookTemplate(
    summary="Chooses where CloudStack deploys VMs (deployment planner).",
    timeout=10.0,
    actions=(
        Action(
            ("can-handle",),
            "say whether this planner wants this VM (vm, plan, avoid).",
            {"can_handle": True},
            _PLAN,
            _success(can_handle=True),
        ),
        Action(
            ("order-clusters",),
            "print cluster ids, most preferred first; this scaffold keeps the given order.\n"
            'Print {"no_preference": true} to let CloudStack decide.',
            {"cluster_ids": [1, 2]},
            _PLAN,
            _success(cluster_ids=[1, 2]),
        ),
    ),
)

# --- domain-xml ----------------------------------------------------------------------------

_XML = "<domain type='kvm'><name>i-2-4-VM</name><memory>524288</memory></domain>"

DOMAIN_XML = HookTemplate(
    summary="Rewrites libvirt domain XML on KVM hosts (agent hooks).",
    timeout=10.0,
    actions=(
        Action(
            ("transform",),
            "print the new domain XML built from `xml`; print nothing to keep it unchanged.",
            None,
            {"xml": _XML, "vm_name": "i-2-4-VM"},
            _success(changed=False),
        ),
        Action(
            ("on-start", "on-stop"),
            "react to the VM `vm_name` starting or stopping (the answer is ignored).",
            None,
            {"vm_name": "i-2-4-VM"},
        ),
    ),
)

HOOKS: dict[HookType, HookTemplate] = {
    HookType.EVENT: EVENT,
    HookType.ORCHESTRATOR: ORCHESTRATOR,
    HookType.NETWORK_ORCHESTRATOR: NETWORK_ORCHESTRATOR,
    HookType.OOB_MANAGEMENT: OOB_MANAGEMENT,
    HookType.USER_AUTHENTICATOR: USER_AUTHENTICATOR,
    HookType.TWO_FACTOR: TWO_FACTOR,
    HookType.DEPLOYMENT_PLANNER: DEPLOYMENT_PLANNER,
    HookType.DOMAIN_XML: DOMAIN_XML,
}
