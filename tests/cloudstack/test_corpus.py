"""CloudStack's own messages and outputs, through a real worker and real RabbitMQ, asserting the
exact bytes CloudStack would receive (fixtures: tests/cloudstack/fixtures, format: corpus.py).

One worker process serves the whole module; every fixture goes through it:
- events: published as CloudStack publishes them; the extension must get CloudStack's body
  exactly as parsed (nested AsyncJobEvent objects included, nothing unescaped), every copy of
  a non-VM transition (they come twice), and a `phase: post` extension only VM post events;
- Orchestrator / NetworkOrchestrator outputs: an extension prints the fixture, CloudStack runs
  the generated shim (`csext forward`), and must get the same bytes and exit code; csext's own
  reading goes into the run record (outcome, warnings);
- ipmitool: CloudStack's out-of-band driver runs `csext ipmitool` and must read what it reads
  from the real ipmitool;
- a provisioner.sh equivalent (written for this test after reading the in-tree script
  scripts/vm/hypervisor/external/provisioner/provisioner.sh @3e744c3; not a copy) answers the
  same through forward as when CloudStack runs it directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from workerkit import (
    consumers_at_least,
    delete_extension_queues,
    publish_event,
    settings_for,
    start_worker_process,
    stop_process,
    wait_until,
    write_extension,
)

from csext.cli.shim import csext_command, write_extension_shim
from csext.worker.amqp import names as c
from csext.worker.settings import DEFAULT_CONFIG_FILE

from .corpus import Fixture, load

pytestmark = pytest.mark.broker

CSEXT = [sys.executable, "-m", "csext.cli"]
PYTHON = "/usr/bin/python3"
TAG = uuid.uuid4().hex[:8]
ECHO, NETECHO, BMC = f"cs-echo-{TAG}", f"cs-netecho-{TAG}", f"cs-bmc-{TAG}"
PROVISIONER, EVENTS, VM_POST = f"cs-prov-{TAG}", f"cs-events-{TAG}", f"cs-vmpost-{TAG}"

ECHO_SCRIPT = f"""#!{PYTHON}
# Prints the fixture's bytes and exits with its code: from the payload's csext_fixture, or
# (oob-management, whose payload the ipmitool bridge builds) from $CORPUS_DIR/<address>.
import json, os, sys
payload = json.load(open(sys.argv[2]))
path = payload.get("csext_fixture") or os.path.join(os.environ["CORPUS_DIR"], payload["address"])
sys.stdout.buffer.write(open(path, "rb").read())
sys.exit(int(open(path + ".exit").read()))
"""

SINK_SCRIPT = """#!/bin/sh
cp "$2" "$SINK_DIR/.$CSEXT_RUN_ID" && mv "$SINK_DIR/.$CSEXT_RUN_ID" "$SINK_DIR/$CSEXT_RUN_ID.json"
"""

# Our own equivalent of CloudStack's in-tree provisioner.sh (@3e744c3), written after reading
# it: same actions, same answers and exit codes; its MACs are derived from the NIC UUID (the
# original draws random ones) so that two runs can be compared byte for byte.
PROVISIONER_SCRIPT = f"""#!{PYTHON}
import hashlib, json, sys
if len(sys.argv) < 3:
    print('{{"error":"Missing required arguments"}}'); sys.exit(1)
try:
    data = json.load(open(sys.argv[2]))
except OSError:
    print('{{"error":"File not found or unreadable"}}'); sys.exit(1)
action = sys.argv[1]
done = {{"create": "created", "delete": "deleted", "start": "started", "stop": "stopped",
        "reboot": "rebooted"}}
if action == "prepare":
    nics = (data.get("cloudstack.vm.details") or {{}}).get("nics") or []
    if not nics:
        print("")
    else:
        def mac(uuid):
            h = hashlib.sha256(uuid.encode()).hexdigest().upper()
            return "52:54:00:" + ":".join(h[i:i + 2] for i in (0, 2, 4))
        print(json.dumps({{"nics": [{{"uuid": n["uuid"], "mac": mac(n["uuid"])}} for n in nics]}},
                         separators=(",", ":")))
elif action in done:
    print(json.dumps({{"status": "success", "message": "Instance " + done[action]}}))
elif action == "status":
    print('{{"status": "success", "power_state": "poweron"}}')
