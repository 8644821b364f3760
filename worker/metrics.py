"""Prometheus metrics of the worker: what runs, how long it takes, what fails.

Every metric is named and documented in docs/operations.md. Labels are bounded: extension,
hook, outcome, runtime, a dead-letter reason, a stream or a signal name; never a run, VM or
call id (one series per run would grow Prometheus without bound).

Cost on the hot path: the label children of an extension are bound once (`RunMetrics.bind`,
cached by extension name and rebuilt only when its hook or runtime changes), so a run costs a
dict lookup and a few `inc`/`observe` calls on pre-bound children, no label lookups and no
allocations beyond prometheus_client's own. bench/ measures it (BENCHMARKS.md).

Pools (`csext worker --processes N`) use prometheus_client's multiprocess mode: the supervisor
gives every child the same `PROMETHEUS_MULTIPROC_DIR` and serves the merged view (see
worker/health.py), so one scrape sees the whole pool. That is why gauges declare a
`multiprocess_mode` and why the registry commit is a gauge, not an `Info` (multiprocess mode
has no Info).
"""

from __future__ import annotations

import signal
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from prometheus_client import Counter, Gauge, Histogram

from csext.schemas.run import Outcome, RunResult

if TYPE_CHECKING:
    from csext.store.registry import Extension
    from csext.worker.amqp.delivery import Incoming

BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    14400.0,
    86400.0,
)
"""Seconds: millisecond RPC hooks (2FA, planners) up to the longest allowed timeout (86400 s,
schemas/manifest.py), so p99 over a deadline is never hidden in `+Inf` (kubernetes#100871)."""

EXT = ("extension", "hook")

RUNS = Counter("csext_runs", "Extension runs, by outcome.", [*EXT, "outcome"])
RUN_SECONDS = Histogram(
    "csext_run_duration_seconds", "Run time of an extension run.", EXT, buckets=BUCKETS
)
QUEUE_WAIT = Histogram(
    "csext_queue_wait_seconds",
    "Publish to start of handling, from the message's timestamp_in_ms header or AMQP timestamp "
    "(messages without one are not counted).",
    EXT,
    buckets=BUCKETS,
)
SPAWN_SECONDS = Histogram(
    "csext_spawn_seconds",
    "Time to start an extension process (exec: every run; coprocess: every warm process).",
    ["extension", "runtime"],
    buckets=BUCKETS,
)
REPLY_SECONDS = Histogram(
    "csext_reply_latency_seconds",
    "RPC: call received by the worker to reply published.",
    EXT,
    buckets=BUCKETS,
)
TIMEOUTS = Counter("csext_timeouts", "Runs stopped at their deadline.", EXT)
KILLS = Counter(
    "csext_kills", "Runs whose process ended on a signal (deadline, OOM, ...).", [*EXT, "signal"]
)
RETRIES = Counter("csext_retries", "Runs that were a second or later attempt.", EXT)
TRUNCATIONS = Counter(
    "csext_truncations", "Runs whose stdout or stderr went over output_cap.", [*EXT, "stream"]
)
IN_FLIGHT = Gauge("csext_in_flight", "Runs in progress.", EXT, multiprocess_mode="livesum")
DEAD_LETTERS = Counter(
    "csext_dead_letters", "Messages the worker dead-lettered, by reason.", ["extension", "reason"]
)
COPROCESS_STARTS = Counter("csext_coprocess_starts", "Warm processes started.", ["extension"])
COPROCESS_CRASHES = Counter(
    "csext_coprocess_crashes",
    "Warm processes that died, broke the protocol or could not start.",
    ["extension"],
)
COPROCESS_RECYCLES = Counter(
    "csext_coprocess_recycles", "Warm processes retired (max_requests, max_rss_mb).", ["extension"]
)
RELOADS = Counter("csext_reloads", "Registry reloads (reconciles) after the first.")
REGISTRY_INFO = Gauge(
    "csext_registry_info",
    "1 for the registry commit loaded (0 for one loaded before in this process).",
    ["commit"],
    multiprocess_mode="livemax",
)
BROKER_CONNECTED = Gauge(
    "csext_broker_connected", "1 while connected to RabbitMQ.", multiprocess_mode="livemin"
)
READY = Gauge(
    "csext_worker_ready",
    "1 while connected and consuming every enabled extension's queues.",
    multiprocess_mode="liveall",
)
EXTENSIONS_ENABLED = Gauge(
    "csext_extensions_enabled", "Enabled extensions in the registry.", multiprocess_mode="livemax"
)
EXTENSIONS_CONSUMING = Gauge(
    "csext_extensions_consuming",
    "Enabled extensions whose queues this worker consumes.",
    multiprocess_mode="livemin",
)
EXTENSION_TIMEOUT = Gauge(
    "csext_extension_timeout_seconds",
    "Each enabled extension's run timeout (spec.timeout or the hook's default), for alerts on "
    "run time against the deadline.",
    ["extension"],
    multiprocess_mode="livemax",
)
DEAD_LETTER_QUEUE = Gauge(
    "csext_dead_letter_queue_messages",
    "Messages waiting in csext.dead (worker and broker dead letters).",
    multiprocess_mode="livemostrecent",
)
CIRCUIT_OPEN = Gauge(
    "csext_circuit_open",
    "1 while the extension's circuit breaker is open or waits for its trial run (a pool: the "
    "number of its processes with an open breaker).",
    ["extension"],
    multiprocess_mode="livesum",
)
CIRCUIT_OPENED = Counter(
    "csext_circuit_opened",
    "Times a circuit breaker opened (after a failed trial too).",
    ["extension"],
)
REPLIES_REPLAYED = Counter(
    "csext_replies_replayed",
    "Redelivered RPC calls answered with their recorded reply instead of a second run.",
    ["extension"],
)
PUBLISH_BLOCKED = Gauge(
    "csext_publish_blocked",
    "1 while RabbitMQ blocks this worker's publishing (a memory or disk alarm).",
    multiprocess_mode="livemax",
)


