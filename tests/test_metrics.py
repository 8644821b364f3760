"""/metrics of a real two-process worker pool, scraped over HTTP after real runs.

Successful, failing, retried, timed-out (killed), truncated and dead-lettered event runs, exec
and coprocess RPC calls: every counter and histogram must move by exactly what was done, in one
scrape of the supervisor's port (prometheus_client multiprocess mode), and both children must
report themselves ready in it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import aio_pika
import pytest
from obskit import aget, free_port, scrape, value
from workerkit import (
    consumers_at_least,
    delete_extension_queues,
    settings_for,
    start_worker_process,
    stop_process,
    wait_until,
    write_extension,
)

from csext.schemas.event import build_routing_key
from csext.worker.amqp import names as c
from csext.worker.amqp.rpc_client import RpcClient
from csext.worker.metrics import BoundMetrics, RunMetrics, queue_wait_seconds

pytestmark = pytest.mark.broker

FLAKY = '#!/bin/sh\n[ "$CSEXT_ATTEMPT" = 1 ] && exit 75\nexit 0\n'
BIG = "#!/bin/sh\nhead -c 5000 /dev/zero | tr '\\0' x\n"
COPROCESS = """#!/usr/bin/python3
import json, sys
for line in sys.stdin:
    req = json.loads(line)
    print(json.dumps({"id": req["id"], "exit_code": 0, "stdout": "ok"}), flush=True)
