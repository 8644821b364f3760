"""The `network-orchestrator` hook: CloudStack's NetworkOrchestrator commands.

The payload file is the envelope exactly as the caller sent it (validated, not rewritten), so a
script written for CloudStack (e.g. cloudstack-extensions' network-namespace.sh) runs unchanged;
validation accepts `fw_rules`/`acl_rules`/`vm_data`/`restore_data` nested or base64-encoded and
numbers as strings. Results follow NetworkExtensionElement's later revision:

- exit code non-zero, or a JSON answer whose `status` is not `success`: failure;
- `ensure-network-device`: stdout must be one JSON object (CloudStack stores it verbatim and
  passes it back as `network-extension-details`);
- `implement-network`: `network.broadcast_uri` / `network.broadcast_domain_type` are picked up;
- `custom-action`: the whole stdout goes back to the API caller.

Failure policy: error.
"""

from __future__ import annotations

from typing import Any

import orjson

from csext.schemas.hooks.common import FailurePolicy, HookResult, Meaning
from csext.schemas.hooks.network_orchestrator import (
    NetworkOrchestratorInput,
    NetworkOrchestratorResult,
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
)


class NetworkOrchestratorHandler(TypedHandler):
    hook = HookType.NETWORK_ORCHESTRATOR
    defaults = HookDefaults(timeout=60.0, attempts=1, failure_policies=(FailurePolicy.ERROR,))
    input_model = NetworkOrchestratorInput
    result_model = NetworkOrchestratorResult

    def check_action(self, action: str) -> str:
        # CloudStack's command set changes between revisions: unknown commands pass through.
        return action.strip().lower()

    def payload_bytes(self, action: str, payload: Any, spec: Spec) -> bytes:
        self.validate(action, payload)
        return orjson.dumps(payload)

    def parse(self, action: str, meaning: Meaning, run: RunResult, payload: Any) -> HookResult:
        answer = stdout_object(run)
        if meaning != Meaning.SUCCESS:
            raise failed(meaning, run, answer)
        problem = status_problem(answer)
        if problem:
            raise Fallback("failed", f"exit code 0 but {problem}")
        result = NetworkOrchestratorResult(
            status=str(answer["status"]) if answer and "status" in answer else None,
            message=answer.get("message") if answer else None,
        )
        if action == "ensure-network-device":
            result.device_details = device_details_of(run, result)
        elif action == "implement-network" and answer:
            result.broadcast_uri = _dotted(answer, "network.broadcast_uri")
            result.broadcast_domain_type = _dotted(answer, "network.broadcast_domain_type")
        elif action == "custom-action":
            result.output = stdout_text(run)
        return result


def device_details_of(run: RunResult, result: NetworkOrchestratorResult) -> dict[str, Any]:
    text = stdout_text(run)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise Fallback(
            "invalid-output",
            "ensure-network-device must print exactly one JSON object (nothing else on stdout)",
        )
    if "\n" in text:
        result.warnings.append("ensure-network-device should print its JSON on one line")
    return value


def _dotted(answer: dict[str, Any], key: str) -> str | None:
    """`network.broadcast_uri` as a flat key, or nested as {"network": {"broadcast_uri"}}."""
    if key in answer:
        return str(answer[key])
    head, _, tail = key.partition(".")
    nested = answer.get(head)
    if isinstance(nested, dict) and tail in nested:
        return str(nested[tail])
    return None


HANDLER = NetworkOrchestratorHandler()
