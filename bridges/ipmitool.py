"""`csext ipmitool`: an ipmitool look-alike that sends CloudStack's power actions to csext.

CloudStack's IPMI out-of-band driver does not speak IPMI: it runs the executable named by
`outofbandmanagement.ipmitool.path` and reads its exit code, stdout and stderr. Pointing that
setting at `csext ipmitool` (through the file `csext shim --ipmitool PATH` writes) turns every
power action into one RPC call to an `oob-management` extension, so any power driver (Redfish,
a PDU, a cloud API) works with unmodified CloudStack. See docs/hooks/oob-management.md.

What CloudStack runs, and what it reads back (IpmitoolOutOfBandManagementDriver):

    <path> -V                                     stdout starts "ipmitool version"
    <path> -I <if> -R <n> -v [-H a] [-p n] [-U u] [-P p] chassis power <op>
                                                  exit 0; status: "Chassis Power is on|off"
    <path> ... user list                          table, header line with ID and Name
    <path> ... user set password <id> <new>       exit 0
    stderr holds "RAKP 2 HMAC is invalid"         authentication failure

Like `csext forward`, this is a per-call process: it imports only the stdlib, `fastamqp` and
`forward` (no typer, pydantic, yaml or aio-pika). The extension is chosen in the config file
(flat keys the line parser reads: `ipmitool_extension`, `ipmitool_route_<n>`,
`ipmitool_timeout`). Passwords (`-P`, `-E`, `-f`, the new password) travel only in the payload
fields the hook marks secret, and are scrubbed from everything this module prints.
"""

from __future__ import annotations

import os
import sys
import time

from csext.bridges import fastamqp, flatyaml
from csext.bridges import forward as fwd

TYPE_CHECKING = False  # `typing` costs ~5 ms to import: only type checkers read it here
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

VERSION_LINE = "ipmitool version 1.8.19 (csext)"
"""CloudStack's start-up check wants stdout to start with `ipmitool version`."""
DEFAULT_TIMEOUT = 55.0
"""Seconds; CloudStack kills the process at `outofbandmanagement.action.timeout` (60 s)."""
ERROR_EXIT = 1
AUTH_FAILURE_LINES = (
    "> RAKP 2 HMAC is invalid",
    "Error: Unable to establish IPMI v2 / RMCP+ session",
)
"""What ipmitool prints for a wrong password; CloudStack looks for `RAKP 2 HMAC is invalid`."""

# ipmitool 1.8.19's options: the ones that take a value, and the flags.
VALUE_OPTIONS = frozenset("AbBCdDefHIklLmNoOpPRStTUyz")
FLAG_OPTIONS = frozenset("46cEghKsvVZ")
PROMPT_OPTIONS = frozenset("aY")
"""ipmitool would read these from the terminal; there is none when CloudStack runs it."""

POWER_OPERATIONS = {
    "on": "on",
    "up": "on",
    "off": "off",
    "down": "off",
    "cycle": "cycle",
    "reset": "reset",
    "soft": "soft",
    "acpi": "soft",
    "status": "status",
}
POWER_CONTROL = {
    "on": "Up/On",
    "off": "Down/Off",
    "cycle": "Cycle",
    "reset": "Reset",
    "soft": "Soft",
}
"""ipmitool's `Chassis Power Control: <this>` line, per operation."""

USER_LIST_HEADER = "ID  Name\t     Callin  Link Auth\tIPMI Msg   Channel Priv Limit"
"""ipmitool's own header, tabs included (CloudStack splits lines on spaces)."""

USAGE = """\
usage: ipmitool [options...] <command>

csext's ipmitool bridge supports what CloudStack's out-of-band driver runs:

       -V             Show version information
       -I intf        Interface (accepted, not used)
       -H hostname    BMC address
       -p port        BMC port
       -U username    BMC user
       -P password    BMC password
       -E             Read password from IPMI_PASSWORD environment variable
       -f file        Read password from file
       -R retry, -N seconds, -v, -L level, -C suite ...  accepted, not used

Commands:
       chassis power <status|on|off|cycle|reset|soft>
       user list [<channel>]
       user set password <user id> <password> [<16|20>]

The call goes to a csext oob-management extension (see docs/hooks/oob-management.md).
"""