"""
FAST_RETRY = {"attempts": 3, "backoff": {"initial": 0.05, "jitter": 0}}
NO_RETRY = {"attempts": 1}
TWO_TRIES = {"attempts": 2, "backoff": {"initial": 0.05, "jitter": 0}}


def _event_extension(registry: Path, name: str, tag: str, script: str, **spec: object) -> str:
    key = build_routing_key("ActionEvent", tag, "VirtualMachine", "vm-1")
    pattern = ".".join(key.split(".")[:3]) + ".#"
    write_extension(registry, name, script, patterns=[pattern], spec=dict(spec))
    return key


async def _publish(amqp_url: str, exchange: str, key: str, count: int) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        for i in range(count):
            message = aio_pika.Message(
                b'{"n": %d}' % i,
                content_type="text/plain",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                timestamp=dt.datetime.now(dt.UTC),
            )
            await ex.publish(message, key)


async def test_pool_metrics_move_as_runs_happen(tmp_path: Path, amqp_url: str, unique: str):
    registry = tmp_path / "registry"
    names = {k: f"{unique}-{k}" for k in ("ok", "bad", "flaky", "slow", "big", "echo", "co")}
    keys = {
        "ok": _event_extension(registry, names["ok"], f"{unique}.OK", "#!/bin/sh\nexit 0\n"),
        "bad": _event_extension(
            registry, names["bad"], f"{unique}.BAD", "#!/bin/sh\nexit 3\n", retry=TWO_TRIES
        ),
        "flaky": _event_extension(
            registry, names["flaky"], f"{unique}.FL", FLAKY, retry=FAST_RETRY
        ),
        "slow": _event_extension(
            registry,
            names["slow"],
            f"{unique}.SLOW",
            "#!/bin/sh\nsleep 30\n",
            timeout=0.5,
            retry=NO_RETRY,
        ),
        "big": _event_extension(registry, names["big"], f"{unique}.BIG", BIG),
    }
    write_extension(
        registry,
        names["echo"],
        '#!/bin/sh\necho \'{"status":"success"}\'\n',
        hook="orchestrator",
        patterns=[],
    )
    write_extension(
        registry,
        names["co"],
        COPROCESS,
        hook="orchestrator",
        patterns=[],
        spec={"runtime": "coprocess"},
    )
    settings = settings_for(amqp_url, registry, f"{unique}-ex", tmp_path)
    port = free_port()
    pool = start_worker_process(
        settings, processes=2, CSEXT_METRICS_PORT=str(port), CSEXT_OUTPUT_CAP="1024"
    )
    try:

        async def ready() -> bool:
            status, _ = await aget(f"http://127.0.0.1:{port}/readyz")
            return status == 200

        await wait_until(ready, 60, "the pool's /readyz")
        for name in names.values():
            await wait_until(
                lambda q=c.rpc_queue(name): consumers_at_least(amqp_url, q, 2), 30, "consumers"
            )
        counts = {"ok": 3, "bad": 2, "flaky": 2, "slow": 1, "big": 1}
        for kind, count in counts.items():
            await _publish(amqp_url, settings.cloudstack_exchange, keys[kind], count)
        async with RpcClient(amqp_url) as client:
            for _ in range(3):
                assert (await client.call(names["echo"], "status", timeout=20)).exit_code == 0
                assert (await client.call(names["co"], "status", timeout=20)).exit_code == 0

        def runs(kind: str, outcome: str, samples: list) -> float:
            return value(samples, "csext_runs_total", extension=names[kind], outcome=outcome)

        async def settled() -> bool:
            s = await scrape(port)
            return (
                runs("ok", "success", s) == 3
                and value(s, "csext_dead_letters_total", extension=names["bad"]) == 2
                and runs("flaky", "success", s) == 2
                and value(s, "csext_dead_letters_total", extension=names["slow"]) == 1
                and runs("big", "success", s) == 1
            )

        await wait_until(settled, 60, "every run counted")
        s = await scrape(port)

        assert runs("ok", "success", s) == 3 and runs("ok", "failed", s) == 0
        assert value(s, "csext_run_duration_seconds_count", extension=names["ok"]) == 3
        assert value(s, "csext_queue_wait_seconds_count", extension=names["ok"]) == 3
        assert value(s, "csext_spawn_seconds_count", extension=names["ok"], runtime="exec") == 3

        assert runs("bad", "failed", s) == 4, "2 events x 2 attempts"
        assert value(s, "csext_retries_total", extension=names["bad"]) == 2
        bad = {"extension": names["bad"], "reason": "retries-exhausted"}
        assert value(s, "csext_dead_letters_total", **bad) == 2

        assert runs("flaky", "failed", s) == 2 and runs("flaky", "success", s) == 2
        assert value(s, "csext_retries_total", extension=names["flaky"]) == 2
        assert value(s, "csext_dead_letters_total", extension=names["flaky"]) == 0

        assert runs("slow", "timeout", s) == 1
        assert value(s, "csext_timeouts_total", extension=names["slow"]) == 1
        assert value(s, "csext_kills_total", extension=names["slow"], signal="SIGTERM") == 1
        slow_seconds = value(s, "csext_run_duration_seconds_sum", extension=names["slow"])
        assert 0.4 < slow_seconds < 10
        assert (
            value(s, "csext_run_duration_seconds_bucket", extension=names["slow"], le="0.25") == 0
        )

        assert value(s, "csext_truncations_total", extension=names["big"], stream="stdout") == 1
        assert value(s, "csext_truncations_total", extension=names["ok"], stream="stdout") == 0

        for kind in ("echo", "co"):
            assert runs(kind, "success", s) == 3
            assert value(s, "csext_reply_latency_seconds_count", extension=names[kind]) == 3
        assert value(s, "csext_spawn_seconds_count", extension=names["echo"], runtime="exec") == 3
        starts = value(s, "csext_coprocess_starts_total", extension=names["co"])
        assert 1 <= starts <= 2  # one warm process per worker process that got a call
        assert value(
            s, "csext_spawn_seconds_count", extension=names["co"], runtime="coprocess"
        ) == (starts)
        assert value(s, "csext_coprocess_crashes_total", extension=names["co"]) == 0

        assert value(s, "csext_in_flight") == 0
        assert value(s, "csext_extension_timeout_seconds", extension=names["slow"]) == 0.5
        ready = [labels for n, labels, v in s if n == "csext_worker_ready" and v == 1]
        assert len(ready) == 2, "both worker processes report ready in one scrape"
        assert value(s, "csext_broker_connected") == 1
        assert any(n == "csext_registry_info" and v == 1 for n, _, v in s)
        labels = {k for _, have, _ in s for k in have}
        assert not labels & {"run_id", "vm", "call_id", "correlation_id"}
    finally:
        assert stop_process(pool) == 0
        await delete_extension_queues(amqp_url, *names.values())
    status, _ = await aget(f"http://127.0.0.1:{port}/healthz", timeout=1)
    assert status == 0, "the metrics port closes with the pool"


def test_bound_children_are_reused_and_kill_signals_named():
    metrics = RunMetrics()
    first = metrics.bind("demo", "event", "exec")
    assert metrics.bind("demo", "event", "exec") is first
    assert metrics.bind("demo", "orchestrator", "exec") is not first
    bound = BoundMetrics("demo-kill", "event", "exec")
    bound._killed(9)
    bound._killed(9)
    assert list(bound.kills) == [9]


def test_queue_wait_reads_milliseconds_header_then_timestamp():
    now = 1_000_000.0
    assert queue_wait_seconds({"timestamp_in_ms": 999_999_500}, None, now) == 0.5
    stamp = dt.datetime.fromtimestamp(999_998.0, tz=dt.UTC)
    assert queue_wait_seconds({}, stamp, now) == 2.0
    assert queue_wait_seconds({}, None, now) is None
    future = dt.datetime.fromtimestamp(now + 5, tz=dt.UTC)
    assert queue_wait_seconds(None, future, now) == 0.0, "clock skew never goes negative"


def test_docs_dashboard_and_alerts_use_only_real_metrics():
    import json
    import re

    from prometheus_client import REGISTRY

    import csext.worker.metrics as metrics_module

    exposed = {n for n in REGISTRY._names_to_collectors if n.startswith("csext_")}
    docs = Path(__file__).resolve().parents[1] / "docs"
    operations = (docs / "operations.md").read_text()
    dashboard = json.loads((docs / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    rules = operations.split("### Alert rules", 1)[1].split("### Grafana", 1)[0]
    for where, text in (("dashboard", exprs), ("alert rules", rules)):
        used = set(re.findall(r"csext_[a-z_]+", text))
        assert used and used <= exposed, f"{where} uses unknown metrics: {used - exposed}"
    defined = [
        value._name
        for value in vars(metrics_module).values()
        if str(getattr(value, "_name", "")).startswith("csext_")
    ]
    assert len(defined) > 20
    undocumented = [name for name in defined if f"`{name}" not in operations]
    assert not undocumented, f"metrics missing from docs/operations.md: {undocumented}"


CRASHY = """#!/usr/bin/python3
import json, os, sys
for line in sys.stdin:
    req = json.loads(line)
    if req["action"] == "crash":
        os._exit(3)
    print(json.dumps({"id": req["id"], "exit_code": 0, "stdout": "ok"}), flush=True)
