"""The circuit breaker's state machine and the recorded replies' bounds (no broker: the clock is
given, so windows and cooldowns are exact)."""

from __future__ import annotations

import asyncio

import pytest

from csext.handlers.base import Interpretation
from csext.schemas.manifest import CircuitBreakerPolicy
from csext.schemas.rpc import RpcError
from csext.schemas.run import Outcome
from csext.worker.breaker import RUN, Breaker, Released, State, breaker_report
from csext.worker.replies import RecordedReplies, reply_key

OK = Interpretation(outcome=Outcome.SUCCESS)
NO = Interpretation(outcome=Outcome.SUCCESS, result={"passed": False})
"""A "no" (2FA code wrong): an answer, not a failure."""
TIMEOUT = Interpretation(outcome=Outcome.TIMEOUT, error=RpcError(kind="timeout", message="t"))
CRASH = Interpretation(outcome=Outcome.FAILED, error=RpcError(kind="crashed", message="k"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(failures: int = 3, window: float = 30, cooldown: float = 15) -> tuple[Breaker, Clock]:
    clock = Clock()
    policy = CircuitBreakerPolicy(failures=failures, window=window, cooldown=cooldown)
    return Breaker("ext", policy, clock), clock


async def test_opens_after_failures_within_the_window_only() -> None:
    b, clock = breaker()
    b.record(RUN, TIMEOUT)
    clock.now += 31  # the first failure leaves the window
    b.record(RUN, CRASH)
    b.record(RUN, NO)
    b.record(RUN, OK)
    assert b.state is State.CLOSED
    opened = b.record(RUN, TIMEOUT)
    assert opened is None and b.state is State.CLOSED
    opened = b.record(RUN, CRASH)
    assert opened is not None and b.state is State.OPEN
    assert "3 failures within 30s" in opened.describe()
    assert b.admit() is None


async def test_one_trial_after_the_cooldown_decides() -> None:
    b, clock = breaker(failures=1, cooldown=15)
    b.record(RUN, TIMEOUT)
    clock.now += 15
    assert b.state is State.HALF_OPEN
    trial = b.admit()
    assert trial is not None and trial.trial
    assert b.admit() is None  # one trial at a time
    opened = b.record(trial, TIMEOUT)
    assert opened is not None and opened.trial and b.state is State.OPEN
    clock.now += 15
    trial = b.admit()
    assert trial is not None
    assert b.record(trial, OK) is None
    assert b.state is State.CLOSED and b.admit() is RUN


async def test_a_breaker_taken_out_of_the_manifest_lets_everything_run() -> None:
    b, _clock = breaker(failures=1)
    b.record(RUN, TIMEOUT)
    assert b.state is State.OPEN
    b.disable()
    assert b.state is State.CLOSED and b.admit() is RUN  # retries run again, no hold loop


async def test_an_abandoned_trial_lets_the_next_run_be_the_trial() -> None:
    b, clock = breaker(failures=1, cooldown=1)
    b.record(RUN, TIMEOUT)
    clock.now += 1
    trial = b.admit()
    b.abandon(trial)
    assert b.admit() is not None


async def test_held_events_wake_when_a_trial_closes_it_and_leave_on_stop() -> None:
    b, clock = breaker(failures=1, cooldown=0.05)
    b.record(RUN, TIMEOUT)
    clock.now += 1
    trial = b.admit()
    waiting = asyncio.create_task(b.wait_turn())
    await asyncio.sleep(0)
    assert not waiting.done()
    b.record(trial, OK)
    assert await asyncio.wait_for(waiting, 1) is RUN
    b.record(RUN, TIMEOUT)  # closed again: one failure opens it
    held = asyncio.create_task(b.wait_turn())
    await asyncio.sleep(0)
    b.stop()
    with pytest.raises(Released):
        await asyncio.wait_for(held, 1)


def test_breaker_report_reads_each_workers_newest_record() -> None:
    records = [
        {"worker": "a:1", "outcome": "circuit-open", "finished_at": 0, "error": "open"},
        {"worker": "b:2", "outcome": "circuit-open", "finished_at": 0, "error": "open"},
        {"worker": "a:1", "outcome": "success", "finished_at": 1},
    ]
    report = breaker_report(records)
    assert len(report) == 1 and report[0].startswith("open on b:2")
    assert breaker_report(records[:1] + records[2:]) == []


def test_recorded_replies_are_bounded_and_expire() -> None:
    clock = Clock()
    replies = RecordedReplies(max_entries=2, max_bytes=10, clock=clock)
    keys = [reply_key("ext", f"c{i}", "reply-to", b"{}") for i in range(3)]
    for key in keys:
        replies.remember(key, b"12345", deadline=clock.now + 60)
    assert replies.recorded(keys[0]) is None  # the oldest went first
    assert replies.recorded(keys[2]) == b"12345"
    assert len(replies) == 2 and replies.size == 10
    clock.now += 61
    assert replies.recorded(keys[2]) is None  # past the call's deadline
    assert reply_key("ext", "c0", "r", b"a") != reply_key("ext", "c0", "r", b"b")