class Tally:
    """A counter child's increments, kept in a plain int until the next flush."""

    __slots__ = ("child", "n")

    def __init__(self, child: Counter) -> None:
        self.child = child
        self.n = 0

    def flush(self) -> None:
        if self.n:
            n, self.n = self.n, 0
            self.child.inc(n)


class Tallies:
    """A histogram child's observations, kept in plain lists until the next flush: a bisect and
    two additions per observation instead of prometheus_client's locked increments."""

    __slots__ = ("child", "counts", "total")

    def __init__(self, child: Histogram) -> None:
        self.child = child
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS, value)] += 1
        self.total += value

    def flush(self) -> None:
        """Add what was observed to the child's (non-cumulative) buckets and sum."""
        counts = self.counts
        if not any(counts):
            return
        self.counts = [0] * len(counts)
        buckets = self.child._buckets  # prometheus_client has no public bulk add
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)
        self.child._sum.inc(self.total)
        self.total = 0.0


class BoundMetrics:
    """One extension's label children, bound once (see the module docstring).

    Per run only plain Python attributes change (`flying`, the tallies); `flush`, called on the
    event loop about once a second and at shutdown, moves them into prometheus_client. So a
    scrape is at most a second behind, and the hot path takes no lock and, in a pool, writes
    no mmap file.
    """

    __slots__ = (
        "extension",
        "flying",
        "hook",
        "in_flight",
        "kills",
        "queue_wait",
        "reply",
        "retries",
        "run_seconds",
        "runs",
        "runtime",
        "spawn",
        "stderr_truncated",
        "stdout_truncated",
        "timeouts",
    )

    def __init__(self, extension: str, hook: str, runtime: str) -> None:
        self.extension, self.hook, self.runtime = extension, hook, runtime
        self.runs = {o.value: Tally(RUNS.labels(extension, hook, o.value)) for o in Outcome}
        self.run_seconds = Tallies(RUN_SECONDS.labels(extension, hook))
        self.queue_wait = Tallies(QUEUE_WAIT.labels(extension, hook))
        self.reply = Tallies(REPLY_SECONDS.labels(extension, hook))
        self.spawn = Tallies(SPAWN_SECONDS.labels(extension, runtime))
        self.timeouts = Tally(TIMEOUTS.labels(extension, hook))
        self.retries = Tally(RETRIES.labels(extension, hook))
        self.stdout_truncated = Tally(TRUNCATIONS.labels(extension, hook, "stdout"))
        self.stderr_truncated = Tally(TRUNCATIONS.labels(extension, hook, "stderr"))
        self.in_flight = IN_FLIGHT.labels(extension, hook)
        self.flying = 0
        """Runs in progress; `csext_in_flight` at the next flush."""
        self.kills: dict[int, Counter] = {}

    def finished(self, run: RunResult, outcome: str, attempt: int) -> None:
        """Count one finished run (called once per run, after it was interpreted)."""
        self.runs[outcome].n += 1
        self.run_seconds.observe(run.duration_ms / 1000.0)
        if attempt > 1:
            self.retries.n += 1
        if run.timed_out:
            self.timeouts.n += 1
        code = run.exit_code
        if code is not None and code < 0:
            self._killed(-code)
        if run.stdout_truncated:
            self.stdout_truncated.n += 1
        if run.stderr_truncated:
            self.stderr_truncated.n += 1

    def _killed(self, signum: int) -> None:
        child = self.kills.get(signum)
        if child is None:
            try:
                name = signal.Signals(signum).name
            except ValueError:
                name = str(signum)
            child = self.kills[signum] = KILLS.labels(self.extension, self.hook, name)
        child.inc()

    def flush(self) -> None:
        for tally in self.runs.values():
            tally.flush()
        for tallies in (self.run_seconds, self.queue_wait, self.reply, self.spawn):
            tallies.flush()
        for one in (self.timeouts, self.retries, self.stdout_truncated, self.stderr_truncated):
            one.flush()
        self.in_flight.set(self.flying)


