"""The `domain-xml` hook: the KVM agent's libvirt domain XML transformer and start/stop hooks.

`transform` gets the domain XML and answers the new XML (empty = unchanged); `on-start` and
`on-stop` get the VM name and their answer is ignored (CloudStack's LibvirtKvmAgentHook).
"""

from __future__ import annotations

from pydantic import ValidationInfo, model_validator

from .common import HookInput, HookResult

ACTIONS = ("transform", "on-start", "on-stop")


class DomainXmlInput(HookInput):
    xml: str | None = None
    """`transform`: the libvirt domain XML about to be defined."""
    vm_name: str | None = None
    """The VM's internal name (`i-2-10-VM`); `on-start` / `on-stop` need it."""

    @model_validator(mode="after")
    def _needs(self, info: ValidationInfo) -> DomainXmlInput:
        action = (info.context or {}).get("action")
        if action == "transform" and not (self.xml or "").strip():
            raise ValueError("transform needs `xml`: the libvirt domain XML")
        if action in ("on-start", "on-stop") and not self.vm_name:
            raise ValueError(f"{action} needs `vm_name`")
        return self


class DomainXmlResult(HookResult):
    xml: str | None = None
    """`transform`: the XML to define — the new one, or the original (unchanged / fallback)."""
    changed: bool = False
    diff: str = ""
    """Unified diff original → new ("" when unchanged)."""
