"""A circuit breaker per extension (`spec.circuitBreaker`): stop calling a backend that is down.

    closed ──(N failures within window)──► open ──(cooldown ends)──► half-open
       ▲                                     ▲                           │ one trial run
       └───────────(trial succeeds)──────────┴────(trial fails)──────────┘

A failure is what `counts_against_breaker` says: a timeout, a spawn failure, or an error the
hook reports; a "no" is an answer. Each run counts, retries included.

While open:
- RPC calls are answered at once with the hook's failure-policy answer (`circuit_open` of the
  handler: deny, no preference, the original XML, or an error) and recorded as `circuit-open`;
  in half-open the one trial call runs and the others are still answered at once.
- events are not run and not dead-lettered: the deliveries this process holds wait in
  `wait_turn` (no requeue, so no hot loop and no delivery-count increase towards the quorum
  queue's delivery limit), and because they stay unacked the broker sends no more than the
  prefetch, so the backlog waits in the queue. In half-open one of them is the trial.

State is per worker process (`csext worker --processes N` runs N breakers per extension),
which needs no coordination service (DESIGN §1: workers are stateless) and costs nothing per
run. The price: up to N x `failures` failing runs before every process has opened, and N trial
runs per cooldown (docs/reliability.md measures it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from csext.handlers.base import Interpretation, counts_against_breaker
from csext.schemas.manifest import CircuitBreakerPolicy
from csext.schemas.run import Outcome
from csext.store.registry import Extension
from csext.worker import metrics

if TYPE_CHECKING:
    from csext.worker.runtimes.execution import Executor, RunContext, RunOutcome

log = logging.getLogger(__name__)


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True, eq=False)
class Ticket:
    """Leave to start a run; the trial's ticket is one of a kind (compared by identity)."""

    trial: bool


RUN = Ticket(trial=False)
"""The ticket of every run while the breaker is closed."""


class Released(Exception):
    """The worker is stopping: a held event must go back to its queue."""


class CircuitOpen(Exception):
    """A retry would start while the breaker is open: stop retrying, hold the event."""


@dataclass(frozen=True, slots=True)
class Opened:
    """The breaker just opened (or opened again after a failed trial)."""

    failures: int
    window: float
    cooldown: float
    trial: bool

    def describe(self) -> str:
        why = (
            "the trial run failed"
            if self.trial
            else f"{self.failures} failures within {self.window:g}s"
        )
        return (
            f"circuit breaker opened ({why}): calls get the failure policy's answer and events "
            f"wait in their queue for {self.cooldown:g}s, then one trial run"
        )