class RunMetrics:
    """The worker's handle on the run metrics; `None` in its place means metrics are off."""

    def __init__(self) -> None:
        self._bound: dict[str, BoundMetrics] = {}
        self._by_ext: dict[str, tuple[Extension, BoundMetrics]] = {}
        self._retired: list[BoundMetrics] = []

    def of(self, ext: Extension) -> BoundMetrics:
        """The extension's children: a dict lookup and an identity check per run (a reload
        makes a new Extension object, looked up once)."""
        cached = self._by_ext.get(ext.name)
        if cached is not None and cached[0] is ext:
            return cached[1]
        bound = self.bind(ext.name, ext.hook.value, ext.spec.runtime.value)
        self._by_ext[ext.name] = (ext, bound)
        return bound

    def bind(self, extension: str, hook: str, runtime: str) -> BoundMetrics:
        bound = self._bound.get(extension)
        if bound is None or bound.hook != hook or bound.runtime != runtime:
            if bound is not None:
                self._retired.append(bound)  # its last tallies still get flushed
            bound = self._bound[extension] = BoundMetrics(extension, hook, runtime)
        return bound

    def flush(self) -> None:
        """Move every tally into prometheus_client (on the event loop: the tallies have no
        lock, so nothing else may touch them)."""
        retired, self._retired = self._retired, []
        for bound in (*retired, *self._bound.values()):
            bound.flush()

    def received(self, ext: Extension, message: Incoming) -> None:
        """A delivery reached the worker: its queue wait, when it says when it was sent."""
        wait = queue_wait_seconds(message.headers, message.timestamp, time.time())
        if wait is not None:
            self.of(ext).queue_wait.observe(wait)

    def spawn_observer(self) -> Callable[[str, float], None]:
        """For the exec runner: `(extension, seconds)` after each spawn."""
        children: dict[str, Histogram] = {}
        bound_to = self._bound

        def observe(extension: str, seconds: float) -> None:
            bound = bound_to.get(extension)
            if bound is not None:
                bound.spawn.observe(seconds)
                return
            child = children.get(extension)
            if child is None:
                child = children[extension] = SPAWN_SECONDS.labels(extension, "exec")
            child.observe(seconds)

        return observe


def queue_wait_seconds(headers: object, timestamp: object, now: float) -> float | None:
    """Seconds since the message was published, if it says when: RabbitMQ's `timestamp_in_ms`
    header (set by its message interceptors or the message_timestamp plugin) or the AMQP
    `timestamp` property (whole seconds). None when neither is there."""
    if isinstance(headers, dict):
        millis = headers.get("timestamp_in_ms")
        if isinstance(millis, int) and not isinstance(millis, bool):
            return max(0.0, now - millis / 1000.0)
    stamp = getattr(timestamp, "timestamp", None)
    if stamp is not None:
        return max(0.0, now - float(stamp()))
    return None


def circuit_changed(extension: str, is_open: bool) -> None:
    CIRCUIT_OPEN.labels(extension).set(1 if is_open else 0)
    if is_open:
        CIRCUIT_OPENED.labels(extension).inc()


def reply_replayed(extension: str) -> None:
    REPLIES_REPLAYED.labels(extension).inc()


def publish_blocked(blocked: bool) -> None:
    PUBLISH_BLOCKED.set(1 if blocked else 0)


def dead_lettered(extension: str, reason: str) -> None:
    DEAD_LETTERS.labels(extension, reason).inc()


def coprocess_started(extension: str, seconds: float) -> None:
    COPROCESS_STARTS.labels(extension).inc()
    SPAWN_SECONDS.labels(extension, "coprocess").observe(seconds)


def coprocess_crashed(extension: str) -> None:
    COPROCESS_CRASHES.labels(extension).inc()


def coprocess_recycled(extension: str) -> None:
    COPROCESS_RECYCLES.labels(extension).inc()


class RegistryState:
    """`csext_registry_info` and `csext_reloads`: the commit loaded, how often reloaded."""

    def __init__(self) -> None:
        self._commit: str | None = None
        self._loads = 0

    def loaded(self, commit: str | None) -> None:
        self._loads += 1
        if self._loads > 1:
            RELOADS.inc()
        commit = commit or "none"
        if commit == self._commit:
            return
        if self._commit is not None:
            REGISTRY_INFO.labels(self._commit).set(0)
        REGISTRY_INFO.labels(commit).set(1)
        self._commit = commit
