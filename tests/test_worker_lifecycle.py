"""Worker processes: graceful SIGTERM, kill -9 redelivery, deadlines, supervisor, reload."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aio_pika
import pytest
import yaml
from workerkit import (
    consumers_at_least,
    delete_extension_queues,
    publish_event,
    queue_consumers,
    queue_messages,
    running_worker,
    settings_for,
    start_worker_process,
    stop_process,
    wait_until,
    write_extension,
)

from csext.schemas.event import build_routing_key
from csext.worker.amqp import names as c
from csext.worker.amqp.rpc_client import RpcClient

pytestmark = pytest.mark.broker

SLOW = """#!/bin/sh
echo "$CSEXT_RUN_ID $CSEXT_ATTEMPT" >> {out}/started
sleep {seconds}
echo "$CSEXT_RUN_ID" >> {out}/finished
"""

UNAVAILABLE = ("disabled", "unknown-extension")
KEY = build_routing_key("ActionEvent", "VM.START", "VirtualMachine", "vm-1")


@pytest.fixture
def env(tmp_path: Path, amqp_url: str, unique: str):
    registry = tmp_path / "registry"
    registry.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    settings = settings_for(amqp_url, registry, f"{unique}-life", tmp_path)
    return registry, out, settings


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def _consuming(amqp_url: str, queue: str, count: int = 1) -> None:
    await wait_until(
        lambda: consumers_at_least(amqp_url, queue, count),
        timeout=30,
        what=f"{queue} to get {count} consumer(s)",
    )


async def test_sigterm_lets_the_running_extension_finish_and_acks_once(env, unique, amqp_url):
    registry, out, settings = env
    write_extension(registry, unique, SLOW.format(out=out, seconds=2), spec={"timeout": 30})
    proc = start_worker_process(settings)
    try:
        await _consuming(amqp_url, c.events_queue(unique))
        await publish_event(amqp_url, settings.cloudstack_exchange, KEY, b'{"event":"VM.START"}')
        await wait_until(lambda: len(_lines(out / "started")) == 1, what="run started")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert len(_lines(out / "finished")) == 1, "the in-flight run was allowed to finish"
        # Acked exactly once: with its worker gone, nothing is left in the queue to redo
        # (an unacked delivery would be back as ready the moment the channel closed).
        assert await queue_messages(amqp_url, c.events_queue(unique)) == 0
        assert len(_lines(out / "started")) == 1
    finally:
        stop_process(proc)
        await delete_extension_queues(amqp_url, unique)


async def test_kill_9_mid_run_redelivers_to_another_worker(env, unique, amqp_url):
    registry, out, settings = env
    write_extension(registry, unique, SLOW.format(out=out, seconds=3), spec={"timeout": 30})
    first = start_worker_process(settings)
    try:
        await _consuming(amqp_url, c.events_queue(unique))
        await publish_event(amqp_url, settings.cloudstack_exchange, KEY, b'{"event":"VM.START"}')
        await wait_until(lambda: len(_lines(out / "started")) == 1, what="first run started")
        first.kill()
        first.wait(10)
        async with running_worker(settings):
            await wait_until(
                lambda: len(_lines(out / "finished")) >= 1,
                timeout=30,
                what="redelivered run finished",
            )
        started = _lines(out / "started")
        assert len(started) == 2
        assert started[1].split()[1] == "2", "the attempt count survives the redelivery"
    finally:
        stop_process(first)
        await delete_extension_queues(amqp_url, unique)


async def test_timed_out_extension_leaves_no_process_behind(env, unique, amqp_url):
    registry, out, settings = env
    script = f"""#!/bin/sh
