"""The `domain-xml` hook: rewrite the libvirt domain XML before the KVM agent defines it.

`transform` (the agent's libvirt_vm_xml_transformer): empty stdout = unchanged. Otherwise
stdout must be well-formed XML with root `<domain>` and the same `<name>` and `<uuid>` as the
original, else the original XML is used and the run is failed. The output is parsed with the
stdlib only, safely: a DOCTYPE or ENTITY declaration is refused before anything is expanded
(no entity expansion, no external fetch). The result carries a unified diff.

`on-start` / `on-stop`: the VM name in, the answer ignored (the agent ignores it too).

Failure policy: fail-open — on timeout, crash, a failing exit or invalid output the result is
the original XML (`fallback` says why); `error` is also allowed (the KVM shim then keeps the
original XML itself).
"""

from __future__ import annotations

import difflib
import xml.etree.ElementTree as ET
from typing import Any
from xml.parsers import expat

import orjson

from csext.schemas.hooks.common import FailurePolicy, HookResult, Meaning
from csext.schemas.hooks.domain_xml import ACTIONS, DomainXmlInput, DomainXmlResult
from csext.schemas.manifest import HookType, Spec
from csext.schemas.run import RunResult

from .base import Fallback, HookDefaults, TypedHandler, failed


class UnsafeXml(ValueError):
    """Not well-formed, or declares a DOCTYPE / ENTITY."""


class DomainXmlHandler(TypedHandler):
    hook = HookType.DOMAIN_XML
    defaults = HookDefaults(
        timeout=10.0,
        attempts=1,
        failure_policies=(FailurePolicy.FAIL_OPEN, FailurePolicy.ERROR),
    )
    input_model = DomainXmlInput
    result_model = DomainXmlResult
    actions = ACTIONS

    def payload_bytes(self, action: str, payload: Any, spec: Spec) -> bytes:
        model = self.validate(action, payload)
        if isinstance(model, DomainXmlInput) and model.xml:
            try:
                identity_of(parse_safely(model.xml))
            except UnsafeXml as error:
                raise ValueError(f"payload xml: {error}") from None
        return orjson.dumps(model.model_dump(mode="json", by_alias=True))

    def parse(self, action: str, meaning: Meaning, run: RunResult, payload: Any) -> HookResult:
        if meaning != Meaning.SUCCESS:
            raise failed(meaning, run)
        if action != "transform":
            return DomainXmlResult()
        original = original_xml(payload)
        new = run.stdout.decode("utf-8", "replace").strip()
        if not new:
            return DomainXmlResult(xml=original)  # None (caller keeps its XML) if not given
        if original is None:
            raise Fallback("internal", "the original XML was not passed to interpret()")
        check_same_domain(original, new)
        diff = unified_diff(original, new)
        return DomainXmlResult(xml=new, changed=bool(diff), diff=diff)

    def fallback_result(
        self, action: str, payload: Any, policy: FailurePolicy
    ) -> HookResult | None:
        if action != "transform":
            return DomainXmlResult()
        return DomainXmlResult(xml=original_xml(payload))


def original_xml(payload: Any) -> str | None:
    xml = payload.get("xml") if isinstance(payload, dict) else None
    return xml if isinstance(xml, str) else None


def _refuse(*_: Any) -> None:
    raise UnsafeXml("DOCTYPE and ENTITY declarations are refused")


def _refuse_external(*_: Any) -> int:
    raise UnsafeXml("external entities are refused")


def parse_safely(text: str) -> ET.Element:
    """Parse XML with the stdlib, refusing any DOCTYPE / ENTITY before it can be expanded."""
    data = text.encode("utf-8")
    checker = expat.ParserCreate()
    checker.StartDoctypeDeclHandler = _refuse
    checker.EntityDeclHandler = _refuse
    checker.ExternalEntityRefHandler = _refuse_external
    try:
        checker.Parse(data, True)
        return ET.fromstring(data)
    except (expat.ExpatError, ET.ParseError) as error:
        raise UnsafeXml(f"not well-formed XML: {error}") from None


def identity_of(root: ET.Element) -> tuple[str, str]:
    if root.tag != "domain":
        raise UnsafeXml(f"the root element must be <domain>, not <{root.tag}>")
    return (root.findtext("name") or "").strip(), (root.findtext("uuid") or "").strip()


def check_same_domain(original: str, new: str) -> None:
    try:
        before = identity_of(parse_safely(original))
        after = identity_of(parse_safely(new))
    except UnsafeXml as error:
        raise Fallback("invalid-output", str(error)) from None
    if before != after:
        raise Fallback(
            "invalid-output",
            f"the new XML must keep the domain's name and uuid {before}, got {after}",
        )


def unified_diff(original: str, new: str) -> str:
    lines = difflib.unified_diff(
        original.strip().splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile="original",
        tofile="transformed",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


HANDLER = DomainXmlHandler()
