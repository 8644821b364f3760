"""The `deployment-planner` hook: can this planner handle a VM, and which clusters first.

`can-handle`: the exit code answers (success = yes, failure = no); a JSON `can_handle` refines
a success. `order-clusters`: stdout is a JSON list of ids, a JSON object with `clusters` (or
`cluster_ids`), or ids separated by spaces, commas or newlines; empty, `null` or `[]` means
no preference. Ids in the avoid list are dropped (with a warning), duplicates too.

Failure policy: fail-open — on timeout, crash, a failing exit or garbage, `can-handle` answers
no and `order-clusters` answers no preference, so CloudStack plans as it would without the
extension; `error` is also allowed.
"""

from __future__ import annotations

import re
from typing import Any

from csext.schemas.hooks.common import FailurePolicy, HookResult, Meaning
from csext.schemas.hooks.deployment_planner import (
    ACTIONS,
    DeploymentPlannerInput,
    DeploymentPlannerResult,
)
from csext.schemas.manifest import HookType
from csext.schemas.run import RunResult

from .base import (
    NO_JSON,
    Fallback,
    HookDefaults,
    TypedHandler,
    failed,
    parse_json,
    stdout_text,
    truthy,
)

_IDS = re.compile(r"^\s*\d+(\s*[,\s]\s*\d+)*\s*$")


class DeploymentPlannerHandler(TypedHandler):
    hook = HookType.DEPLOYMENT_PLANNER
    defaults = HookDefaults(
        timeout=10.0,
        attempts=1,
        failure_policies=(FailurePolicy.FAIL_OPEN, FailurePolicy.ERROR),
    )
    input_model = DeploymentPlannerInput
    result_model = DeploymentPlannerResult
    actions = ACTIONS
    read_only_actions = frozenset({"can-handle", "order-clusters"})

    def parse(self, action: str, meaning: Meaning, run: RunResult, payload: Any) -> HookResult:
        text = stdout_text(run)
        answer = parse_json(text)
        if action == "can-handle":
            if meaning not in (Meaning.SUCCESS, Meaning.FAILURE):
                raise failed(meaning, run)
            said = answer.get("can_handle", True) if isinstance(answer, dict) else True
            return DeploymentPlannerResult(can_handle=meaning == Meaning.SUCCESS and truthy(said))
        if meaning != Meaning.SUCCESS:
            raise failed(meaning, run)
        ids = cluster_ids_of(text, answer)
        if not ids:
            return DeploymentPlannerResult(no_preference=True)
        return without_avoided(ids, payload)

    def fallback_result(
        self, action: str, payload: Any, policy: FailurePolicy
    ) -> HookResult | None:
        if action == "can-handle":
            return DeploymentPlannerResult(can_handle=False)
        return DeploymentPlannerResult(no_preference=True)


def cluster_ids_of(text: str, answer: Any) -> list[int]:
    """The ids printed, in order; [] for no preference. Fallback when it is not a list of ids."""
    if _IDS.match(text):
        return [int(item) for item in re.split(r"[,\s]+", text.strip())]
    if isinstance(answer, dict):
        answer = answer.get("clusters", answer.get("cluster_ids"))
    if answer is None or (answer is NO_JSON and not text):
        return []
    if answer is NO_JSON:
        raise Fallback("invalid-output", "order-clusters must print cluster ids, e.g. [3, 1]")
    if not isinstance(answer, list):
        raise Fallback("invalid-output", "order-clusters must print a list of cluster ids")
    try:
        return [int(str(item)) for item in answer]
    except ValueError:
        message = f"cluster ids must be integers, got {answer!r:.80}"
        raise Fallback("invalid-output", message) from None


def without_avoided(ids: list[int], payload: Any) -> DeploymentPlannerResult:
    avoid: set[int] = set()
    if isinstance(payload, dict):
        try:
            avoid = set(DeploymentPlannerInput.model_validate(payload).avoid.clusters)
        except ValueError:
            avoid = set()
    kept = [i for i in dict.fromkeys(ids) if i not in avoid]
    result = DeploymentPlannerResult(cluster_ids=kept, no_preference=not kept)
    dropped = sorted(set(ids) & avoid)
    if dropped:
        result.warnings.append(f"dropped clusters in the avoid list: {dropped}")
    return result


HANDLER = DeploymentPlannerHandler()
