"""The `orchestrator` hook: CloudStack's Orchestrator extension, parsed exactly as CloudStack does.

The payload file is CloudStack's own payload, byte for byte what the caller sent (validated,
not rewritten), so a script written for CloudStack runs unchanged. Results follow
ExternalPathPayloadProvisioner (reference/cloudstack.md §1.5):

- every action: the exit code decides; a JSON `status` other than `success` on exit 0 is kept
  as a warning (CloudStack would count the call as a success);
- `status`: stdout not starting with `{` compared case-insensitively to PowerOn/PowerOff, else
  JSON `power_state` the same way; anything else PowerUnknown;
- `statuses`: `power_state` is a map of VM internal name → state;
- `getconsole`: `console` needs `url` + `protocol: direct`, or `host` + `port`;
- `prepare`: empty stdout changes nothing; a JSON object is a merge patch (RFC 7386) on
  `cloudstack.vm.details`; anything else fails as CloudStack does ("Failed to parse VM");
- other actions (custom actions, passed verbatim): the whole stdout is `details`.

Failure policy: error (CloudStack shows the failure); no fallback result.
"""

from __future__ import annotations

from typing import Any

import orjson

from csext.schemas.hooks.common import FailurePolicy, HookResult, Meaning
from csext.schemas.hooks.orchestrator import (
    Console,
    OrchestratorInput,
    OrchestratorResult,
    PowerState,
)
from csext.schemas.manifest import HookType, Spec
from csext.schemas.run import RunResult

from .base import (
    Fallback,
    HookDefaults,
    TypedHandler,
    failed,
    status_problem,
    stdout_object,
    stdout_text,
    truthy,
)

VM_ACTIONS = ("prepare", "create", "deploy", "start", "stop", "reboot", "delete")
PREPARE_EDITABLE = {"vncPassword", "details", "nics", "mac"}
"""What CloudStack's docs say a prepare patch may change; other keys get a warning."""
_ANSWER_KEYS = {"status", "message", "error", "printmessage"}


class OrchestratorHandler(TypedHandler):
    hook = HookType.ORCHESTRATOR
    defaults = HookDefaults(timeout=1800.0, attempts=1, failure_policies=(FailurePolicy.ERROR,))
    input_model = OrchestratorInput
    result_model = OrchestratorResult

    def check_action(self, action: str) -> str:
        return action.strip().lower()  # custom actions are verbatim: any name is fine

    def payload_bytes(self, action: str, payload: Any, spec: Spec) -> bytes:
        self.validate(action, payload)
        return orjson.dumps(payload)

    def parse(self, action: str, meaning: Meaning, run: RunResult, payload: Any) -> HookResult:
        answer = stdout_object(run)
        if meaning != Meaning.SUCCESS:
            raise failed(meaning, run, answer)
        result = OrchestratorResult(
            status=str(answer["status"]) if answer and "status" in answer else None,
            message=answer.get("message") if answer else None,
            error=str(answer["error"]) if answer and answer.get("error") else None,
        )
        problem = status_problem(answer)
        if problem:
            result.warnings.append(f"exit code 0 but {problem}: CloudStack counts it a success")
        return self._by_action(action, run, answer, result, payload)

    def _by_action(
        self,
        action: str,
        run: RunResult,
        answer: dict[str, Any] | None,
        result: OrchestratorResult,
        payload: Any,
    ) -> OrchestratorResult:
        if action == "status":
            result.power_state = power_state_of(stdout_text(run))
        elif action == "statuses":
            result.power_states = power_states_of(answer)
        elif action == "getconsole":
            result.console = console_of(answer)
        elif action == "prepare":
            prepare_patch(run, answer, result, payload)
        elif action not in VM_ACTIONS:
            result.details = stdout_text(run)
            result.print_message = truthy(answer.get("printmessage")) if answer else False
        return result


def _power(value: Any) -> PowerState:
    text = str(value).strip().lower() if value is not None else ""
    if text == "poweron":
        return "PowerOn"
    if text == "poweroff":
        return "PowerOff"
    return "PowerUnknown"


def power_state_of(stdout: str) -> PowerState:
    """`status` output as CloudStack reads it."""
    if not stdout.startswith("{"):
        return _power(stdout)
    try:
        answer = orjson.loads(stdout)
    except orjson.JSONDecodeError:
        return "PowerUnknown"
    return _power(answer.get("power_state")) if isinstance(answer, dict) else "PowerUnknown"


def power_states_of(answer: dict[str, Any] | None) -> dict[str, PowerState]:
    states = answer.get("power_state") if answer else None
    if not isinstance(states, dict):
        raise Fallback(
            "invalid-output",
            'statuses must print {"status":"success","power_state":{"<vm name>":"poweron"}}',
        )
    return {str(name): _power(state) for name, state in states.items()}


def console_of(answer: dict[str, Any] | None) -> Console:
    console = answer.get("console") if answer else None
    if isinstance(console, dict):
        direct = console.get("url") and str(console.get("protocol", "")).lower() == "direct"
        if direct or (console.get("host") and console.get("port")):
            return Console.model_validate(console)
    raise Fallback(
        "invalid-output",
        "Missing required fields: getconsole must print a `console` object with `url` and "
        '`"protocol": "direct"`, or `host` and `port`',
    )


def prepare_patch(
    run: RunResult, answer: dict[str, Any] | None, result: OrchestratorResult, payload: Any
) -> None:
    if not stdout_text(run):
        return
    if answer is None:
        raise Fallback("invalid-output", "Failed to parse VM: prepare must print a JSON object")
    patch = {k: v for k, v in answer.items() if k not in _ANSWER_KEYS}
    result.vm_patch = patch
    unexpected = sorted(set(patch) - PREPARE_EDITABLE)
    if unexpected:
        result.warnings.append(
            f"prepare changes {unexpected}: CloudStack documents only "
            f"{sorted(PREPARE_EDITABLE)} as changeable"
        )
    if isinstance(payload, dict) and isinstance(payload.get("cloudstack.vm.details"), dict):
        result.vm_details = merge_patch(payload["cloudstack.vm.details"], patch)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


HANDLER = OrchestratorHandler()
