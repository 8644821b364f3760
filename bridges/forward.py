"""`csext forward`: the executable CloudStack runs, standing in for the real extension.

CloudStack runs `<entrypoint> <action> <payload-file> <timeout>` and judges the result by the
exit code and the (stdout + stderr) text. This module makes one RPC call to the worker pool
(see docs/forward.md for the wire format), prints what the extension printed and exits with
its exit code, so CloudStack cannot tell the difference.

It runs once per CloudStack action, so it is a fast path: `csext.cli.__main__` dispatches
here before typer, pydantic, yaml or aio-pika are imported, and this module imports only the
stdlib and `fastamqp`. The broker URL comes from `CSEXT_AMQP_URL` or the `amqp_url:` line of the
worker's YAML config file, read with a tiny line parser (flat `key: value` only).

An extension that ran has its stdout and exit code passed on byte for byte, whatever csext
thought of them: CloudStack parses the output itself. Failures of csext itself (bad arguments,
unreadable payload, broker unreachable, no worker consuming the extension's queue, unknown
extension, deadline passed) print one JSON line `{"status":"error","error":"..."}` on stdout
(what CloudStack shows the operator) and exit 1. It never runs past the caller's timeout.
"""

from __future__ import annotations

import json
import os
import sys
import time

from csext.bridges import fastamqp, flatyaml

TYPE_CHECKING = False  # `typing` costs ~5 ms to import: only type checkers read it here
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, BinaryIO

DEFAULT_TIMEOUT = 60.0
"""Seconds, when CloudStack (or a person) leaves argv[3] out, as CloudStack's scripts allow."""
MAX_MARGIN = 2.0
"""Seconds kept back from the caller's timeout: at most this, at most 10% of the timeout."""
DEFAULT_CONFIG_FILE = "/etc/csext/csext.yaml"
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
DEFAULT_WORKER_GRACE = 3.0
"""Seconds a call may wait for a worker to consume the extension's queue (`worker_grace`)."""
RPC_EXCHANGE = "csext.rpc"  # = constants.RPC_EXCHANGE (not imported: keep this path tiny)
RPC_QUEUE = "csext.ext.{}.rpc"  # = constants.rpc_queue(name)
HEADER_DEADLINE = "x-csext-deadline"  # = constants.HEADER_DEADLINE
ERROR_EXIT = 1

USAGE = """\
usage: csext forward --extension NAME [--no-stderr] <action> <payload-file> [<timeout-seconds>]

Forward one CloudStack extension call to the csext worker pool over RabbitMQ, print the
extension's stdout (its stderr on stderr) and exit with its exit code.

  --extension NAME, -e NAME  the csext extension to call (required)
  --no-stderr                drop the extension's stderr (CloudStack merges stderr into the
                             output it parses, e.g. for `status` and `prepare`)
  <timeout-seconds>          CloudStack's argv[3]; default 60

Broker: CSEXT_AMQP_URL, else `amqp_url:` in the config file (CSEXT_CONFIG, default
/etc/csext/csext.yaml), else amqp://guest:guest@localhost:5672/. With no worker consuming
the extension's queue it fails after CSEXT_WORKER_GRACE / `worker_grace:` seconds (default 3).
"""


class ForwardError(Exception):
    """A failure of the forwarding itself; the message becomes the JSON error line."""


class Call:
    """One forwarded call (a plain class: dataclasses cost ~9 ms of import on this path)."""

    __slots__ = ("action", "extension", "payload_file", "stderr", "timeout")

    def __init__(
        self, *, extension: str, action: str, payload_file: str, timeout: float, stderr: bool = True
    ) -> None:
        self.extension = extension
        self.action = action
        self.payload_file = payload_file
        self.timeout = timeout
        self.stderr = stderr


# ---------------------------------------------------------------------------- arguments


