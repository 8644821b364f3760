"""The peers, as real processes against the same broker: Celery, FastStream, nameko.

Servers and clients both live here and run as subprocesses (`python -m bench.peers ...`), so
the benchmark process itself stays idle while measuring. Configuration comes from BENCH_*
environment variables, because Celery and nameko import the app/service by module name.

    python -m bench.peers celery-preload --count N           (BENCH_AMQP_URL, BENCH_QUEUE)
    celery -A bench.peers:celery_app worker -c 2 ...         (the worker, started by bench)
    python -m bench.peers celery-client --inflight K --seconds S  (BENCH_CELERY_BACKEND=rpc://)
    python -m bench.peers faststream-server | faststream-client ...
    nameko run bench.peers_nameko --broker URL                (BENCH_NAMEKO_SERVICE)
    python -m bench.peers nameko-client ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any

from .stats import percentile

PAYLOAD = {"virtualmachinename": "i-2-4-VM"}


def summary(latencies: list[float], seconds: float) -> dict[str, float]:
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "rate": len(latencies) / seconds if seconds else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "errors": 0,
    }


# --- Celery -------------------------------------------------------------------------------


def _celery_app() -> Any:
    from celery import Celery

    url = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    app = Celery("bench", broker=url, backend=os.environ.get("BENCH_CELERY_BACKEND") or None)
    queue = os.environ.get("BENCH_QUEUE", "bench-celery")
    app.conf.update(
        task_default_queue=queue,
        task_ignore_result=not os.environ.get("BENCH_CELERY_BACKEND"),
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
    )

    @app.task(name="bench.noop")
    def noop(*args: Any) -> None:
        return None

    @app.task(name="bench.echo")
    def echo(payload: Any) -> Any:
        return payload

    return app


celery_app: Any = _celery_app() if os.environ.get("BENCH_CELERY") else None


def celery_preload(count: int) -> dict[str, float]:
    app = _celery_app()
    start = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task("bench.noop", args=(PAYLOAD,), producer=producer)
    return {"published": count, "seconds": time.perf_counter() - start}


def celery_client(inflight: int, seconds: float, warmup: float, count: int) -> dict[str, float]:
    app = _celery_app()
    latencies: list[float] = []
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    done = 0
    while (done < count) if count else (time.perf_counter() < stop_at):
        sent = time.perf_counter()
        results = [app.send_task("bench.echo", args=(PAYLOAD,)) for _ in range(inflight)]
        for result in results:
            result.get(timeout=30)
            end = time.perf_counter()
            if count or (sent >= measure_from and end <= stop_at):
                latencies.append(end - sent)
        done += inflight
    return summary(latencies, seconds if not count else time.perf_counter() - start)


# --- FastStream ---------------------------------------------------------------------------


def faststream_server(url: str, queue: str) -> None:
    from faststream import FastStream
    from faststream.rabbit import RabbitBroker

    broker = RabbitBroker(url, logger=None)

    @broker.subscriber(queue)
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return body

    app = FastStream(broker, logger=None)

    async def main() -> None:
        async def ready() -> None:
            print("ready", flush=True)

        app.after_startup(ready)
        await app.run()

    asyncio.run(main())


async def _faststream_client(
    url: str, queue: str, inflight: int, seconds: float, warmup: float, count: int
) -> dict[str, float]:
    from faststream.rabbit import RabbitBroker

    latencies: list[float] = []
    async with RabbitBroker(url, logger=None) as broker:
        start = time.perf_counter()
        measure_from, stop_at = start + warmup, start + warmup + seconds
        done = 0

        async def lane() -> None:
            nonlocal done
            while (done < count) if count else (time.perf_counter() < stop_at):
                sent = time.perf_counter()
                await broker.request(PAYLOAD, queue=queue, timeout=30)
                end = time.perf_counter()
                done += 1
                if count or (sent >= measure_from and end <= stop_at):
                    latencies.append(end - sent)

        await asyncio.gather(*(lane() for _ in range(inflight)))
    return summary(latencies, seconds if not count else time.perf_counter() - start)


# --- nameko -------------------------------------------------------------------------------


def nameko_client(
    url: str, service: str, inflight: int, seconds: float, warmup: float, count: int
) -> dict[str, float]:
    from nameko.standalone.rpc import ClusterRpcProxy

    latencies: list[float] = []
    with ClusterRpcProxy({"AMQP_URI": url}, timeout=30) as rpc:
        proxy = getattr(rpc, service)
        start = time.perf_counter()
        measure_from, stop_at = start + warmup, start + warmup + seconds
        done = 0
        while (done < count) if count else (time.perf_counter() < stop_at):
            sent = time.perf_counter()
            replies = [proxy.echo.call_async(PAYLOAD) for _ in range(inflight)]
            for reply in replies:
                reply.result()
                end = time.perf_counter()
                if count or (sent >= measure_from and end <= stop_at):
                    latencies.append(end - sent)
            done += inflight
    return summary(latencies, seconds if not count else time.perf_counter() - start)


# --- command line -------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--url", default=os.environ.get("BENCH_AMQP_URL", ""))
    parser.add_argument("--queue", default=os.environ.get("BENCH_QUEUE", ""))
    parser.add_argument("--service", default=os.environ.get("BENCH_NAMEKO_SERVICE", ""))
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    args = parser.parse_args()
    load = (args.inflight, args.seconds, args.warmup, args.count)
    commands: dict[str, Callable[[], Any]] = {
        "celery-preload": lambda: celery_preload(args.count),
        "celery-client": lambda: celery_client(*load),
        "faststream-server": lambda: faststream_server(args.url, args.queue),
        "faststream-client": lambda: asyncio.run(_faststream_client(args.url, args.queue, *load)),
        "nameko-client": lambda: nameko_client(args.url, args.service, *load),
    }
    result = commands[args.command]()
    if result is not None:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