sh -c 'trap "" TERM; echo $$ > {out}/grandchild; exec sleep 1000' &
echo $$ > {out}/child
trap "" TERM
sleep 1000
"""
    write_extension(registry, unique, script, hook="orchestrator", patterns=[], spec={"timeout": 1})
    try:
        async with running_worker(settings), RpcClient(amqp_url) as client:
            reply = await client.call(unique, "start", {}, timeout=20)
        assert reply.error is not None and reply.error.kind == "timeout"
        for name in ("child", "grandchild"):
            pid = int((out / name).read_text())
            assert not _alive(pid), f"{name} {pid} survived the deadline"
    finally:
        await delete_extension_queues(amqp_url, unique)


async def test_supervisor_runs_n_processes_and_stops_them(env, unique, amqp_url):
    registry, _out, settings = env
    write_extension(registry, unique, "#!/bin/sh\n", patterns=["management-server.#"])
    proc = start_worker_process(settings, processes=2)
    try:
        await _consuming(amqp_url, c.events_queue(unique), count=2)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        await wait_until(lambda: True)
        assert await queue_consumers(amqp_url, c.events_queue(unique)) == 0
    finally:
        stop_process(proc)
        await delete_extension_queues(amqp_url, unique)


async def test_enable_and_disable_reconcile_without_restart(env, unique, amqp_url):
    registry, out, settings = env
    folder = write_extension(
        registry,
        unique,
        f"#!/bin/sh\necho $1 >> {out}/runs\n",
        hook="orchestrator",
        patterns=[],
        spec={"enabled": False},
    )
    manifest = folder / "extension.yaml"
    try:
        async with running_worker(settings) as worker, RpcClient(amqp_url) as client:
            # "disabled" from this worker; "unknown-extension" if another worker with another
            # registry happens to answer the unrouted call (a developer's, not in CI).
            assert (await client.call(unique, "a", {}, timeout=10)).error.kind in UNAVAILABLE
            _set_enabled(manifest, True)
            await worker.reconcile()
            assert (await client.call(unique, "b", {}, timeout=10)).exit_code == 0
            _set_enabled(manifest, False)
            await worker.reconcile()
            assert (await client.call(unique, "c", {}, timeout=10)).error.kind in UNAVAILABLE
        assert _lines(out / "runs") == ["b"]
    finally:
        await delete_extension_queues(amqp_url, unique)


async def test_hand_edits_are_noticed_without_a_signal(env, unique, amqp_url):
    registry, _out, settings = env
    folder = write_extension(
        registry,
        unique,
        "#!/bin/sh\necho hi\n",
        hook="orchestrator",
        patterns=[],
        spec={"enabled": False},
    )
    try:
        async with running_worker(settings), RpcClient(amqp_url) as client:
            _set_enabled(folder / "extension.yaml", True)

            async def served() -> bool:
                reply = await client.call(unique, "x", {}, timeout=10)
                return reply.error is None and reply.stdout == "hi\n"

            await wait_until(served, timeout=15, interval=0.3, what="the change on disk")
    finally:
        await delete_extension_queues(amqp_url, unique)


def _set_enabled(manifest: Path, value: bool) -> None:
    data = yaml.safe_load(manifest.read_text())
    data["spec"]["enabled"] = value
    manifest.write_text(yaml.safe_dump(data))
    os.utime(manifest)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_changed_queue_settings_keep_existing_queues_working(
    tmp_path: Path, unique: str, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Queue arguments cannot change: a worker started after `delivery_limit` and the runs
    log's bounds changed uses the existing queues as they are and says how to apply the new
    values, instead of failing to start with PRECONDITION_FAILED."""
    registry, out = tmp_path / "registry", tmp_path / "out"
    out.mkdir()
    write_extension(registry, unique, f"#!/bin/sh\necho ran >> {out}/runs\n")
    exchange = f"{unique}-limit"
    try:
        async with running_worker(
            settings_for(amqp_url, registry, exchange, tmp_path, delivery_limit=5)
        ):
            pass
        changed = settings_for(
            amqp_url, registry, exchange, tmp_path, delivery_limit=3, runs_log_max_age="6D"
        )
        async with running_worker(changed) as worker:
            assert unique in worker.consumers
            await publish_event(amqp_url, exchange, KEY, b'{"event":"VM.START"}')
            await wait_until(lambda: (out / "runs").exists(), what="the event ran")
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any(
            c.events_queue(unique) in w and "x-delivery-limit" in w and "delete_queue" in w
            for w in warnings
        ), warnings
        assert any(c.RUNS_LOG_QUEUE in w and "x-max-age" in w for w in warnings), warnings
    finally:
        await delete_extension_queues(amqp_url, unique)


async def test_an_extension_that_cannot_start_does_not_stop_the_others(
    tmp_path: Path, unique: str, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another connection holds one extension's events queue (exclusive): the worker starts,
    the other extension consumes, and the blocked one is retried until it consumes too."""
    registry, out = tmp_path / "registry", tmp_path / "out"
    out.mkdir()
    healthy, blocked = f"{unique}-ok", f"{unique}-held"
    for name in (healthy, blocked):
        write_extension(registry, name, f"#!/bin/sh\necho {name} >> {out}/runs\n")
    exchange = f"{unique}-isolated"

    def ran() -> list[str]:
        path = out / "runs"
        return path.read_text().split() if path.exists() else []

    holder = await aio_pika.connect(amqp_url)
    try:
        channel = await holder.channel()
        await channel.declare_queue(c.events_queue(blocked), exclusive=True)
        async with running_worker(settings_for(amqp_url, registry, exchange, tmp_path)) as worker:
            assert healthy in worker.consumers and blocked not in worker.consumers
            await publish_event(amqp_url, exchange, KEY, b'{"event":"VM.START"}')
            await wait_until(lambda: healthy in ran(), what="the healthy extension ran")
            assert any(blocked in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)

            await holder.close()  # the exclusive queue goes with its connection
            await wait_until(lambda: blocked in worker.consumers, what="the retry", timeout=15)
            await publish_event(amqp_url, exchange, KEY, b'{"event":"VM.START"}')
            await wait_until(lambda: blocked in ran(), what="the retried extension ran")
    finally:
        await holder.close()
        await delete_extension_queues(amqp_url, healthy, blocked)
