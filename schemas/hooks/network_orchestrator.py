"""The `network-orchestrator` hook: CloudStack's NetworkOrchestrator envelope (PR #13032).

The surface changed between CloudStack revisions (reference/cloudstack.md §1.8), so the models
are lenient: numbers may come as strings or numbers, `fw_rules` / `acl_rules` / `vm_data` /
`restore_data` may be nested JSON or base64-encoded JSON (the typed model decodes them), and
unknown keys are kept.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .common import HookInput, HookResult

COMMANDS = (
    "ensure-network-device",
    "implement-network",
    "shutdown-network",
    "destroy-network",
    "restore-network",
    "implement-vpc",
    "shutdown-vpc",
    "update-vpc-source-nat-ip",
    "assign-ip",
    "release-ip",
    "add-static-nat",
    "delete-static-nat",
    "add-port-forward",
    "delete-port-forward",
    "apply-fw-rules",
    "apply-network-acl",
    "apply-lb-rules",
    "add-dhcp-entry",
    "remove-dhcp-entry",
    "config-dhcp-subnet",
    "remove-dhcp-subnet",
    "set-dhcp-options",
    "add-dns-entry",
    "remove-dns-entry",
    "config-dns-subnet",
    "remove-dns-subnet",
    "save-vm-data",
    "save-password",
    "save-userdata",
    "save-sshkey",
    "save-hypervisor-hostname",
    "prepare-nic",
    "release-nic",
    "custom-action",
)
ENCODED_FIELDS = ("fw_rules", "acl_rules", "vm_data", "restore_data")


def decode_json_field(value: Any, name: str = "value") -> Any:
    """Nested JSON as is; a string is base64-decoded then parsed (plain JSON text tolerated)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text[:1] in ("[", "{"):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name} must be nested JSON or base64-encoded JSON") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError(f"{name} is base64, but what it encodes is not JSON") from None


class NetworkPayload(BaseModel):
    """`payload` of the envelope; every field is optional (each command sends its own)."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    network_id: str | None = None
    vlan: str | None = None
    zone_id: str | None = None
    guest_type: str | None = None
    gateway: str | None = None
    cidr: str | None = None
    vpc_id: str | None = None
    extension_ip: str | None = None
    public_ip: str | None = None
    public_cidr: str | None = None
    public_vlan: str | None = None
    public_gateway: str | None = None
    private_ip: str | None = None
    mac: str | None = None
    ip: str | None = None
    nic_uuid: str | None = None
    dns: str | None = None
    domain: str | None = None
    fw_rules: Any = None
    acl_rules: Any = None
    vm_data: Any = None
    restore_data: Any = None
    current_details: Any = None
    """ensure-network-device: what the previous call printed, stored by CloudStack."""

    @field_validator(*ENCODED_FIELDS)
    @classmethod
    def _decode(cls, value: Any, info: ValidationInfo) -> Any:
        return decode_json_field(value, info.field_name or "value")


class NetworkOrchestratorInput(HookInput):
    """The envelope; `custom-action` is flat (network_id/vpc_id, action, action-params)."""

    secret_fields = frozenset({"password", "secret", "token", "private_key"})

    physical_network_extension_details: dict[str, Any] = Field(
        default={}, alias="physical-network-extension-details"
    )
    network_extension_details: dict[str, Any] | str | None = Field(
        default=None, alias="network-extension-details"
    )
    """The per-network blob ensure-network-device printed (CloudStack may pass it as text)."""
    payload: NetworkPayload | None = None
    network_id: str | int | None = None
    vpc_id: str | int | None = None
    action: str | None = None
    action_params: dict[str, Any] = Field(default={}, alias="action-params")

    @model_validator(mode="after")
    def _envelope_for_command(self, info: ValidationInfo) -> NetworkOrchestratorInput:
        command = (info.context or {}).get("action")
        if command == "custom-action" and not self.action:
            raise ValueError("custom-action needs a top-level `action` (and `action-params`)")
        if command not in (None, "custom-action") and self.payload is None:
            raise ValueError(
                "the envelope needs `payload` (plus `physical-network-extension-details` and "
                "`network-extension-details`)"
            )
        return self


class NetworkOrchestratorResult(HookResult):
    success: bool = True
    status: str | None = None
    message: Any = None
    error: str | None = None
    device_details: dict[str, Any] | None = None
    """ensure-network-device: the one JSON object, stored by CloudStack and passed back."""
    broadcast_uri: str | None = None
    """implement-network: `network.broadcast_uri`, when printed."""
    broadcast_domain_type: str | None = None
    output: str | None = None
    """custom-action: the whole stdout, returned to the API caller."""
