"""The CloudStack plugin end to end: Java adapters -> real RabbitMQ -> real `csext worker` -> the
bundled extensions (htpasswd-auth, totp-2fa, free-memory-planner), then each failure mode.

The adapters run in bridges/cloudstack-plugin/src/test/.../PluginDriver.java, built as the
management server builds beans (constructor, name, configure, start), on the compile-only
stand-ins of CloudStack's types: CloudStack itself cannot run here (docs/cloudstack-plugin.md,
"Limits"). Failure policy under test, from handlers/: authentication and 2FA refuse even a correct
login when csext cannot answer; the planner falls back to FirstFit's answers.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from workerkit import (
    consumers_at_least,
    settings_for,
    start_worker_process,
    stop_process,
    wait_until,
)

from csext.worker.amqp import names as c

from ._plugin import (
    ROOT,
    build_plugin,
    closed_port,
    copy_extension,
    drive,
    write_properties,
    write_sleeper,
)

# The first test also pays for the module set-up: the javac build and two worker start-ups.
pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

PASSWORD = "wonderland"  # alice's, in the bundled users.htpasswd
RFC_KEY = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # RFC 6238's secret; at T=59 the code is 287082
CODE = "287082"
GIB = 1024**3
# cluster id -> [total, used] memory bytes: free 1 GiB (6 %), 14 GiB, 8 GiB
CAPACITY = {"1": [16 * GIB, 15 * GIB], "2": [16 * GIB, 2 * GIB], "3": [16 * GIB, 8 * GIB]}
FAILURE_DEADLINE_MS = 1500
SLACK_MS = 2000  # JVM and a loaded CI machine; "no call blocks past its deadline" with room

# failure mode -> (auth, 2FA, planner extension, what the WARN line must name)
MODES = {
    "broker-stopped": ("htpasswd-auth", "totp-2fa", "free-memory-planner", "broker-unreachable"),
    "worker-stopped": ("htpasswd-stopped", "totp-stopped", "planner-stopped", "deadline"),
    "disabled": ("htpasswd-off", "totp-off", "planner-off", "disabled"),
    "unknown": ("no-such-auth", "no-such-2fa", "no-such-planner", "unknown-extension"),
    "deadline": ("slow-auth", "slow-2fa", "slow-planner", "timeout"),
    "malformed": ("garbled-auth", "garbled-2fa", "garbled-planner", "malformed-reply"),
}


@dataclass
class Stage:
    properties: Path
    jar: Path


def _wait_consumers(amqp_url: str, names: list[str]) -> None:
    async def ready() -> bool:
        checks = [consumers_at_least(amqp_url, c.rpc_queue(n), 1) for n in names]
        return all(await asyncio.gather(*checks))

    asyncio.run(wait_until(ready, 60, f"consumers on {names}"))


def _registry(root: Path) -> Path:
    registry = root / "registry"
    registry.mkdir()
    copy_extension("htpasswd-auth", registry, "htpasswd-auth")
    copy_extension("totp-2fa", registry, "totp-2fa", env={"TOTP_NOW": "59"})
    copy_extension("free-memory-planner", registry, "free-memory-planner")
    copy_extension("htpasswd-auth", registry, "htpasswd-off", enabled=False)
    copy_extension("totp-2fa", registry, "totp-off", enabled=False)
    copy_extension("free-memory-planner", registry, "planner-off", enabled=False)
    write_sleeper(registry, "slow-auth", "user-authenticator", ["authenticate"])
    write_sleeper(registry, "slow-2fa", "two-factor", ["check", "setup"])
    write_sleeper(registry, "slow-planner", "deployment-planner", ["can-handle", "order-clusters"])
    return registry


STOPPED = ["htpasswd-stopped", "totp-stopped", "planner-stopped"]
SERVED = [
    "htpasswd-auth",
    "totp-2fa",
    "free-memory-planner",
    "slow-auth",
    "slow-2fa",
    "slow-planner",
]


def _worker_to_stop(amqp_url: str, root: Path) -> subprocess.Popen[bytes]:
    """A worker for STOPPED, stopped once it consumes: their queues exist, nobody answers."""
    registry = root / "stopped-registry"
    registry.mkdir()
    copy_extension("htpasswd-auth", registry, "htpasswd-stopped")
    copy_extension("totp-2fa", registry, "totp-stopped")
    copy_extension("free-memory-planner", registry, "planner-stopped")
    settings = settings_for(amqp_url, registry, "cloudstack-events", root / "stopped")
    settings.run_dir.mkdir(parents=True)
    return start_worker_process(settings, log=root / "stopped-worker.log")


def _start_garbler(amqp_url: str) -> subprocess.Popen[str]:
    garbler = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("garbler.py")),
            amqp_url,
            "garbled-auth=text",
            "garbled-2fa=no-result",
            "garbled-planner=bad-ids",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert garbler.stdout is not None and garbler.stdout.readline().strip() == "ready"
    return garbler


def _properties(root: Path, amqp_url: str) -> Path:
    values = {
        "broker.url": amqp_url,
        "deadline.ms": "5000",
        "CSEXT.extension": "htpasswd-auth",
        "csext.extension": "totp-2fa",
        "CsextPlanner.extension": "free-memory-planner",
    }
    for mode, (auth, two_factor, planner, _) in MODES.items():
        for adapter, extension in (("AUTH", auth), ("TFA", two_factor), ("PLAN", planner)):
            values[f"{adapter}-{mode}.extension"] = extension
            values[f"{adapter}-{mode}.deadline.ms"] = str(FAILURE_DEADLINE_MS)
            if mode == "broker-stopped":
                values[f"{adapter}-{mode}.broker.url"] = (
                    f"amqp://guest:guest@127.0.0.1:{closed_port()}/"
                )
    return write_properties(root / "csext.properties", values)


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory, amqp_url: str) -> Iterator[Stage]:
    jar = build_plugin()
    root = tmp_path_factory.mktemp("plugin")
    registry = _registry(root)
    to_stop = _worker_to_stop(amqp_url, root)
    settings = settings_for(amqp_url, registry, f"cloudstack-events-{uuid.uuid4().hex[:6]}", root)
    settings.run_dir.mkdir(parents=True)
    worker = start_worker_process(settings, log=root / "worker.log")
    garbler = None
    try:
        try:
            _wait_consumers(amqp_url, SERVED + STOPPED)
        finally:
            assert stop_process(to_stop) == 0
        garbler = _start_garbler(amqp_url)
        yield Stage(_properties(root, amqp_url), jar)
    finally:
        if garbler is not None:
            garbler.kill()
            garbler.wait(10)
            assert garbler.stdout is not None
            garbler.stdout.close()
        stop_process(worker)


def test_jar_holds_the_modules_cloudstack_loads_and_no_class_of_cloudstack(stage: Stage) -> None:
    with zipfile.ZipFile(stage.jar) as jar:
        names = set(jar.namelist())
        for module, parent in (
            ("csext-auth", "api"),
            ("csext-2fa", "api"),
            ("csext-planner", "planner"),
        ):
            folder = f"META-INF/cloudstack/{module}/"
            props = jar.read(folder + "module.properties").decode()
            assert f"name={module}" in props and f"parent={parent}" in props
            context = jar.read(f"{folder}spring-{module}-context.xml").decode()
            for bean_class in re.findall(r'class="([^"]+)"', context):
                assert bean_class.replace(".", "/") + ".class" in names, bean_class
            assert '<property name="name"' in context
    classes = [n for n in names if n.endswith(".class")]
    assert classes and all(n.startswith("org/csext/cloudstack/") for n in classes), [
        n for n in classes if not n.startswith("org/csext/cloudstack/")
    ]


def test_logins_2fa_and_cluster_order_through_the_bundled_extensions(stage: Stage) -> None:
    user_vm = {"type": "User", "ram_size": 512}
    answers, log = drive(
        stage.properties,
        [
            {
                "op": "auth",
                "adapter": "CSEXT",
                "username": "alice",
                "password": PASSWORD,
                "domain_id": 1,
            },
            {
                "op": "auth",
                "adapter": "CSEXT",
                "username": "alice",
                "password": "not-it",
                "domain_id": 1,
            },
            {"op": "auth", "adapter": "CSEXT", "username": "bob", "password": "builder"},
            {"op": "auth", "adapter": "CSEXT", "username": "mallory", "password": "x"},
            # totp-2fa exits 1 when the code is right (declared in its manifest): passed.
            {
                "op": "check2fa",
                "adapter": "csext",
                "code": CODE,
                "user": {"username": "alice", "key": RFC_KEY},
            },
            {
                "op": "check2fa",
                "adapter": "csext",
                "code": "287083",
                "user": {"username": "alice", "key": RFC_KEY},
            },
            {"op": "setup2fa", "adapter": "csext", "user": {"username": "carol"}},
            {"op": "can_handle", "adapter": "CsextPlanner", "vm": user_vm},
            {"op": "can_handle", "adapter": "CsextPlanner", "vm": {"type": "DomainRouter"}},
            {
                "op": "order",
                "adapter": "CsextPlanner",
                "vm": user_vm,
                "candidates": [1, 2, 3],
                "capacity": CAPACITY,
            },
            {
                "op": "order",
                "adapter": "CsextPlanner",
                "vm": user_vm,
                "candidates": [1, 2, 3],
                "capacity": CAPACITY,
                "avoid": [3],
            },
            {
                "op": "order",
                "adapter": "CsextPlanner",
                "vm": {"type": "User", "ram_size": 10240},
                "candidates": [1, 2, 3],
                "capacity": CAPACITY,
            },
        ],
    )
    ok, wrong, bob, stranger, passed, failed, setup, yes, no, order, avoided, big = answers
    assert (ok["authenticated"], ok["action"]) == (True, None)
    assert (wrong["authenticated"], wrong["action"]) == (
        False,
        "INCREMENT_INCORRECT_LOGIN_ATTEMPT_COUNT",
    )
    assert bob["authenticated"] is True
    assert (stranger["authenticated"], stranger["action"]) == (
        False,
        None,
    )  # not counted: next authenticator
    assert passed["passed"] is True
    assert failed["passed"] is False
    assert failed["exception"] == "com.cloud.exception.CloudTwoFactorAuthenticationException"
    assert re.fullmatch(r"[A-Z2-7]{32}", setup["secret"]) and setup["stored"] == setup["secret"]
    assert (yes["can_handle"], no["can_handle"]) == (True, False)
    assert order["clusters"] == [2, 3, 1]  # most free memory first
    assert avoided["clusters"] == [2, 1]
    assert big["clusters"] == [2]  # only cluster 2 has 10 GiB free
    assert PASSWORD not in log and CODE not in log and setup["secret"] not in log


@pytest.mark.parametrize("mode", list(MODES))
def test_failures_refuse_logins_and_leave_planning_to_firstfit(stage: Stage, mode: str) -> None:
    """A correct login is refused, and FirstFit's answers stand, whenever csext cannot answer."""
    adapters = {a: f"{a}-{mode}" for a in ("AUTH", "TFA", "PLAN")}
    answers, log = drive(
        stage.properties,
        [
            # Warm-up (a stranger, through the working adapter): class loading is not waiting.
            {"op": "auth", "adapter": "CSEXT", "username": "warm-up", "password": "x"},
            {
                "op": "auth",
                "adapter": adapters["AUTH"],
                "username": "alice",
                "password": PASSWORD,
                "domain_id": 1,
            },
            {
                "op": "check2fa",
                "adapter": adapters["TFA"],
                "code": CODE,
                "user": {"username": "alice", "key": RFC_KEY},
            },
            # The extension would say no to a router and put cluster 2 first; FirstFit: yes, 1 2 3.
            {"op": "can_handle", "adapter": adapters["PLAN"], "vm": {"type": "DomainRouter"}},
            {
                "op": "order",
                "adapter": adapters["PLAN"],
                "vm": {"type": "User", "ram_size": 512},
                "candidates": [1, 2, 3],
                "capacity": CAPACITY,
            },
        ],
    )
    answers = answers[1:]
    login, two_factor, can_handle, order = answers
    assert (login["authenticated"], login["action"]) == (False, None), log
    assert two_factor["passed"] is False, log
    assert two_factor["exception"] == "com.cloud.exception.CloudTwoFactorAuthenticationException"
    assert can_handle["can_handle"] is True, log
    assert order["clusters"] == [1, 2, 3], log
    # No call waits past its deadline. (A stopped broker is refused at once, not timed out: its
    # WARN line names broker-unreachable, checked below, not deadline.)
    assert all(a["ms"] < FAILURE_DEADLINE_MS + SLACK_MS for a in answers), [
        a["ms"] for a in answers
    ]
    warnings = [line for line in log.splitlines() if line.startswith("WARNING:")]
    assert len(warnings) == 4, log
    assert all(MODES[mode][3] in line for line in warnings), log
    assert "refused" in warnings[0] and "fail-closed" in warnings[0]
    assert "FirstFit" in warnings[2] and "fail-open" in warnings[3]
    assert PASSWORD not in log and CODE not in log and RFC_KEY not in log


