"""The `orchestrator` hook: CloudStack's Orchestrator extension, parsed exactly as CloudStack does.

The payload file is CloudStack's own payload, byte for byte what the caller sent (validated,
not rewritten), so a script written for CloudStack runs unchanged. CloudStack itself parses the
output; this module only reads it for csext's own run record (`csext forward` hands CloudStack
the extension's stdout and exit code unchanged, whatever is decided here). The rules follow
ExternalPathPayloadProvisioner (plugins/hypervisors/external/src/main/java/org/apache/
cloudstack/hypervisor/external/provisioner/ExternalPathPayloadProvisioner.java @0337e34):

- every action: the exit code decides (executeExternalCommand); the output is the whole
  stdout, trimmed; a JSON `status` other than `success` on exit 0 is kept as a warning
  (CloudStack counts the call as a success);
- `status`: output not starting with `{` compared case-insensitively to PowerOn/PowerOff, else
  the whole output as JSON, its `power_state` the same way; anything else PowerUnknown
  (parsePowerStateFromResponse);
- `statuses`: `power_state` is a map of VM internal name → state; an answer without that map,
  such as the in-tree provisioner.sh's `{"status": "error", "message": "Not supported"}` with
  exit 0 (scripts/vm/hypervisor/external/provisioner/provisioner.sh @3e744c3), is a normal
  answer: CloudStack falls back to `status` per VM;
- `getconsole`: the whole output as a JSON object with a `console` object; CloudStack fails only
  when `url` is missing and `host` or `port` is missing; `protocol` is optional
  (getInstanceConsole);
- `prepare`: empty output changes nothing; otherwise the whole output is a JSON merge patch on
  `cloudstack.vm.details` (JsonMergeUtil.mergeJsonPatch); anything but a JSON object fails as
  CloudStack does ("Failed to parse VM") (prepareExternalProvisioning);
- other actions (custom actions, passed verbatim): the whole stdout is `details`
  (runCustomAction).

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
    NO_JSON,
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
    read_only_actions = frozenset({"status", "statuses"})
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
        if problem and action != "statuses":  # statuses: "not supported" is a normal answer
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
            result.power_states = power_states_of(answer, result)
        elif action == "getconsole":
            result.console = console_of(run)
        elif action == "prepare":
            prepare_patch(run, result, payload)
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


def power_states_of(
    answer: dict[str, Any] | None, result: OrchestratorResult
) -> dict[str, PowerState] | None:
    """The `statuses` map, or None when the extension answered without one (CloudStack then
    asks `status` per VM; provisioner.sh @3e744c3 answers "Not supported" that way)."""
    states = answer.get("power_state") if answer else None
    if isinstance(states, dict):
        return {str(name): _power(state) for name, state in states.items()}
    if status_problem(answer) is None:  # no map and no "not supported" either: worth a word
        result.warnings.append(
            "statuses printed no power_state map (expected "
            '{"status":"success","power_state":{"<vm name>":"poweron"}}): CloudStack falls '
            "back to `status` per VM"
        )
    return None


def whole_json(run: RunResult) -> Any:
    """The whole trimmed stdout as JSON, as CloudStack parses it (no last-line tolerance);
    NO_JSON when it is not JSON."""
    try:
        return orjson.loads(stdout_text(run))
    except orjson.JSONDecodeError:
        return NO_JSON


def console_of(run: RunResult) -> Console:
    """getInstanceConsole: fails only when `url` is missing and `host` or `port` is missing."""
    answer = whole_json(run)
    if not isinstance(answer, dict):
        raise Fallback("invalid-output", "Failed to parse output: getconsole must print JSON")
    console = answer.get("console")
    if not isinstance(console, dict):
        raise Fallback("invalid-output", "Missing console object in output")
    has_host = console.get("host") is not None and console.get("port") is not None
    if console.get("url") is None and not has_host:
        raise Fallback(
            "invalid-output",
            "Missing required fields in output: the console needs `url`, or `host` and `port`",
        )
    try:
        return Console.model_validate(console)
    except ValueError:
        raise Fallback("invalid-output", "Failed to parse output: bad console fields") from None


def prepare_patch(run: RunResult, result: OrchestratorResult, payload: Any) -> None:
    """prepareExternalProvisioning: the whole output is the merge patch (not its last line)."""
    if not stdout_text(run):
        return
    if run.stderr.strip():
        result.warnings.append(
            "prepare wrote to stderr: CloudStack merges stderr into the output it parses as "
            "the patch, so run `csext forward --no-stderr` for this extension or keep stderr empty"
        )
    answer = whole_json(run)
    if not isinstance(answer, dict):
        raise Fallback(
            "invalid-output",
            "Failed to parse VM: prepare must print nothing or one JSON object (the whole "
            "output is the merge patch)",
        )
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