class Breaker:
    """One extension's breaker in this process. Not thread-safe (one event loop)."""

    def __init__(
        self, name: str, policy: CircuitBreakerPolicy, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.policy = policy
        self._clock = clock
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._trial: Ticket | None = None
        self._changed = asyncio.Event()
        self._disabled = False
        self._stopping = False
        self.opened = 0
        """Times it opened (for the logs and tests)."""
        self.refused = 0
        """Calls answered without a run while open."""

    # -- state

    @property
    def state(self) -> State:
        if self._opened_at is None or self._disabled:
            return State.CLOSED
        if self._clock() - self._opened_at < self.policy.cooldown:
            return State.OPEN
        return State.HALF_OPEN

    def cooldown_left(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.policy.cooldown - self._clock())

    def admit(self) -> Ticket | None:
        """RUN or TRIAL when a run may start now; None when it must not (open, or a trial is
        already running)."""
        if self._disabled:
            return RUN
        state = self.state
        if state is State.CLOSED:
            return RUN
        if state is State.HALF_OPEN and self._trial is None:
            self._trial = Ticket(trial=True)
            return self._trial
        return None

    async def wait_turn(self) -> Ticket:
        """For events: wait until a run may start. Raises Released when the worker stops."""
        while True:
            if self._stopping:
                raise Released(self.name)
            admission = self.admit()
            if admission is not None:
                return admission
            changed = self._changed
            left = self.cooldown_left()
            try:
                async with asyncio.timeout(left if left > 0 else None):
                    await changed.wait()
            except TimeoutError:
                pass

    # -- outcomes

    def record(self, ticket: Ticket | None, interpretation: Interpretation) -> Opened | None:
        """Count one finished run; an `Opened` when this run opened the breaker."""
        trial = ticket is not None and ticket is self._trial
        if counts_against_breaker(interpretation):
            return self._failed(trial)
        if trial or self.state is State.HALF_OPEN:
            self._close()
        return None

    def abandon(self, ticket: Ticket | None) -> None:
        """Call when the run of `ticket` is over: a trial that ended without a verdict (bad
        input, cancelled) lets the next run be the trial."""
        if ticket is not None and ticket is self._trial:
            self._trial = None
            self._notify()

    def _failed(self, trial: bool) -> Opened | None:
        now = self._clock()
        state = self.state
        if trial or state is State.HALF_OPEN:
            return self._open(now, trial=True)
        if state is State.OPEN:
            return None  # a run started before it opened; the cooldown stands
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.policy.window:
            self._failures.popleft()
        if len(self._failures) >= self.policy.failures:
            return self._open(now, trial=False)
        return None

    def _open(self, now: float, *, trial: bool) -> Opened:
        self._opened_at = now
        self._trial = None
        self._failures.clear()
        self.opened += 1
        opened = Opened(self.policy.failures, self.policy.window, self.policy.cooldown, trial)
        log.warning(
            "extension %s: %s", self.name, opened.describe(), extra={"extension": self.name}
        )
        metrics.circuit_changed(self.name, True)
        self._notify()
        return opened

    def _close(self) -> None:
        if self._opened_at is None:
            return
        self._opened_at = None
        self._trial = None
        self._failures.clear()
        log.info("extension %s: circuit breaker closed (trial run succeeded)", self.name)
        metrics.circuit_changed(self.name, False)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def disable(self) -> None:
        """The breaker left the manifest: held events run."""
        self._disabled = True
        if self._opened_at is not None:
            metrics.circuit_changed(self.name, False)
        self._notify()

    def stop(self) -> None:
        """The worker is stopping: held events go back to their queue (`Released`)."""
        self._stopping = True
        self._notify()


async def run_counted(
    executor: Executor,
    ext: Extension,
    ctx: RunContext,
    breaker: Breaker | None,
    ticket: Ticket | None,
) -> RunOutcome:
    """Run once; count the run on the breaker and record the moment it opens (a run record
    with outcome `circuit-open`, so `csext runs` / `csext show` tell when and why)."""
    outcome = await executor.execute(ext, ctx)
    if breaker is not None:
        opened = breaker.record(ticket, outcome.interpretation)
        if opened is not None:
            await executor.record_unrun(ext, ctx, Outcome.CIRCUIT_OPEN, opened.describe())
    return outcome


class Breakers:
    """The breakers of this process, by extension; None for extensions without one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_name: dict[str, Breaker] = {}
        self._stopping = False

    def of(self, ext: Extension) -> Breaker | None:
        policy = ext.spec.circuit_breaker
        breaker = self._by_name.get(ext.name)
        if policy is None or self._stopping:
            if breaker is not None:  # taken out of the manifest: let held events run
                del self._by_name[ext.name]
                breaker.disable()
            return None
        if breaker is None:
            breaker = self._by_name[ext.name] = Breaker(ext.name, policy, self._clock)
        elif breaker.policy != policy:
            breaker.policy = policy  # a changed manifest keeps the state, with the new limits
        return breaker

    def states(self) -> dict[str, State]:
        return {name: breaker.state for name, breaker in self._by_name.items()}

    def release_all(self) -> None:
        """Shutdown: held events go back to their queues instead of waiting out the grace."""
        self._stopping = True
        for breaker in self._by_name.values():
            breaker.stop()


def breaker_report(records: list[dict[str, Any]]) -> list[str]:
    """What run records (oldest first) say about the breakers, one line per worker process
    whose newest record is `circuit-open` (its breaker is open or waits for a trial run);
    empty when every process's newest record is an ordinary run (closed). For `csext show`:
    breakers live in the workers, and their records are what any host can read."""
    newest: dict[str, dict[str, Any]] = {}
    for record in records:
        newest[str(record.get("worker", "?"))] = record
    lines = []
    for worker, record in sorted(newest.items()):
        if record.get("outcome") == Outcome.CIRCUIT_OPEN.value:
            when = time.strftime("%H:%M:%S", time.gmtime(float(record.get("finished_at") or 0)))
            lines.append(f"open on {worker} (at {when} UTC: {record.get('error') or ''})")
    return lines