def test_the_doc_names_every_setting_the_plugin_reads() -> None:
    doc = (ROOT / "docs" / "cloudstack-plugin.md").read_text()
    for setting in (
        "broker.url",
        "extension",
        "deadline.ms",
        "user.authenticators.order",
        "user.2fa.default.provider",
        "deploymentplanner",
        "csext.properties",
    ):
        assert setting in doc, setting


def test_an_adapter_without_an_extension_says_no_once_and_never_encodes(stage: Stage) -> None:
    """Not configured: logins are "not mine" (logged once: CloudStack appends unlisted
    authenticators to its chain), 2FA is refused, the planner is FirstFit; encode() is null so
    CloudStack always hashes new passwords with another encoder."""
    login = {"op": "auth", "adapter": "UNSET", "username": "alice", "password": PASSWORD}
    answers, log = drive(
        stage.properties,
        [
            login,
            login,
            {"op": "encode", "adapter": "CSEXT", "password": PASSWORD},
            {
                "op": "check2fa",
                "adapter": "UNSET",
                "code": CODE,
                "user": {"username": "alice", "key": RFC_KEY},
            },
            {
                "op": "order",
                "adapter": "UNSET",
                "vm": {"type": "User", "ram_size": 512},
                "candidates": [1, 2, 3],
                "capacity": CAPACITY,
            },
        ],
    )
    first, second, encoded, two_factor, order = answers
    assert (first["authenticated"], first["action"]) == (False, None)
    assert (second["authenticated"], second["action"]) == (False, None)
    assert encoded["encoded"] is None
    assert two_factor["passed"] is False
    assert order["clusters"] == [1, 2, 3]
    about_login = [line for line in log.splitlines() if "login of user" in line]
    assert len(about_login) == 1 and "UNSET.extension" in about_login[0], log
