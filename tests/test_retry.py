"""The shared retry loop (worker/retry.py): attempts, jitter, and the two time bounds.

The bounds are checked by counting runs, not by timing them: a retry that would *start* past
`maxElapsed` or the caller's budget must not run at all (tenacity's stop_after_delay would
start one more after the bound; stop_before_delay does not).
"""

from __future__ import annotations

from tenacity import RetryCallState

from csext.handlers.base import Interpretation
from csext.schemas.manifest import RetryPolicy
from csext.schemas.run import Outcome, RunResult
from csext.worker.retry import retry_runs, retrying
from csext.worker.runtimes.execution import RunOutcome


def _outcome(retry: bool) -> RunOutcome:
    outcome = Outcome.SUCCESS if not retry else Outcome.FAILED
    return RunOutcome(
        RunResult(exit_code=0 if not retry else 75), Interpretation(outcome, retry), "r"
    )


def _policy(**retry: object) -> RetryPolicy:
    return RetryPolicy.model_validate(retry)


async def _count_runs(policy: RetryPolicy, attempts: int, budget: float | None = None) -> list[int]:
    started: list[int] = []

    async def run(attempt: int) -> RunOutcome:
        started.append(attempt)
        return _outcome(retry=True)

    last = await retry_runs(policy, attempts, _outcome(retry=True), run, elapsed=0.0, budget=budget)
    assert last.interpretation.retry  # still failing: the caller dead-letters or replies an error
    return started


async def test_attempts_bound_the_runs() -> None:
    policy = _policy(attempts=3, backoff={"initial": 0.01, "max": 0.01, "jitter": 0})
    assert await _count_runs(policy, 3) == [2, 3]


async def test_no_retry_starts_after_max_elapsed() -> None:
    # Waits of 0.4 s: run 2 starts at ~0.4 s, run 3 would start at ~0.8 s, past maxElapsed 0.6.
    policy = _policy(
        attempts=10,
        maxElapsed=0.6,
        backoff={"initial": 0.4, "max": 0.4, "multiplier": 1, "jitter": 0},
    )
    assert await _count_runs(policy, 10) == [2]


async def test_no_retry_starts_after_the_callers_budget() -> None:
    policy = _policy(
        attempts=10, backoff={"initial": 0.4, "max": 0.4, "multiplier": 1, "jitter": 0}
    )
    assert await _count_runs(policy, 10, budget=0.6) == [2]
    assert await _count_runs(policy, 10, budget=0.1) == []


async def test_a_successful_retry_ends_the_loop() -> None:
    policy = _policy(attempts=5, backoff={"initial": 0.01, "max": 0.01, "jitter": 0})
    runs: list[int] = []

    async def run(attempt: int) -> RunOutcome:
        runs.append(attempt)
        return _outcome(retry=attempt < 3)

    last = await retry_runs(policy, 5, _outcome(retry=True), run, elapsed=0.0)
    assert runs == [2, 3]
    assert not last.interpretation.retry


def test_backoff_jitter_is_applied() -> None:
    policy = _policy(backoff={"initial": 0.1, "max": 10, "multiplier": 2, "jitter": 0.5})
    loop = retrying(policy, 5)
    state = RetryCallState(loop, fn=None, args=(), kwargs={})
    state.attempt_number = 2
    waits = [loop.wait(state) for _ in range(50)]
    assert all(0.2 <= w <= 0.7 for w in waits)  # 0.1 x 2^1, plus up to 0.5 of jitter
    assert len({round(w, 6) for w in waits}) > 1