def parse_args(argv: list[str]) -> Call | None:
    """The call described by argv; None means help was asked for."""
    extension = None
    stderr = True
    positional: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            return None
        if arg in ("--extension", "-e"):
            extension = next(args, None)
            if extension is None:
                raise ForwardError("--extension needs a value: --extension NAME")
        elif arg.startswith("--extension="):
            extension = arg.partition("=")[2]
        elif arg == "--no-stderr":
            stderr = False
        elif arg == "--":
            positional.extend(args)
        else:
            positional.append(arg)
    if not extension:
        raise ForwardError("missing --extension NAME (the csext extension to call)")
    if len(positional) not in (2, 3):
        raise ForwardError(
            "expected <action> <payload-file> [<timeout-seconds>], got "
            f"{len(positional)} argument(s); usage: csext forward --extension NAME "
            "<action> <payload-file> [<timeout-seconds>]"
        )
    timeout = parse_timeout(positional[2] if len(positional) == 3 else "")
    return Call(
        extension=extension,
        action=positional[0],
        payload_file=positional[1],
        timeout=timeout,
        stderr=stderr,
    )


def parse_timeout(text: str) -> float:
    """CloudStack's argv[3]; empty or non-positive means the default (its scripts allow that)."""
    if not text.strip():
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise ForwardError(f"timeout must be a number of seconds, got {text!r}") from None
    if value != value or value <= 0:  # NaN or <= 0
        return DEFAULT_TIMEOUT
    return value


def margin_for(timeout: float) -> float:
    return min(MAX_MARGIN, timeout * 0.1)


# ---------------------------------------------------------------------------- config


def config_value(path: str, key: str) -> str | None:
    """`key: value` from the flat YAML config file (bridges/flatyaml.py), None when absent."""
    try:
        keys = flatyaml.read_keys(path)
    except OSError as exc:
        raise ForwardError(f"cannot read config file {path}: {exc.strerror}") from None
    return None if keys is None else keys.get(key)


def config_path(environ: Mapping[str, str]) -> str | None:
    """The config file to read, None when there is none.

    A missing default file (/etc/csext/csext.yaml) is not an error: the defaults then apply,
    so a generated shim works out of the box against a local broker. A missing file named
    in CSEXT_CONFIG (other than the default) is an error: the user meant that file."""
    named = environ.get("CSEXT_CONFIG")
    path = named or DEFAULT_CONFIG_FILE
    if os.path.isfile(path):
        return path
    if named and os.path.abspath(named) != DEFAULT_CONFIG_FILE:
        raise ForwardError(f"config file {named} (CSEXT_CONFIG) does not exist")
    return None


def setting(environ: Mapping[str, str], key: str) -> str | None:
    """CSEXT_<KEY> from the environment, else `key:` from the config file, else None."""
    value = environ.get("CSEXT_" + key.upper())
    if value:
        return value
    path = config_path(environ)
    return config_value(path, key) if path else None


def amqp_url(environ: Mapping[str, str]) -> str:
    """CSEXT_AMQP_URL, else the config file's amqp_url, else the worker's default."""
    return setting(environ, "amqp_url") or DEFAULT_AMQP_URL


def worker_grace(environ: Mapping[str, str]) -> float:
    """Seconds a call waits for a worker to consume the extension's queue before failing
    (CSEXT_WORKER_GRACE, else `worker_grace:` in the config file, else DEFAULT_WORKER_GRACE)."""
    text = setting(environ, "worker_grace")
    if text is None:
        return DEFAULT_WORKER_GRACE
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 600:
        raise ForwardError(f"worker_grace must be seconds between 0 and 600, got {text!r}")
    return value


# ---------------------------------------------------------------------------- the call


def read_payload(path: str) -> Any:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ForwardError(f"cannot read payload file {path}: {exc.strerror}") from None
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ForwardError(f"payload file {path} is not valid JSON: {exc}") from None


def rpc(
    call: Call, url: str, payload: Any, started: float, grace: float = DEFAULT_WORKER_GRACE
) -> dict[str, Any]:
    """One request/reply; returns the reply body as a dict. With no worker consuming the
    extension's queue it waits at most `grace` seconds for one (fastamqp.call_served)."""
    budget = call.timeout - margin_for(call.timeout)
    deadline = started + budget
    epoch_deadline_ms = int((time.time() + (deadline - time.monotonic())) * 1000)
    body = json.dumps({"action": call.action, "payload": payload}).encode()
    conn = fastamqp.open_first(url, deadline, name=f"csext forward {call.extension}")
    try:
        expiration = max(1, int((deadline - time.monotonic()) * 1000))
        props = {
            "content_type": "application/json",
            "headers": {HEADER_DEADLINE: epoch_deadline_ms},
            "delivery_mode": 1,
            "correlation_id": os.urandom(16).hex(),
            "expiration": str(expiration),
        }
        queue = RPC_QUEUE.format(call.extension)
        reply = conn.call_served(RPC_EXCHANGE, call.extension, body, props, queue, grace)
    finally:
        conn.close()
    return decode_reply(reply.body)