elif action == "statuses":
    print('{{"status": "error", "message": "Not supported"}}')
else:
    print('{{"error":"Invalid action"}}'); sys.exit(1)
"""

PAYLOAD: dict[str, Any] = {
    "externaldetails": {
        "extension": {"url": "https://pve:8006", "user": "root@pam", "secret": "s3cr3t-tok"},
        "resourcemap": {},
        "host": {"node": "pve1"},
        "virtualmachine": {},
    },
    "virtualmachineid": "2b7a768a-3bc2-4c3c-ae05-2b3480b53478",
    "virtualmachinename": "i-2-4-VM",
    "cloudstack.vm.details": {
        "id": 4,
        "name": "i-2-4-VM",
        "uuid": "2b7a768a-3bc2-4c3c-ae05-2b3480b53478",
        "cpus": 1,
        "details": {"deployvm": "true"},
        "nics": [{"uuid": "3cd4a1b2-0000-4000-8000-000000000011", "mac": "02:01:00:cc:00:01"}],
    },
    "caller": {"name": "admin", "type": "ADMIN", "roletype": "Admin"},
}
NETWORK_PAYLOAD: dict[str, Any] = {
    "physical-network-extension-details": {"hosts": "kvm1", "physicalnetworkname": "pn1"},
    "network-extension-details": {},
    "payload": {"network_id": "42", "vlan": "1577", "zone_id": "1", "cidr": "10.1.1.0/24"},
}
CUSTOM_ACTION_PAYLOAD: dict[str, Any] = {  # custom-action is flat (reference §1.8)
    "network_id": "42",
    "action": "reload-rules",
    "action-params": {"force": "true"},
    "physical-network-extension-details": {"hosts": "kvm1"},
    "network-extension-details": {},
}
IPMITOOL_BASE = ["-I", "lanplus", "-R", "1", "-v", "-U", "admin", "-P", "pw-corpus-1"]


@dataclass(frozen=True)
class Corpus:
    amqp_url: str
    exchange: str
    root: Path
    shims: dict[str, Path]
    ipmitool_config: Path

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    def sink(self, name: str) -> Path:
        return self.root / "sinks" / name

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
        env["CSEXT_AMQP_URL"] = self.amqp_url
        env.update(extra)
        return env


@pytest.fixture(scope="module")
def corpus(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    root = tmp_path_factory.mktemp("corpus")
    registry, outputs = root / "registry", root / "outputs"
    outputs.mkdir()
    corpus_env = {"env": {"CORPUS_DIR": str(outputs)}}
    write_extension(registry, ECHO, ECHO_SCRIPT, hook="orchestrator", patterns=[], spec=corpus_env)
    write_extension(
        registry, NETECHO, ECHO_SCRIPT, hook="network-orchestrator", patterns=[], spec=corpus_env
    )
    write_extension(registry, BMC, ECHO_SCRIPT, hook="oob-management", patterns=[], spec=corpus_env)
    write_extension(registry, PROVISIONER, PROVISIONER_SCRIPT, hook="orchestrator", patterns=[])
    for name, events in (
        (EVENTS, {"patterns": ["management-server.#"]}),
        (
            VM_POST,
            {
                "filters": {
                    "categories": ["ResourceStateEvent"],
                    "resourceTypes": ["VirtualMachine"],
                    "phase": "post",
                }
            },
        ),
    ):
        sink = root / "sinks" / name
        sink.mkdir(parents=True)
        spec = {"events": events, "env": {"SINK_DIR": str(sink)}, "concurrency": 1}
        write_extension(registry, name, SINK_SCRIPT, hook="event", spec=spec)
    exchange = f"cloudstack-events-{TAG}"
    settings = settings_for(amqp_url, registry, exchange, root)
    worker = start_worker_process(settings)
    names = (ECHO, NETECHO, BMC, PROVISIONER, EVENTS, VM_POST)
    try:
        asyncio.run(_consuming(amqp_url))
        shims = {name: _shim(root / "shims", name) for name in (ECHO, NETECHO, PROVISIONER)}
        config = root / "csext.yaml"
        config.write_text(f"amqp_url: {amqp_url}\nipmitool_extension: {BMC}\n")
        yield Corpus(amqp_url, exchange, root, shims, config)
    finally:
        stop_process(worker)
        asyncio.run(delete_extension_queues(amqp_url, *names))


async def _consuming(amqp_url: str) -> None:
    queues = [c.rpc_queue(n) for n in (ECHO, NETECHO, BMC, PROVISIONER)]
    queues += [c.events_queue(n) for n in (EVENTS, VM_POST)]
    for queue in queues:
        await wait_until(lambda q=queue: consumers_at_least(amqp_url, q, 1), 60, f"{queue}")


def _shim(directory: Path, name: str) -> Path:
    """The entry point CloudStack runs, as `csext shim NAME --output DIR` writes it (its
    function, called in-process: tests/test_shim.py runs the command itself)."""
    directory.mkdir(exist_ok=True)
    command = csext_command(None)
    return write_extension_shim(name, directory, DEFAULT_CONFIG_FILE, command, force=False)


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    # A bound against hangs (not a timing assertion): every call must end by itself.
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)


@asynccontextmanager
async def run_records(
    amqp_url: str, extension: str
) -> AsyncIterator[Callable[[], Awaitable[dict[str, Any]]]]:
    """The next run record of `extension` (bound before the call, so none is missed)."""
    connection = await aio_pika.connect(amqp_url)
    records: list[dict[str, Any]] = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(c.RUNS_EXCHANGE, f"{extension}.*")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            batch = json.loads(message.body)  # records are published in batches
            records.extend(batch if isinstance(batch, list) else [batch])
            await message.ack()

        await queue.consume(on_message)

        async def next_record() -> dict[str, Any]:
            await wait_until(lambda: records, 30, f"a run record of {extension}")
            return records.pop(0)

        yield next_record


def write_output(corpus: Corpus, name: str, fixture: Fixture) -> Path:
    path = corpus.outputs / name
    path.write_bytes(fixture.body)
    path.with_name(name + ".exit").write_text(fixture.get("exit", "0"))
    return path


# ---------------------------------------------------------------------------- RPC outputs


def check_record(record: dict[str, Any], fixture: Fixture) -> None:
    assert record["exit_code"] == int(fixture.get("exit"))
    assert record["outcome"] == fixture.get("record-outcome"), record
    if fixture.get("record-warning"):
        assert any(fixture.get("record-warning") in w for w in record["warnings"]), record
    else:
        assert record["warnings"] == [], record
    if fixture.get("record-error"):
        assert fixture.get("record-error") in (record["error"] or ""), record


@pytest.mark.parametrize("fixture", load("orchestrator") + load("network"), ids=str)
async def test_output_reaches_cloudstack_unchanged(corpus: Corpus, fixture: Fixture) -> None:
    extension = ECHO if fixture.kind == "orchestrator" else NETECHO
    base = PAYLOAD if fixture.kind == "orchestrator" else NETWORK_PAYLOAD
    if fixture.kind == "network" and fixture.get("action") == "custom-action":
        base = CUSTOM_ACTION_PAYLOAD
    output = write_output(corpus, f"{fixture.kind}-{fixture.name}", fixture)
    payload = corpus.root / f"{fixture.kind}-{fixture.name}.json"
    payload.write_text(json.dumps({**base, "csext_fixture": str(output)}))
    argv = [str(corpus.shims[extension]), fixture.get("action"), str(payload), "60"]
    async with run_records(corpus.amqp_url, extension) as next_record:
        done = await asyncio.to_thread(run, argv, corpus.env())
        record = await next_record()
    # What CloudStack receives (ExternalPathPayloadProvisioner.executeExternalCommand reads the
    # process's merged output and its exit code): exactly what the extension printed.
    assert done.stdout == fixture.body
    assert done.stderr == b""
    assert done.returncode == int(fixture.get("exit"))
    check_record(record, fixture)


async def test_provisioner_answers_the_same_through_forward(corpus: Corpus) -> None:
    script = corpus.root / "registry" / PROVISIONER / "run"
    payload = corpus.root / "provisioner.json"
    no_nics = corpus.root / "provisioner-no-nics.json"
    payload.write_text(json.dumps(PAYLOAD))
    vm = {**PAYLOAD["cloudstack.vm.details"], "nics": []}
    no_nics.write_text(json.dumps({**PAYLOAD, "cloudstack.vm.details": vm}))
    actions = ["prepare", "create", "start", "stop", "reboot", "delete", "status", "statuses"]
    calls = [(a, payload) for a in actions] + [("prepare", no_nics), ("getconsole", payload)]
    for action, path in calls:
        argv = [action, str(path), "60"]
        direct = await asyncio.to_thread(run, [str(script), *argv], corpus.env())
        forwarded = await asyncio.to_thread(
            run, [str(corpus.shims[PROVISIONER]), *argv], corpus.env()
        )
        assert (forwarded.stdout, forwarded.returncode) == (direct.stdout, direct.returncode), (
            action
        )
    statuses = await asyncio.to_thread(
        run, [str(corpus.shims[PROVISIONER]), "statuses", str(payload), "60"], corpus.env()
    )
    assert statuses.returncode == 0
    assert json.loads(statuses.stdout) == {"status": "error", "message": "Not supported"}


@pytest.mark.parametrize("fixture", load("ipmitool"), ids=str)
async def test_ipmitool_answers_as_cloudstack_reads_it(corpus: Corpus, fixture: Fixture) -> None:
    address = f"bmc-{fixture.name}"
    write_output(corpus, address, fixture)
    argv = fixture.get("argv").split()
    if argv != ["-V"]:
        argv = [*IPMITOOL_BASE, "-H", address, *argv]
    env = corpus.env(CSEXT_CONFIG=str(corpus.ipmitool_config))
    done = await asyncio.to_thread(run, [*CSEXT, "ipmitool", *argv], env)
    assert done.returncode == int(fixture.get("expect-exit")), done
    if "expect-stdout-startswith" in fixture.header:
        assert done.stdout.startswith(fixture.get("expect-stdout-startswith").encode())
    else:
        assert done.stdout == fixture.sections["expect-stdout"]
    stderr = done.stderr.decode()
    assert "pw-corpus-1" not in stderr
    if fixture.get("expect-stderr-contains"):
        assert fixture.get("expect-stderr-contains") in stderr
    else:
        assert stderr == ""


# ---------------------------------------------------------------------------- events


def delivered(sink: Path, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The payloads in a sink whose `body` is exactly `body`."""
    found = []
    for path in sink.glob("*.json"):
        payload = json.loads(path.read_bytes())
        if payload.get("body") == body:
            found.append(payload)
    return found


