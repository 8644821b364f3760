"""The `orchestrator` hook: CloudStack's Orchestrator extension payload and what it parses back.

The payload file is exactly what CloudStack writes (reference/cloudstack.md §1.4), so scripts
written for CloudStack run unchanged. Every field is optional and unknown keys are kept:
CloudStack drops null fields and adds new ones between releases.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .common import HookInput, HookResult

PowerState = Literal["PowerOn", "PowerOff", "PowerUnknown"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Caller(_Open):
    id: str | None = None
    name: str | None = None
    type: str | None = None
    """Account type, e.g. `ADMIN`."""
    roleid: str | None = None
    rolename: str | None = None
    roletype: str | None = None


class Nic(_Open):
    uuid: str | None = None
    mac: str | None = None
    ip: str | None = None
    netmask: str | None = None
    gateway: str | None = None
    device_id: int | None = Field(default=None, alias="deviceId")
    default_nic: bool | None = Field(default=None, alias="defaultNic")
    broadcast_uri: str | None = Field(default=None, alias="broadcastUri")
    """e.g. `vlan://100`."""


class VirtualMachineTO(_Open):
    """`cloudstack.vm.details`: CloudStack's VirtualMachineTO (the fields scripts use)."""

    id: int | None = None
    name: str | None = None
    uuid: str | None = None
    cpus: int | None = None
    min_ram: int | None = Field(default=None, alias="minRam")
    max_ram: int | None = Field(default=None, alias="maxRam")
    details: dict[str, Any] = {}
    nics: list[Nic] = []
    vnc_password: str | None = Field(default=None, alias="vncPassword")


class ExternalDetails(_Open):
    extension: dict[str, Any] = {}
    resourcemap: dict[str, Any] = {}
    host: dict[str, Any] = {}
    virtualmachine: dict[str, Any] = {}
    action: dict[str, Any] = {}
    """Custom actions only: the action's own details."""


class OrchestratorInput(HookInput):
    secret_fields = frozenset({"vncPassword", "password", "secret", "token"})

    externaldetails: ExternalDetails = Field(default_factory=ExternalDetails)
    virtualmachineid: str | None = None
    virtualmachinename: str | None = None
    """Internal name, e.g. `i-2-100-VM`."""
    vm: VirtualMachineTO | None = Field(default=None, alias="cloudstack.vm.details")
    caller: Caller | None = None
    action: str | None = None
    """Custom actions: the action name."""
    parameters: dict[str, Any] = {}
    """Custom actions: the validated parameter values."""


class Console(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str | None = None
    host: str | None = None
    port: int | None = None
    password: str | None = None
    passwordonetimeuseonly: bool | None = None
    protocol: str | None = None
    """Optional (e.g. `direct` with `url`, `vnc` with `host` + `port`): CloudStack needs only
    `url`, or `host` and `port` (ExternalPathPayloadProvisioner.getInstanceConsole @0337e34)."""


class OrchestratorResult(HookResult):
    success: bool = True
    """The exit code's verdict, which is all CloudStack checks for VM actions."""
    status: str | None = None
    """The JSON answer's `status`, when it printed one (a value other than `success` with a
    successful exit is reported in `warnings`: CloudStack would count it as success)."""
    message: Any = None
    error: str | None = None
    power_state: PowerState | None = None
    """`status`: parsed as CloudStack does (text PowerOn/PowerOff or JSON power_state)."""
    power_states: dict[str, PowerState] | None = None
    """`statuses`: VM internal name → power state; None when the extension answered without
    a map (e.g. provisioner.sh's "Not supported"): CloudStack then asks `status` per VM."""
    console: Console | None = None
    """`getconsole`."""
    vm_patch: dict[str, Any] | None = None
    """`prepare`: the JSON merge patch the extension printed, its whole stdout (None: no
    change)."""
    vm_details: dict[str, Any] | None = None
    """`prepare`: `cloudstack.vm.details` with the patch applied (when the payload was given)."""
    details: str | None = None
    """Custom actions: the whole stdout (CloudStack's `result.details`)."""
    print_message: bool = False
    """Custom actions: `"printmessage": "true"` — the UI shows `message`."""
