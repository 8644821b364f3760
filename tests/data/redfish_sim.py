"""A small Redfish BMC simulator for the redfish-power tests: http.server on 127.0.0.1 only.

One computer system (`/redfish/v1/Systems/1`) with a power state and a ComputerSystem.Reset
action, and an AccountService whose accounts are also the basic-auth credentials it accepts.
It records every request (method, path, JSON body) so tests can check what the driver sent.

    with RedfishSimulator(users={"admin": "calvin"}) as bmc:   # random free port
        bmc.url, bmc.power_state, bmc.requests, bmc.password_of("admin")

Run it by hand: `python tests/data/redfish_sim.py [port]` (admin/calvin, http).
"""

from __future__ import annotations

import base64
import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SYSTEMS = "/redfish/v1/Systems"
SYSTEM = "/redfish/v1/Systems/1"
RESET = "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
ACCOUNTS = "/redfish/v1/AccountService/Accounts"
ALL_RESET_TYPES = ("On", "ForceOff", "GracefulShutdown", "ForceRestart", "PowerCycle")
STATE_AFTER = {
    "On": "On",
    "ForceOff": "Off",
    "GracefulShutdown": "Off",
    "ForceRestart": "On",
    "PowerCycle": "On",
}
ROLES = ("Administrator", "Operator", "ReadOnly")


class RedfishSimulator:
    def __init__(
        self,
        users: dict[str, str] | None = None,
        power_state: str = "Off",
        reset_types: tuple[str, ...] = ALL_RESET_TYPES,
        certfile: str | None = None,
    ) -> None:
        self.power_state = power_state
        self.reset_types = reset_types
        self.requests: list[tuple[str, str, Any]] = []
        self.lock = threading.Lock()
        self.accounts: dict[str, dict[str, Any]] = {}
        for index, (name, password) in enumerate((users or {"admin": "calvin"}).items()):
            self.accounts[str(index + 2)] = {
                "UserName": name,
                "Password": password,
                "RoleId": ROLES[min(index, len(ROLES) - 1)],
                "Enabled": True,
                "version": 1,
            }
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.scheme = "http"
        if certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> RedfishSimulator:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def password_of(self, name: str) -> str | None:
        for account in self.accounts.values():
            if account["UserName"] == name:
                return str(account["Password"])
        return None

    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return any(
            a["UserName"] == name and a["Password"] == password and a["Enabled"]
            for a in self.accounts.values()
        )

    # -- resources

    def system(self) -> dict[str, Any]:
        return {
            "@odata.id": SYSTEM,
            "Id": "1",
            "PowerState": self.power_state,
            "Actions": {
                "#ComputerSystem.Reset": {
                    "target": RESET,
                    "ResetType@Redfish.AllowableValues": list(self.reset_types),
                }
            },
        }

    def account(self, ident: str) -> dict[str, Any]:
        data = self.accounts[ident]
        return {
            "@odata.id": f"{ACCOUNTS}/{ident}",
            "Id": ident,
            "UserName": data["UserName"],
            "RoleId": data["RoleId"],
            "Enabled": data["Enabled"],
            "Password": None,
        }

    def etag(self, ident: str) -> str:
        return f'W/"{ident}-{self.accounts[ident]["version"]}"'


def _error(message: str) -> dict[str, Any]:
    return {
        "error": {"code": "Base.1.0.GeneralError", "@Message.ExtendedInfo": [{"Message": message}]}
    }


class _Handler(BaseHTTPRequestHandler):
    sim: RedfishSimulator

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def answer(self, code: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)

    def body(self) -> Any:
        size = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(size) if size else b""
        return json.loads(raw) if raw else None

    def handle_any(self, method: str) -> None:
        body = self.body()
        with self.sim.lock:
            self.sim.requests.append((method, self.path, body))
            if not self.sim.authorized(self.headers.get("Authorization")):
                self.answer(
                    401,
                    _error("Invalid username or password"),
                    {"WWW-Authenticate": 'Basic realm="redfish"'},
                )
                return
            self.route(method, body)

    def route(self, method: str, body: Any) -> None:
        path = self.path.rstrip("/")
        if method == "GET" and path == SYSTEMS:
            self.answer(200, {"Members": [{"@odata.id": SYSTEM}], "Members@odata.count": 1})
        elif method == "GET" and path == SYSTEM:
            self.answer(200, self.sim.system())
        elif method == "POST" and path == RESET:
            self.reset(body)
        elif method == "GET" and path == ACCOUNTS:
            members = [{"@odata.id": f"{ACCOUNTS}/{i}"} for i in sorted(self.sim.accounts)]
            self.answer(200, {"Members": members})
        elif path.startswith(ACCOUNTS + "/") and path.rsplit("/", 1)[1] in self.sim.accounts:
            self.account(method, path.rsplit("/", 1)[1], body)
        else:
            self.answer(404, _error(f"no resource {path}"))

    def reset(self, body: Any) -> None:
        kind = (body or {}).get("ResetType")
        if kind not in self.sim.reset_types:
            self.answer(400, _error(f"ResetType {kind} is not supported"))
            return
        self.sim.power_state = STATE_AFTER[kind]
        self.answer(204)

    def account(self, method: str, ident: str, body: Any) -> None:
        if method == "GET":
            self.answer(200, self.sim.account(ident), {"ETag": self.sim.etag(ident)})
            return
        if method != "PATCH":
            self.answer(405, _error("method not allowed"))
            return
        match = self.headers.get("If-Match")
        if match is not None and match != self.sim.etag(ident):
            self.answer(412, _error("ETag mismatch"))
            return
        self.sim.accounts[ident]["Password"] = (body or {}).get("Password")
        self.sim.accounts[ident]["version"] += 1
        self.answer(200, self.sim.account(ident), {"ETag": self.sim.etag(ident)})

    def do_GET(self) -> None:
        self.handle_any("GET")

    def do_POST(self) -> None:
        self.handle_any("POST")

    def do_PATCH(self) -> None:
        self.handle_any("PATCH")


def _handler_for(sim: RedfishSimulator) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"sim": sim})


if __name__ == "__main__":
    sim = RedfishSimulator()
    if len(sys.argv) > 1:
        sim.server.server_close()
        sim.server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _handler_for(sim))
    print(f"Redfish simulator on http://127.0.0.1:{sim.port} (admin/calvin)", flush=True)
    sim.server.serve_forever()
