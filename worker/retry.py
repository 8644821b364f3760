"""The retry loop both flows share: tenacity, exponential backoff with jitter, two bounds.

A run is retried while its interpretation says so, up to the policy's attempts, and only while
a retry can still *start* in time: `spec.retry.maxElapsed` ("seconds from the first attempt
after which no retry starts") and, for RPC calls, the caller's deadline. `stop_before_delay`
checks the elapsed time plus the coming wait, so no retry begins past either bound (tenacity's
`stop_after_delay` only looks back, and would start one more retry after the bound).

The first run is not wrapped: most runs need no retry, and setting up tenacity costs more than
the rest of the event path. When it asks for a retry, it is replayed as tenacity's first attempt
so that waits, attempts and elapsed time count as if it ran inside the loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from csext.schemas.errors import RetryableRun
from csext.schemas.manifest import RetryPolicy
from csext.worker.runtimes.execution import RunOutcome


def retrying(
    policy: RetryPolicy, attempts: int, elapsed: float = 0.0, budget: float | None = None
) -> AsyncRetrying:
    """The loop for runs 1..`attempts`, `elapsed` seconds after the first one started.

    `budget`: seconds from now within which a retry must start (the caller's deadline, less
    the time a run needs at least); None for events, which have no caller waiting.
    """
    window = policy.max_elapsed - elapsed
    if budget is not None:
        window = min(window, budget)
    return AsyncRetrying(
        stop=stop_after_attempt(attempts) | stop_before_delay(max(0.0, window)),
        wait=wait_exponential_jitter(
            multiplier=policy.backoff.initial,
            max=policy.backoff.max,
            exp_base=policy.backoff.multiplier,
            jitter=policy.backoff.jitter,
        ),
        retry=retry_if_exception_type(RetryableRun),
        reraise=True,
    )


async def retry_runs(
    policy: RetryPolicy,
    attempts: int,
    first: RunOutcome,
    run: Callable[[int], Awaitable[RunOutcome]],
    *,
    elapsed: float,
    budget: float | None = None,
) -> RunOutcome:
    """Runs 2..`attempts` after `first` asked for a retry; the last outcome.

    `run(n)` performs attempt n (2, 3, ...). The result still asks for a retry when the
    attempts or the time ran out: the caller decides what that means (dead letter, error reply).
    """
    last = first
    replay = True
    try:
        async for attempt in retrying(policy, attempts, elapsed, budget):
            with attempt:
                if not replay:
                    last = await run(attempt.retry_state.attempt_number)
                replay = False
                if last.interpretation.retry:
                    raise RetryableRun(last.run_id)
    except RetryableRun:
        pass
    return last
