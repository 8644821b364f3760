"""`python -m bench [--smoke] [--write] [--only KEY ...]`: run the benchmarks, write the report.

A full run writes BENCHMARKS.md at the repository root (`--output` elsewhere); `--smoke` runs
every benchmark end to end at a tiny size and prints, writing nothing unless `--write` or
`--output` asks. Peers (Celery, FastStream, nameko) run when installed (`pip install -e
'.[bench]'`), else they are skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from . import core, events, rpc, scale, scaling
from .core import Ctx, Row, Section, Stat
from .forward_latency import measure as forward_measure
from .report import render
from .stats import percentile

Bench = Callable[[Ctx, Section], Awaitable[None]]


async def b6_forward(ctx: Ctx, section: Section) -> None:
    runs = 5 if ctx.smoke else 60
    samples = await asyncio.to_thread(forward_measure, ctx.amqp_url, runs, False)
    for label, values in samples.items():
        section.add(
            Row(
                label,
                {
                    "p50": f"{Stat.of(values).median:.1f} ms",
                    "p99": f"{percentile(values, 99):.1f} ms",
                },
            )
        )
    call = samples["csext forward: no-op call via the worker"]
    base = Stat.of(samples["python -c pass"]).median
    row = section.rows[-1]
    row.ratio = Stat.of(call).median / base if base else None
    row.goal, row.met = "tens of ms", Stat.of(call).median < 100
    section.notes.append(
        f"{runs} sequential calls, each a new process as CloudStack runs it; the ratio is "
        "against `python -c pass` (lower is better here)."
    )


BENCHMARKS: list[tuple[str, str, str, list[str], Bench]] = [
    (
        "exec-events",
        "1. Event path, exec runtime, 1 worker process",
        "events/s of a no-op shell extension vs the raw consume-and-spawn floor",
        ["events/s"],
        events.b1_exec_events,
    ),
    (
        "coprocess-events",
        "2. Event path, coprocess runtime",
        "events/s vs raw aio-pika consume (ack only) and vs Celery's worker",
        ["events/s"],
        events.b2_coprocess_events,
    ),
    (
        "exec-rpc",
        "3. RPC, exec runtime",
        "req/s and latency vs the raw RPC-plus-spawn floor, 1 and 32 in flight",
        ["req/s", "p50", "p99"],
        rpc.b3_exec_rpc,
    ),
    (
        "coprocess-rpc",
        "4. RPC, coprocess runtime",
        "vs raw aio-pika echo over direct reply-to, FastStream, Celery rpc, nameko",
        ["req/s", "p50", "p99"],
        rpc.b4_coprocess_rpc,
    ),
    (
        "horizontal",
        "5. Horizontal: 2 worker processes vs 1",
        "coprocess events on one queue; the raw consumer for reference",
        ["events/s"],
        events.b5_horizontal,
    ),
    (
        "forward",
        "6. `csext forward` wall time",
        "a no-op call through a real worker, each call a new process, beside `python -c pass`",
        ["p50", "p99"],
        b6_forward,
    ),
    (
        "scale",
        "7. Scale: many enabled extensions",
        "worker start-up and RSS with 1, 100, 1,000 extensions; `csext enable` to first event",
        [],
        scale.b7_scale,
    ),
    (
        "curve-events",
        "8a. Cost curve: event payload size and concurrency",
        "coprocess events/s as the body grows and as spec.concurrency grows",
        ["events/s"],
        events.b8_event_curve,
    ),
    (
        "curve-rpc",
        "8b. Cost curve: RPC payload size and calls in flight",
        "coprocess RPC req/s and latency as the payload grows and as calls in flight grow",
        ["req/s", "p50", "p99"],
        rpc.b8_rpc_curve,
    ),
    (
        "scaling",
        "9. Scaling: 1 to 4 workers, each on its own CPU budget",
        "coprocess events and RPC with each worker in a cgroup limited to 0.25 core, as if "
        "each ran on a host of its own",
        ["events/s", "req/s", "CPU/worker"],
        scaling.b9_scaling,
    ),
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, print only")
    parser.add_argument("--write", action="store_true", help="write the report even in --smoke")
    parser.add_argument("--output", type=Path, help="report path (default: BENCHMARKS.md)")
    parser.add_argument(
        "--only",
        nargs="*",
        default=[],
        metavar="KEY",
        help="run these benchmarks: " + ", ".join(b[0] for b in BENCHMARKS),
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--repeats", type=int, help="samples per figure (default 5; smoke 1)")
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("CSEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    return parser.parse_args(argv)


async def server_version(ctx: Ctx) -> str:
    connection = await core.connect(ctx)
    async with connection:
        props = connection.transport.connection.server_properties  # type: ignore[union-attr]
        version = props.get("version", "?")
        return version.decode() if isinstance(version, bytes) else str(version)


async def run(args: argparse.Namespace, tmp: Path) -> tuple[list[Section], Ctx, float]:
    ctx = Ctx(amqp_url=args.amqp_url, smoke=args.smoke, tmp=tmp)
    ctx.repeats = args.repeats or (1 if args.smoke else 5)
    if args.smoke:
        ctx.seconds, ctx.warmup = 0.3, 0.0
    wanted = set(args.only)
    unknown = wanted - {b[0] for b in BENCHMARKS}
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(sorted(unknown))}; see --help")
    sections = []
    started = time.perf_counter()
    chosen = [b for b in BENCHMARKS if not wanted or b[0] in wanted]
    try:
        for number, (key, title, what, columns, bench) in enumerate(chosen, 1):
            section = Section(key, title, what, columns)
            so_far = time.perf_counter() - started  # progress: a full run takes an hour or more
            print(
                f"\n== {title} [{key}]  ({number} of {len(chosen)}, {so_far:.0f} s so far)",
                flush=True,
            )
            begun = time.perf_counter()
            await bench(ctx, section)
            section.seconds = time.perf_counter() - begun
            sections.append(section)
    finally:
        await core.delete_exchange(ctx, ctx.exchange)
    return sections, ctx, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for key, title, *_ in BENCHMARKS:
            print(f"{key}\t{title}")
        return
    with tempfile.TemporaryDirectory(prefix="csext-bench-") as tmp:
        try:
            sections, ctx, seconds = asyncio.run(run(args, Path(tmp)))
            port = urlsplit(ctx.amqp_url).port or 5672
            facts = core.machine_facts(
                asyncio.run(server_version(ctx)), ctx.amqp_url, scale.broker_open_files(port)
            )
        except BaseException:
            for log in sorted(Path(tmp).glob("*.log")):
                tail = log.read_text(errors="replace")[-1500:]
                if tail.strip():
                    print(f"--- {log.name} (tail)\n{tail}", file=sys.stderr)
            raise
    print(f"\nbenchmarks done in {seconds:.0f} s")
    output = args.output or (core.ROOT / "BENCHMARKS.md" if args.write or not args.smoke else None)
    if output is not None:
        command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
        output.write_text(render(sections, facts, command.strip(), seconds))
        print(f"wrote {output}")


if __name__ == "__main__":
    main()