@pytest.mark.parametrize("fixture", load("events"), ids=str)
async def test_event_reaches_the_extension_as_cloudstack_sent_it(
    corpus: Corpus, fixture: Fixture
) -> None:
    key = fixture.get("routing-key")
    body = json.loads(fixture.body)
    times = int(fixture.get("publish-times", "1"))
    for _ in range(times):
        await publish_event(corpus.amqp_url, corpus.exchange, key, fixture.body)
    sink = corpus.sink(EVENTS)
    await wait_until(
        lambda: len(delivered(sink, body)) >= times, 30, f"{times} deliveries of {fixture}"
    )
    payloads = delivered(sink, body)
    assert len(payloads) == times  # every copy of a non-VM transition arrives
    phase = fixture.get("expect-phase")
    for payload in payloads:
        assert payload["routing_key"] == key
        assert payload["category"] == key.split(".")[1]
        assert payload["phase"] == (None if phase == "none" else phase)
    # The phase-filtered extension: a VM post event published after this one is its proof of
    # order (one consumer, concurrency 1): by the time it arrives, this one was judged.
    sentinel_id = str(uuid.uuid4())
    sentinel = {
        "resource": "VirtualMachine",
        "id": sentinel_id,
        "old-state": "Starting",
        "new-state": "Running",
        "status": "postStateTransitionEvent",
    }
    sentinel_key = (
        f"management-server.ResourceStateEvent.OperationSucceeded.VirtualMachine.{sentinel_id}"
    )
    await publish_event(
        corpus.amqp_url, corpus.exchange, sentinel_key, json.dumps(sentinel).encode()
    )
    vm_post = corpus.sink(VM_POST)
    await wait_until(lambda: delivered(vm_post, sentinel), 30, "the VM post sentinel")
    expected = times if fixture.get("expect-vm-post-sink") == "yes" else 0
    assert len(delivered(vm_post, body)) == expected
