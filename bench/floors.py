"""Raw floors: the least a RabbitMQ consumer in Python can do for each csext path.

    python -m bench.floors ack       --url URL --queue Q --prefetch P
    python -m bench.floors spawn     --url URL --queue Q --prefetch P --exe PATH
    python -m bench.floors echo      --url URL --queue Q --prefetch P
    python -m bench.floors rpc-spawn --url URL --queue Q --prefetch P --exe PATH
    python -m bench.floors pipe      --url URL --queue Q --prefetch P --exe PATH --warm N

`ack`: consume and ack. `spawn`: per message, run PATH (argv like an exec run, stdout and
stderr piped and read, the same pidfd child watcher as the worker), then ack. `echo`: reply to
`reply_to` with the body, then ack. `rpc-spawn`: run PATH, reply with its stdout, then ack.
`pipe`: the work of csext's coprocess runtime with nothing else: N warm `PATH --coprocess`
processes started once; per message, take a free one, write one JSON request line (id, action,
deadline, payload = the body parsed) to its stdin, read its one JSON answer line, then ack.
Each handles every delivery in its own task (as the worker does), prints `ready` once
consuming and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from csext.worker.runtimes.runner import install_child_watcher


async def run_exe(exe: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        exe,
        "event",
        "/dev/null",
        "30",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    out, _ = await proc.communicate()
    return out


class WarmPool:
    """`size` warm coprocesses, each serving one request at a time (as csext's pool does)."""

    def __init__(self, exe: str, size: int) -> None:
        self._exe = exe
        self._size = size
        self._free: asyncio.Queue[asyncio.subprocess.Process] = asyncio.Queue()
        self._ids = itertools.count()

    async def start(self) -> None:
        for _ in range(self._size):
            proc = await asyncio.create_subprocess_exec(
                self._exe,
                "--coprocess",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self._free.put_nowait(proc)

    async def call(self, body: bytes) -> bytes:
        proc = await self._free.get()
        try:
            assert proc.stdin is not None and proc.stdout is not None
            request = {
                "id": str(next(self._ids)),
                "action": "event",
                "deadline": time.time() + 30,
                "timeout": 30,
                "payload": json.loads(body) if body else {},
            }
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            await proc.stdin.drain()
            return await proc.stdout.readline()
        finally:
            self._free.put_nowait(proc)


Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]


def make_handler(
    args: argparse.Namespace, replies: AbstractExchange, pool: WarmPool | None
) -> Handler:
    """The per-message work of `args.mode`, ending with the ack."""

    async def reply(message: AbstractIncomingMessage, body: bytes) -> None:
        await replies.publish(
            aio_pika.Message(body, correlation_id=message.correlation_id),
            message.reply_to or "",
            mandatory=False,
        )

    async def handle(message: AbstractIncomingMessage) -> None:
        if args.mode == "spawn":
            await run_exe(args.exe)
        elif args.mode == "echo":
            await reply(message, message.body)
        elif args.mode == "rpc-spawn":
            await reply(message, await run_exe(args.exe))
        elif pool is not None:
            answer = await pool.call(message.body)
            if message.reply_to:
                await reply(message, answer)
        await message.ack()

    return handle


async def serve(args: argparse.Namespace) -> None:
    install_child_watcher()
    pool = WarmPool(args.exe, args.warm) if args.mode == "pipe" else None
    if pool is not None:
        await pool.start()
    connection = await aio_pika.connect(args.url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=args.prefetch)
    queue = await channel.get_queue(args.queue, ensure=False)
    handle = make_handler(args, channel.default_exchange, pool)
    tasks: set[asyncio.Task[None]] = set()

    async def on_message(message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(handle(message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await queue.consume(on_message)
    print("ready", flush=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    await stopped.wait()
    await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["ack", "spawn", "echo", "rpc-spawn", "pipe"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--exe", default="/bin/true")
    parser.add_argument("--warm", type=int, default=8, help="pipe: warm processes")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