class UsageError(Exception):
    """Bad argv: printed on stderr with the usage, exit 1 (as ipmitool does)."""


class BridgeError(Exception):
    """A failure of the bridge itself (config, broker, worker): one stderr line, exit 1."""


class Invocation:
    """One parsed ipmitool command line (a plain class: dataclasses cost import time here)."""

    __slots__ = ("action", "address", "new_password", "password", "port", "user_id", "username")

    def __init__(self) -> None:
        self.address: str | None = None
        self.port: int | None = None
        self.username: str | None = None
        self.password: str | None = None
        self.action = ""
        self.user_id: str | None = None
        self.new_password: str | None = None

    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.new_password) if s]

    def payload(self, timeout: float) -> dict[str, Any]:
        """The oob-management hook's input (schemas/hooks/oob_management.py)."""
        payload: dict[str, Any] = {"address": self.address, "driver": "ipmitool"}
        for key in ("port", "username", "password", "user_id", "new_password"):
            value = getattr(self, key)
            if value is not None:
                payload[key] = value
        payload["timeout"] = int(timeout)
        return payload


# ---------------------------------------------------------------------------- argv


def parse_options(argv: list[str], environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """getopt-style options (POSIX: they stop at the first word) and the command words.

    Returns {"V": ""} as soon as -V is seen, as ipmitool prints its version at once.
    """
    options: dict[str, str] = {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            index += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        index = _one_option(argv, index, options)
        if "V" in options:
            return {"V": ""}, []
    if "E" in options:
        secret = environ.get("IPMI_PASSWORD")
        if secret is None:
            raise UsageError("Unable to read password from environment (IPMI_PASSWORD)")
        options["P"] = secret
    if "f" in options:
        options["P"] = read_password_file(options["f"])
    return options, argv[index:]


def _one_option(argv: list[str], index: int, options: dict[str, str]) -> int:
    """Parse the cluster argv[index] (`-vv`, `-H host`, `-Hhost`); returns the next index."""
    arg = argv[index]
    pos = 1
    while pos < len(arg):
        letter = arg[pos]
        if letter in PROMPT_OPTIONS:
            raise UsageError(
                f"csext ipmitool cannot prompt (-{letter}): give the password with -P, -E or -f"
            )
        if letter in FLAG_OPTIONS:
            options[letter] = ""
            if letter == "V":
                return index + 1
            pos += 1
            continue
        if letter not in VALUE_OPTIONS:
            raise UsageError(f"ipmitool: invalid option -- '{letter}'")
        if pos + 1 < len(arg):
            options[letter] = arg[pos + 1 :]
            return index + 1
        if index + 1 >= len(argv):
            raise UsageError(f"ipmitool: option requires an argument -- '{letter}'")
        options[letter] = argv[index + 1]
        return index + 2
    return index + 1


def read_password_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().rstrip("\r\n")
    except OSError as exc:
        raise UsageError(f"Unable to read password from file {path}: {exc.strerror}") from None


def parse_command(words: list[str], call: Invocation) -> None:
    """The command words → the hook action (and the user fields)."""
    if not words:
        raise UsageError("No command provided!")
    if words[0] == "power":  # ipmitool's shortcut for `chassis power`
        words = ["chassis", *words]
    if words[0] == "chassis":
        call.action = power_operation(words[1:])
    elif words[0] == "user":
        user_command(words[1:], call)
    else:
        raise UsageError(f"Invalid command: {words[0]}")


def power_operation(words: list[str]) -> str:
    if not words or words[0] != "power":
        raise UsageError(
            "chassis: only `chassis power <status|on|off|cycle|reset|soft>` is supported"
        )
    if len(words) != 2:
        raise UsageError("chassis power Commands: status, on, off, cycle, reset, diag, soft")
    operation = POWER_OPERATIONS.get(words[1])
    if operation is None:
        raise UsageError(f"Invalid chassis power command: {words[1]}")
    return operation


def user_command(words: list[str], call: Invocation) -> None:
    if words[:1] == ["list"] and len(words) <= 2:
        call.action = "user-list"
        return
    if words[:2] == ["set", "password"] and len(words) in (4, 5):
        if not words[2].strip() or len(words[2].split()) != 1:
            raise UsageError(f"Invalid user ID: {words[2]!r}")
        if len(words) == 5 and words[4] not in ("16", "20"):
            raise UsageError("Password size must be 16 or 20")
        call.action = "user-set-password"
        call.user_id = words[2]
        call.new_password = words[3]
        return
    if words[:2] == ["set", "password"]:
        raise UsageError(
            "user set password <user id> <password> [<16|20>]: "
            "csext cannot prompt, give the password"
        )
    raise UsageError(f"Invalid user command: '{' '.join(words[:1])}'")


def parse_invocation(argv: list[str], environ: Mapping[str, str]) -> Invocation | None:
    """The call argv describes; None for `-V`."""
    options, words = parse_options(argv, environ)
    if "V" in options:
        return None
    call = Invocation()
    parse_command(words, call)
    call.address = options.get("H") or None
    call.username = options.get("U")
    call.password = options.get("P")
    if "p" in options:
        try:
            call.port = int(options["p"])
        except ValueError:
            raise UsageError(f"Invalid port: {options['p']}") from None
    if not call.address:
        raise UsageError("csext ipmitool needs the BMC address: -H <address>")
    return call


# ---------------------------------------------------------------------------- config


class Route:
    __slots__ = ("extension", "pattern")

    def __init__(self, pattern: str, extension: str) -> None:
        self.pattern = pattern
        self.extension = extension


class BridgeConfig:
    __slots__ = ("default", "routes", "timeout")

    def __init__(self, default: str | None, routes: list[Route], timeout: float) -> None:
        self.default = default
        self.routes = routes
        self.timeout = timeout


def config_path(environ: Mapping[str, str]) -> str | None:
    """forward's rule: a missing default config file is no error, a missing named one is."""
    try:
        return fwd.config_path(environ)
    except fwd.ForwardError as exc:
        raise BridgeError(str(exc)) from None


def top_level_keys(path: str | None, prefix: str) -> dict[str, str]:
    """Every top-level `key: value` line whose key starts with `prefix` (bridges/flatyaml.py)."""
    if path is None:
        return {}
    try:
        keys = flatyaml.read_keys(path) or {}
    except OSError as exc:
        raise BridgeError(f"cannot read config file {path}: {exc.strerror}") from None
    return {name: value for name, value in keys.items() if name.startswith(prefix)}


def load_config(path: str | None) -> BridgeConfig:
    """`ipmitool_extension`, `ipmitool_timeout` and `ipmitool_route_<n>: "<glob> <extension>"`."""
    keys = top_level_keys(path, "ipmitool_")
    routes: list[tuple[int, Route]] = []
    for key, value in keys.items():
        if not key.startswith("ipmitool_route_"):
            continue
        suffix = key.removeprefix("ipmitool_route_")
        parts = value.split()
        if not suffix.isdigit() or len(parts) != 2:
            raise BridgeError(
                f"{path}: {key}: {value!r} is not a route; write "
                '`ipmitool_route_<n>: "<address glob> <extension>"`, e.g. '
                '`ipmitool_route_1: "10.1.* redfish-power"`'
            )
        routes.append((int(suffix), Route(parts[0], parts[1])))
    routes.sort(key=lambda item: item[0])
    return BridgeConfig(
        default=keys.get("ipmitool_extension") or None,
        routes=[route for _, route in routes],
        timeout=parse_timeout(keys.get("ipmitool_timeout", ""), path),
    )


def parse_timeout(text: str, path: str | None) -> float:
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise BridgeError(
            f"{path}: ipmitool_timeout must be seconds (0 < n <= 3600), got {text!r}; keep it "
            "a few seconds below CloudStack's outofbandmanagement.action.timeout"
        )
    return value


def choose_extension(config: BridgeConfig, address: str, path: str | None) -> str:
    """The first route whose glob matches the BMC address, else the default."""
    if config.routes:
        from fnmatch import fnmatchcase  # only configs with routes pay for `re`

        for route in config.routes:
            if fnmatchcase(address, route.pattern):
                return route.extension
    if config.default:
        return config.default
    raise BridgeError(
        f"no oob-management extension for BMC {address}: add `ipmitool_extension: <name>` "
        f"(or an `ipmitool_route_<n>` that matches) to {path or fwd.DEFAULT_CONFIG_FILE}"
    )


# ---------------------------------------------------------------------------- rendering


class Output:
    """What to print and the exit status."""

    __slots__ = ("code", "stderr", "stdout")

    def __init__(self, code: int, stdout: str = "", stderr: str = "") -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr


def scrub(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "****")
    return text


def failure_reason(
    reply: Mapping[str, Any], result: Mapping[str, Any] | None, secrets: list[str]
) -> str:
    """Why the call failed, from the worker's reply, with the passwords scrubbed."""
    return scrub(_reason(reply, result), secrets)


def _reason(reply: Mapping[str, Any], result: Mapping[str, Any] | None) -> str:
    error = reply.get("error")
    if isinstance(error, dict) and error.get("message"):
        kind = error.get("kind")
        return f"{kind}: {error['message']}" if kind else str(error["message"])
    if result and result.get("error"):
        return str(result["error"])
    tail = str(reply.get("stderr") or reply.get("stdout") or "").strip()
    return tail[-300:] or f"extension exited with {reply.get('exit_code')}"


def render(reply: Mapping[str, Any], call: Invocation, extension: str) -> Output:
    """The worker's reply as ipmitool would have answered."""
    result = reply.get("result")
    result = result if isinstance(result, dict) else None
    if result is not None and result.get("auth_failure"):
        detail = f"csext: extension {extension!r}: {failure_reason(reply, result, call.secrets())}"
        return Output(ERROR_EXIT, stderr="\n".join((*AUTH_FAILURE_LINES, detail)) + "\n")
    ok = result is not None and result.get("success") is True and not result.get("fallback")
    if not ok:
        why = f"extension {extension!r}: {failure_reason(reply, result, call.secrets())}"
        return Output(ERROR_EXIT, stderr=failed_line(call) + f": {why}\n")
    assert result is not None
    return rendered_success(result, call)


def failed_line(call: Invocation) -> str:
    if call.action == "status":
        return "Unable to get Chassis Power Status"
    if call.action == "user-list":
        return "Unable to list users"
    if call.action == "user-set-password":
        return f"Set User Password command failed (user {call.user_id})"
    return f"Set Chassis Power Control to {POWER_CONTROL[call.action]} failed"


def rendered_success(result: Mapping[str, Any], call: Invocation) -> Output:
    if call.action == "status":
        state = result.get("power_state")
        if state in ("On", "Off"):
            return Output(0, stdout=f"Chassis Power is {str(state).lower()}\n")
        return Output(
            ERROR_EXIT, stderr=f"Unable to get Chassis Power Status: power state {state}\n"
        )
    if call.action == "user-list":
        table, notes = user_table(result.get("users") or [])
        return Output(0, stdout=table, stderr="".join(note + "\n" for note in notes))
    if call.action == "user-set-password":
        return Output(0, stdout=f"Set User Password command successful (user {call.user_id})\n")
    return Output(0, stdout=f"Chassis Power Control: {POWER_CONTROL[call.action]}\n")


MAX_USER_NAME = 16
"""IPMI user names are at most 16 bytes (ipmitool prints them in a 17-wide column)."""


def user_table(users: list[Any]) -> tuple[str, list[str]]:
    """ipmitool's `user list` layout (`%-4d%-17s%-8s%-11s%-11s%s` under its header) and the
    notes for stderr. CloudStack splits each row on runs of spaces (IpmitoolWrapper.findIpmiUser,
    plugins/outofbandmanagement-drivers/ipmitool/.../IpmitoolWrapper.java @1502b60), so every
    column keeps at least one space after it: ids keep 3 characters, names 16 (ipmitool's
    limit); a longer name is cut to 16 and named on stderr."""
    lines, notes = [USER_LIST_HEADER], []
    for user in users:
        if not isinstance(user, dict):
            continue
        enabled = user.get("enabled") is not False
        flag = "true " if enabled else "false"
        privilege = str(user.get("privilege") or ("ADMINISTRATOR" if enabled else "NO ACCESS"))
        ident = "".join(str(user.get("id", "")).split())[:3] or "?"
        name = "_".join(str(user.get("name", "")).split())
        if len(name) > MAX_USER_NAME:
            notes.append(
                f"csext ipmitool: user {ident}: name {name!r} cut to {MAX_USER_NAME} characters "
                "(ipmitool's limit; CloudStack would not find a longer one)"
            )
            name = name[:MAX_USER_NAME]
        lines.append(f"{ident:<3} {name:<16} {'true ':<8}{flag:<11}{flag:<11}{privilege}")
    return "\n".join(lines) + "\n", notes


# ---------------------------------------------------------------------------- main


def call_extension(call: Invocation, environ: Mapping[str, str], started: float) -> Output:
    path = config_path(environ)
    config = load_config(path)
    assert call.address is not None
    extension = choose_extension(config, call.address, path)
    forwarded = fwd.Call(
        extension=extension, action=call.action, payload_file="", timeout=config.timeout
    )
    try:
        url, grace = fwd.amqp_url(environ), fwd.worker_grace(environ)
        reply = fwd.rpc(forwarded, url, call.payload(config.timeout), started, grace)
    except fwd.ForwardError as exc:
        raise BridgeError(str(exc)) from None
    except fastamqp.AmqpError as exc:
        raise BridgeError(fwd.explain(exc, forwarded)) from None
    return render(reply, call, extension)


def write(stream: Any, text: str) -> None:
    if text:
        stream.write(text.encode("utf-8", "replace"))
        stream.flush()


def main(argv: list[str], environ: Mapping[str, str] | None = None) -> int:
    """Entry point of `csext ipmitool`; returns the process exit status."""
    started = time.monotonic()
    env = os.environ if environ is None else environ
    out, err = sys.stdout.buffer, sys.stderr.buffer
    if argv[:1] in (["-h"], ["--help"]):
        write(out, USAGE)
        return 0
    secrets: list[str] = []
    try:
        call = parse_invocation(argv, env)
        if call is None:
            write(out, VERSION_LINE + "\n")
            return 0
        secrets = call.secrets()
        output = call_extension(call, env, started)
    except UsageError as exc:
        write(err, f"{exc}\n\n{USAGE}")
        return ERROR_EXIT
    except BridgeError as exc:
        write(err, scrub(f"Error: csext ipmitool: {exc}\n", secrets))
        return ERROR_EXIT
    except Exception as exc:  # a bug must still answer CloudStack in ipmitool's way
        message = f"Error: csext ipmitool: internal error: {type(exc).__name__}: {exc}\n"
        write(err, scrub(message, secrets))
        return ERROR_EXIT
    write(out, output.stdout)  # built from typed fields, never from the passwords
    write(err, output.stderr)  # failure details are scrubbed where they are built
    return output.code
