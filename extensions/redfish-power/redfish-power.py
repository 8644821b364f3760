#!/usr/bin/env python3
"""redfish-power: CloudStack out-of-band power management through a BMC's Redfish API.

    redfish-power.py <action> <payload-file> <timeout>     (called by csext)

Actions (the oob-management hook): on, off, cycle, reset, soft, status, user-list,
user-set-password. The payload carries address, port, username, password (and user_id,
new_password for user-set-password). Stdlib only (urllib), HTTP basic auth on every request.

    status             GET <system> -> PowerState (On, Off; PoweringOn/PoweringOff -> Unknown)
    on|off|cycle|reset|soft
                       POST <system>/Actions/ComputerSystem.Reset  {"ResetType": On | ForceOff |
                       PowerCycle | ForceRestart | GracefulShutdown}
    user-list          GET /redfish/v1/AccountService/Accounts (+ each member)
    user-set-password  PATCH <account> {"Password": ...} (If-Match: the account's ETag)

<system> is the first member of /redfish/v1/Systems, or REDFISH_SYSTEM (an id such as
`System.Embedded.1`, or a path). Settings (spec.env): REDFISH_SCHEME (https), REDFISH_PORT
(default: the payload's port unless it is IPMI's 623, else the scheme's), REDFISH_VERIFY_TLS
(true; `false` accepts any certificate: see README), REDFISH_CA_FILE.

Answer: one JSON line; exit 0 success, 77 when the BMC refuses the credentials (HTTP 401),
1 otherwise. Passwords are never printed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from typing import Any

AUTH_FAILURE_EXIT = 77
RESET_TYPES = {
    "on": "On",
    "off": "ForceOff",
    "cycle": "PowerCycle",
    "reset": "ForceRestart",
    "soft": "GracefulShutdown",
}
FALLBACK_RESET = {"PowerCycle": "ForceRestart"}
"""Used when the system does not offer the wanted type (many BMCs lack PowerCycle)."""
STATES = {"On": "On", "Off": "Off"}
IPMI_PORT = 623
PRIVILEGES = {"Administrator": "ADMINISTRATOR", "Operator": "OPERATOR", "ReadOnly": "USER"}


class Failure(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Bmc:
    """One BMC's Redfish service, every request bounded by the run's deadline."""

    def __init__(self, payload: dict[str, Any], env: dict[str, str], deadline: float) -> None:
        address = str(payload.get("address") or "").strip()
        if not address:
            raise Failure("payload has no BMC address")
        self.base = base_url(address, payload.get("port"), env)
        self.secrets = [s for s in (payload.get("password"), payload.get("new_password")) if s]
        user = f"{payload.get('username') or ''}:{payload.get('password') or ''}"
        self.auth = "Basic " + base64.b64encode(user.encode()).decode()
        self.context = tls_context(env)
        self.deadline = deadline

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[Any, dict[str, str]]:
        """(JSON body or None, response headers) of one request."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Failure(f"out of time before {method} {path}")
        data = json.dumps(body).encode() if body is not None else None
        try:
            req = urllib.request.Request(self.base + path, data=data, method=method)
        except ValueError as exc:
            raise Failure(f"bad BMC address {self.base!r}: {exc}") from None
        req.add_header("Authorization", self.auth)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=left, context=self.context) as response:
                raw = response.read()
                return (json.loads(raw) if raw.strip() else None), dict(response.headers)
        except urllib.error.HTTPError as exc:
            raise self.http_failure(method, path, exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Failure(f"cannot reach the BMC at {self.base}: {reason}") from None
        except ValueError:
            raise Failure(f"{method} {path}: the BMC answered something that is not JSON") from None

    def http_failure(self, method: str, path: str, exc: urllib.error.HTTPError) -> Failure:
        if exc.code == 401:
            return Failure("the BMC refused the credentials (HTTP 401)", AUTH_FAILURE_EXIT)
        return Failure(f"{method} {path}: HTTP {exc.code} {redfish_message(exc)}".strip())

    def get(self, path: str) -> dict[str, Any]:
        body, _ = self.request("GET", path)
        if not isinstance(body, dict):
            raise Failure(f"GET {path}: expected a JSON object")
        return body


def base_url(address: str, port: Any, env: dict[str, str]) -> str:
    """scheme://host[:port] from the address (a host, host:port or URL) and the settings."""
    if "://" in address:
        return address.rstrip("/")
    scheme = env.get("REDFISH_SCHEME", "https").lower()
    if scheme not in ("http", "https"):
        raise Failure(f"REDFISH_SCHEME must be http or https, got {scheme!r}")
    host, given = split_host_port(address)
    chosen = env.get("REDFISH_PORT") or given or port
    try:
        number = int(chosen) if chosen else None
    except ValueError:
        raise Failure(f"BMC port must be a number, got {chosen!r}") from None
    if number == IPMI_PORT and not env.get("REDFISH_PORT"):
        number = None  # CloudStack's usual OOB port is IPMI's: use the scheme's default
    return f"{scheme}://{host}" + (f":{number}" if number else "")


def split_host_port(address: str) -> tuple[str, str | None]:
    """`host`, `host:port`, `v6`, `[v6]` or `[v6]:port` -> (URL host, port or None)."""
    if address.startswith("["):
        host, _, rest = address.partition("]")
        return host + "]", rest.removeprefix(":") or None
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        return host, port or None
    return (f"[{address}]" if ":" in address else address), None


def tls_context(env: dict[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=env.get("REDFISH_CA_FILE") or None)
    if env.get("REDFISH_VERIFY_TLS", "true").strip().lower() in ("false", "0", "no", "off"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def redfish_message(exc: urllib.error.HTTPError) -> str:
    """The first @Message.ExtendedInfo message of a Redfish error body, if any."""
    try:
        error = json.loads(exc.read() or b"{}").get("error", {})
        info = error.get("@Message.ExtendedInfo") or [{}]
        return str(info[0].get("Message") or error.get("message") or exc.reason)
    except (ValueError, AttributeError, TypeError):
        return str(exc.reason)


def member_paths(collection: dict[str, Any]) -> list[str]:
    return [m["@odata.id"] for m in collection.get("Members", []) if "@odata.id" in m]


def system_path(bmc: Bmc, env: dict[str, str]) -> str:
    wanted = env.get("REDFISH_SYSTEM", "").strip()
    if wanted.startswith("/"):
        return wanted
    if wanted:
        return f"/redfish/v1/Systems/{wanted}"
    members = member_paths(bmc.get("/redfish/v1/Systems"))
    if not members:
        raise Failure("the BMC lists no systems under /redfish/v1/Systems")
    return members[0]


def power_state(bmc: Bmc, env: dict[str, str]) -> dict[str, Any]:
    state = bmc.get(system_path(bmc, env)).get("PowerState")
    return {"status": "success", "power_state": STATES.get(str(state), "Unknown")}


def reset(bmc: Bmc, env: dict[str, str], action: str) -> dict[str, Any]:
    path = system_path(bmc, env)
    system = bmc.get(path)
    reset_action = system.get("Actions", {}).get("#ComputerSystem.Reset", {})
    target = reset_action.get("target") or f"{path}/Actions/ComputerSystem.Reset"
    allowed = reset_action.get("ResetType@Redfish.AllowableValues")
    reset_type = RESET_TYPES[action]
    if allowed and reset_type not in allowed:
        reset_type = FALLBACK_RESET.get(reset_type, reset_type)
        if reset_type not in allowed:
            raise Failure(f"the system does not offer ResetType {RESET_TYPES[action]} ({allowed})")
    bmc.request("POST", target, {"ResetType": reset_type})
    state = "Off" if action in ("off", "soft") else "On"
    return {"status": "success", "power_state": state, "message": f"ResetType {reset_type}"}


def accounts(bmc: Bmc) -> list[tuple[str, dict[str, Any]]]:
    collection = bmc.get("/redfish/v1/AccountService/Accounts")
    return [(path, bmc.get(path)) for path in member_paths(collection)]


def user_list(bmc: Bmc) -> dict[str, Any]:
    users = [
        {
            "id": str(account.get("Id") or path.rstrip("/").rsplit("/", 1)[-1]),
            "name": account["UserName"],
            "privilege": PRIVILEGES.get(str(account.get("RoleId")), "NO ACCESS"),
            "enabled": account.get("Enabled") is not False,
        }
        for path, account in accounts(bmc)
        if account.get("UserName")
    ]
    return {"status": "success", "users": users}


def set_password(bmc: Bmc, payload: dict[str, Any]) -> dict[str, Any]:
    user_id = str(payload.get("user_id") or "")
    if not user_id or payload.get("new_password") is None:
        raise Failure("user-set-password needs user_id and new_password")
    path = f"/redfish/v1/AccountService/Accounts/{user_id}"
    _, headers = bmc.request("GET", path)
    etag = next((v for k, v in headers.items() if k.lower() == "etag"), None)
    bmc.request(
        "PATCH", path, {"Password": payload["new_password"]}, {"If-Match": etag} if etag else None
    )
    return {"status": "success", "message": f"password of user {user_id} changed"}


def run(
    action: str, payload: dict[str, Any], env: dict[str, str], deadline: float
) -> dict[str, Any]:
    bmc = Bmc(payload, env, deadline)
    try:
        if action == "status":
            return power_state(bmc, env)
        if action in RESET_TYPES:
            return reset(bmc, env, action)
        if action == "user-list":
            return user_list(bmc)
        if action == "user-set-password":
            return set_password(bmc, payload)
    except Failure as exc:
        raise Failure(scrub(str(exc), bmc.secrets), exc.code) from None
    raise Failure(
        f"unknown action {action!r}: use on, off, cycle, reset, soft, status, user-list "
        "or user-set-password"
    )


def scrub(text: str, secrets: list[Any]) -> str:
    for secret in sorted((str(s) for s in secrets), key=len, reverse=True):
        text = text.replace(secret, "****")
    return text


def deadline_of(argv: list[str]) -> float:
    """Monotonic deadline: argv[3] seconds (or CSEXT_DEADLINE), less a second to answer."""
    seconds = 30.0
    if len(argv) > 3:
        with contextlib.suppress(ValueError):
            seconds = float(argv[3])
    epoch = os.environ.get("CSEXT_DEADLINE")
    if epoch:
        with contextlib.suppress(ValueError):
            seconds = min(seconds, float(epoch) - time.time())
    return time.monotonic() + max(1.0, seconds - 1.0)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(
            json.dumps(
                {
                    "status": "error",
                    "error": "usage: redfish-power.py <action> <payload-file> <timeout>",
                }
            )
        )
        return 1
    try:
        with open(argv[2], encoding="utf-8") as handle:
            payload = json.load(handle)
    except (OSError, ValueError) as exc:
        print(json.dumps({"status": "error", "error": f"cannot read the payload: {exc}"}))
        return 1
    try:
        answer = run(argv[1].lower(), payload, dict(os.environ), deadline_of(argv))
    except Failure as exc:
        answer = {"status": "error", "error": str(exc)}
        if exc.code == AUTH_FAILURE_EXIT:
            answer["auth_failure"] = True
        print(json.dumps(answer))
        return exc.code
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