"""


async def test_coprocess_starts_crashes_and_recycles_are_counted(tmp_path: Path, unique: str):
    from prometheus_client import REGISTRY

    from csext.worker.runtimes.coprocess import CoprocessLimits, CoprocessRuntime
    from csext.worker.runtimes.runner import RunRequest

    entry = tmp_path / "run"
    entry.write_text(CRASHY)
    entry.chmod(0o755)

    def count(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"extension": unique}) or 0.0

    runtime = CoprocessRuntime(CoprocessLimits(max_requests=2, kill_grace=0.5))

    async def call(action: str) -> int | None:
        request = RunRequest(
            entrypoint=entry, action=action, payload=b"{}", timeout=10, env={}, cwd=tmp_path
        )
        return (await runtime.run(unique, request, concurrency=1)).exit_code

    try:
        assert [await call("ok") for _ in range(3)] == [0, 0, 0]
        assert count("csext_coprocess_starts_total") == 2, "recycled after 2 answers"
        assert count("csext_coprocess_recycles_total") == 1
        assert count("csext_coprocess_crashes_total") == 0
        assert await call("crash") == 3
        assert count("csext_coprocess_crashes_total") == 1
        spawned = {"extension": unique, "runtime": "coprocess"}
        assert REGISTRY.get_sample_value("csext_spawn_seconds_count", spawned) == 2
    finally:
        await runtime.aclose()
