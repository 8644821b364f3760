"""`csext call`: print what the extension printed and exit with its exit code.

A call that did not run the extension exits with a code of its own (docs/cli.md, "Exit codes")
after `csext: error: ...`: 69 broker or extension unavailable, 65 bad request, 124 no reply.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import orjson

from csext.bridges import forward
from csext.cli.context import print_error
from csext.schemas.errors import BrokerUnavailable, CallTimeout
from csext.worker.amqp.rpc_client import NoWorker, RpcClient
from csext.worker.settings import Settings

EXIT_UNAVAILABLE = 69
EXIT_DATAERR = 65
EXIT_TIMEOUT = 124
EXIT_SOFTWARE = 70
EXIT_USAGE = 64

ERROR_EXIT = {
    "unknown-extension": EXIT_UNAVAILABLE,
    "disabled": EXIT_UNAVAILABLE,
    "invalid-manifest": EXIT_UNAVAILABLE,
    "bad-request": EXIT_DATAERR,
    "timeout": EXIT_TIMEOUT,
}


async def run_call(
    settings: Settings, name: str, action: str, payload: Any, timeout: float, as_json: bool
) -> int:
    try:
        grace = forward.worker_grace(os.environ)  # same setting as `csext forward`
    except forward.ForwardError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    try:
        async with RpcClient(settings.amqp_url) as client:
            reply = await client.call(name, action, payload, timeout=timeout, grace=grace)
    except (BrokerUnavailable, NoWorker) as exc:
        print_error(str(exc))
        return EXIT_UNAVAILABLE
    except CallTimeout as exc:
        print_error(str(exc))
        return EXIT_TIMEOUT
    if as_json:
        sys.stdout.buffer.write(
            orjson.dumps(reply.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"
        )
    else:
        sys.stdout.write(reply.stdout)
        sys.stderr.write(reply.stderr)
    ran = reply.exit_code is not None and reply.exit_code >= 0
    if ran:
        return reply.exit_code or 0
    if reply.error is None:
        return EXIT_SOFTWARE
    if not as_json:
        print_error(f"{reply.error.kind}: {reply.error.message}")
    return ERROR_EXIT.get(reply.error.kind, EXIT_SOFTWARE)