def decode_reply(body: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(body)
    except ValueError:
        raise ForwardError("the worker sent a reply that is not JSON") from None
    if not isinstance(reply, dict):
        raise ForwardError("the worker sent a reply that is not a JSON object")
    return reply


def explain(exc: fastamqp.AmqpError, call: Call) -> str:
    if isinstance(exc, fastamqp.AmqpBlocked):
        return f"extension {call.extension!r} was not called: {exc}"
    if isinstance(exc, fastamqp.AmqpNoConsumer):
        if exc.queue_exists:
            return (
                f"no csext worker serves extension {call.extension!r}: nothing consumes its "
                f"queue {RPC_QUEUE.format(call.extension)} ({exc}); start `csext worker`, or "
                "see its log for why it does not consume this extension"
            )
        return (
            f"no csext worker answered for extension {call.extension!r} and it has no queue "
            f"{RPC_QUEUE.format(call.extension)} ({exc}); is `csext worker` running, with a "
            "registry that has this extension?"
        )
    if isinstance(exc, fastamqp.AmqpTimeout):
        return (
            f"no reply from extension {call.extension!r} within {call.timeout:g}s ({exc}); "
            "is a csext worker running?"
        )
    if isinstance(exc, fastamqp.AmqpReturned):
        return f"{exc}: no csext worker has set up the RPC topology (start `csext worker`)"
    if isinstance(exc, fastamqp.AmqpClosed) and exc.code == 404:
        return f"{exc} (start `csext worker` once to declare it)"
    return str(exc)


# ---------------------------------------------------------------------------- output


def exit_status(code: Any) -> int:
    """The extension's exit code as a process status; signals as 128+n, like a shell."""
    if not isinstance(code, int) or isinstance(code, bool):
        return ERROR_EXIT
    if code < 0:
        return min(255, 128 - code)
    return code if code <= 255 else ERROR_EXIT


NOT_RUN = frozenset({"timeout", "spawn-failed"})
"""Reply error kinds of a run that has no exit of its own to pass on."""


def ran(reply: dict[str, Any]) -> bool:
    """Whether the extension ran to an exit of its own (code, or signal as a negative code)."""
    code, error = reply.get("exit_code"), reply.get("error")
    kind = error.get("kind") if isinstance(error, dict) else None
    return type(code) is int and kind not in NOT_RUN


def emit(reply: dict[str, Any], call: Call, out: BinaryIO, err: BinaryIO) -> int:
    """Write the reply the way the extension would have; returns the exit status.

    CloudStack parses the output itself (ExternalPathPayloadProvisioner.executeExternalCommand,
    plugins/hypervisors/external/.../provisioner/ExternalPathPayloadProvisioner.java @0337e34:
    exit code, then the whole output), so an extension that ran gets its stdout and exit code
    passed on byte for byte, whatever csext's own reading of it was (that goes into the run
    record, warnings included). Only csext's own failures (not run, timed out, unknown or
    disabled extension) print the error line.
    """
    if ran(reply):
        stderr = reply.get("stderr") or ""
        if call.stderr and stderr:
            err.write(str(stderr).encode("utf-8", "replace"))
            err.flush()
        out.write(str(reply.get("stdout") or "").encode("utf-8", "replace"))
        out.flush()
        return exit_status(reply["exit_code"])
    error = reply.get("error")
    message = error.get("message") if isinstance(error, dict) else str(error or "no result")
    kind = error.get("kind") if isinstance(error, dict) else None
    prefix = f"{kind}: " if kind else ""
    write_error(out, f"extension {call.extension!r}: {prefix}{message}")
    return ERROR_EXIT


def write_error(out: BinaryIO, message: str) -> None:
    out.write(
        json.dumps({"status": "error", "error": message}, separators=(",", ":")).encode() + b"\n"
    )
    out.flush()


def main(argv: list[str], environ: dict[str, str] | None = None) -> int:
    """Entry point of `csext forward`; returns the process exit status."""
    started = time.monotonic()
    env = os.environ if environ is None else environ
    out, err = sys.stdout.buffer, sys.stderr.buffer
    if KVM_HOOK_FLAG in argv:
        return kvm_hook_main(argv, env, out, started)
    try:
        call = parse_args(argv)
    except ForwardError as exc:
        write_error(out, f"csext forward: {exc}")
        return ERROR_EXIT
    if call is None:
        out.write(USAGE.encode())
        return 0
    try:
        url, grace = amqp_url(env), worker_grace(env)
        reply = rpc(call, url, read_payload(call.payload_file), started, grace)
    except ForwardError as exc:
        write_error(out, f"csext forward: {exc}")
        return ERROR_EXIT
    except fastamqp.AmqpError as exc:
        write_error(out, f"csext forward: {explain(exc, call)}")
        return ERROR_EXIT
    except Exception as exc:  # a bug here must still answer CloudStack in its format
        write_error(out, f"csext forward: internal error: {type(exc).__name__}: {exc}")
        return ERROR_EXIT
    return emit(reply, call, out, err)


# ---------------------------------------------------------------------------- KVM agent shell hook

KVM_HOOK_FLAG = "--kvm-hook"
KVM_HOOK_TIMEOUT = 20.0
"""Seconds; the agent kills its shell hook after 30."""
AGENT_ESCAPED = frozenset("\\\"'`$|&;()<>*?![]{}~")
"""Characters the KVM agent backslash-escapes in the value it passes to its shell hook."""
KVM_ACTIONS = {"transform": "transform", "onstart": "on-start", "onstop": "on-stop"}


def unescape_agent_value(value: str) -> str:
    """Undo the agent's escaping: a backslash before one of AGENT_ESCAPED is dropped."""
    out: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            out.append(nxt if nxt in AGENT_ESCAPED and nxt else ch + nxt)
        else:
            out.append(ch)
    return "".join(out)


def _first(xml: str, tag: str) -> str | None:
    start = xml.find(f"<{tag}>")
    end = xml.find(f"</{tag}>", start + 1)
    if start < 0 or end < 0:
        return None
    return xml[start + len(tag) + 2 : end].strip()


def same_domain(original: str, candidate: str) -> bool:
    """A cheap guard (the domain-xml handler does the strict check): name and uuid kept."""
    if not candidate.startswith("<") or "<domain" not in candidate:
        return False
    return all(_first(original, tag) == _first(candidate, tag) for tag in ("name", "uuid"))


def parse_kvm_args(argv: list[str]) -> tuple[str, str, str, float]:
    """(extension, method, value, timeout) from `--extension N --kvm-hook [--timeout S] M V`."""
    extension, timeout, positional = "", KVM_HOOK_TIMEOUT, []
    args = iter(argv)
    for arg in args:
        if arg in ("--extension", "-e"):
            extension = next(args, "")
        elif arg.startswith("--extension="):
            extension = arg.partition("=")[2]
        elif arg == "--timeout":
            timeout = parse_timeout(next(args, ""))
        elif arg != KVM_HOOK_FLAG:
            positional.append(arg)
    method = positional[0] if positional else ""
    value = positional[1] if len(positional) > 1 else ""
    return extension, method, unescape_agent_value(value), timeout


def kvm_hook_main(argv: list[str], env: Any, out: BinaryIO, started: float) -> int:
    """The KVM agent's shell hook: always prints a value (new XML or the original), exit 0."""
    extension, method, value, timeout = parse_kvm_args(argv)
    action = KVM_ACTIONS.get(method.lower().replace("-", "").replace("_", ""))
    result = value
    if extension and action:
        if action == "transform":
            payload: dict[str, Any] = {"xml": value, "vm_name": _first(value, "name")}
        else:
            payload = {"vm_name": value}
        call = Call(extension=extension, action=action, payload_file="", timeout=timeout)
        try:
            reply = rpc(call, amqp_url(env), payload, started, worker_grace(env))
        except Exception as exc:  # never break a VM start
            sys.stderr.write(f"csext kvm hook: {action} via {extension!r} failed: {exc}\n")
            reply = {}
        new = reply.get("stdout") or ""
        ok = reply.get("exit_code") == 0 and not reply.get("error")
        if action == "transform" and ok and new.strip() and same_domain(value, new.strip()):
            result = new.strip()
    out.write(result.encode("utf-8", "replace") + b"\n")
    out.flush()
    return 0
