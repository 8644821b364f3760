"""Raw floors: the least a RabbitMQ consumer in Python can do for each csext path.

    python -m bench.floors ack       --url URL --queue Q --prefetch P
    python -m bench.floors spawn     --url URL --queue Q --prefetch P --exe PATH
    python -m bench.floors echo      --url URL --queue Q --prefetch P
    python -m bench.floors rpc-spawn --url URL --queue Q --prefetch P --exe PATH

`ack`: consume and ack. `spawn`: per message, run PATH (argv like an exec run, stdout and
stderr piped and read, the same pidfd child watcher as the worker), then ack. `echo`: reply to
`reply_to` with the body, then ack. `rpc-spawn`: run PATH, reply with its stdout, then ack.
Each handles every delivery in its own task (as the worker does), prints `ready` once
consuming and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

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


async def serve(args: argparse.Namespace) -> None:
    install_child_watcher()
    connection = await aio_pika.connect(args.url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=args.prefetch)
    queue = await channel.get_queue(args.queue, ensure=False)
    replies = channel.default_exchange
    tasks: set[asyncio.Task[None]] = set()

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
        await message.ack()

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
    parser.add_argument("mode", choices=["ack", "spawn", "echo", "rpc-spawn"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--exe", default="/bin/true")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
