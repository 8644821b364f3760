"""`csext shim`: the CloudStack entry point and the KVM agent hooks, run for real.

The Groovy hooks run in a real `groovy` interpreter through tests/data/kvm_agent_harness.groovy,
which calls them exactly as CloudStack's LibvirtKvmAgentHook does.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner
from workerkit import running_worker, settings_for, write_extension

from csext.cli import shim as cli_forward
from csext.cli.app import app

HARNESS = Path(__file__).parent / "data" / "kvm_agent_harness.groovy"
DOMAIN = (
    '<domain type="kvm">\n  <name>i-2-4-VM</name>\n  <uuid>2b7a768a-3bc2</uuid>\n'
    '  <cpu mode="host-model"/>\n  <description>a "quoted" $value &amp; more</description>\n'
    "</domain>"
)
# A domain-xml extension: sets host-passthrough; action `rename` breaks the name (must be refused).
XML_EXTENSION = """#!/usr/bin/env python3
import json, sys
action, payload = sys.argv[1], json.load(open(sys.argv[2]))
if action == "transform":
    xml = payload["xml"]
    if payload["vm_name"] == "i-2-4-VM":
        print(xml.replace('mode="host-model"', 'mode="host-passthrough"'))
    else:
        print(xml.replace("<name>", "<name>x"))
else:
    with open(sys.argv[0] + ".log", "a") as log:
        log.write(action + " " + payload["vm_name"] + "\\n")
"""


TRANSPORT_HOOK = "domain-xml"
"""The hook of the XML extension: the real domain-xml handler runs between the hooks and it."""


def java_home() -> str | None:
    java = shutil.which("java")
    return str(Path(java).resolve().parent.parent) if java else None


GROOVY = shutil.which("groovy")
needs_groovy = pytest.mark.skipif(
    GROOVY is None or java_home() is None,
    reason="no groovy interpreter (apt-get install -y groovy) or java: Groovy hooks not run",
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    env.update(extra)
    return env


# ---------------------------------------------------------------------------- extension shim


@pytest.mark.parametrize(
    ("name", "directory"),
    [("My Ext", "my_ext"), ("Proxmox", "proxmox"), ("a.b-c_d", "a.b-c_d"), ("x/y:z", "x_y_z")],
)
def test_directory_name_follows_cloudstack(name: str, directory: str) -> None:
    assert cli_forward.directory_name(name) == directory
    assert cli_forward.cloudstack_entry_point(name) == Path(
        f"/usr/share/cloudstack-management/extensions/{directory}/{directory}.sh"
    )


def test_shim_into_a_directory_uses_cloudstack_layout(tmp_path: Path) -> None:
    config = tmp_path / "csext.yaml"
    config.write_text("amqp_url: amqp://guest:guest@127.0.0.1:5672/\n")
    output = invoke("shim", "My Ext", "--output", str(tmp_path), "--config", str(config))
    target = tmp_path / "my_ext" / "my_ext.sh"
    assert f"wrote {target}" in output
    assert "/usr/share/cloudstack-management/extensions/my_ext/my_ext.sh" in output
    text = target.read_text()
    assert os.access(target, os.X_OK)
    assert f"CSEXT_CONFIG={config}" in text and "amqp" not in text.split("export")[1]
    assert "--extension 'My Ext' \"$@\"" in text
    # Same inputs, same bytes: CloudStack compares the entry point's checksum across servers.
    again = tmp_path / "again"
    again.mkdir()
    invoke("shim", "My Ext", "--output", str(again), "--config", str(config))
    assert (again / "my_ext" / "my_ext.sh").read_text() == text
    # A directory already named after the extension gets <dir>.sh inside it.
    invoke("shim", "My Ext", "--output", str(tmp_path / "my_ext"), "--config", str(config))


def test_shim_refuses_to_replace_a_foreign_file(tmp_path: Path) -> None:
    target = tmp_path / "ext.sh"
    target.write_text("#!/bin/sh\n# scaffolded provisioner.sh\n")
    result = CliRunner().invoke(app, ["shim", "ext", "--output", str(target)])
    assert result.exit_code != 0 and "--force" in result.output
    invoke("shim", "ext", "--output", str(target), "--force")
    assert "csext shim" in target.read_text()


@pytest.mark.broker
async def test_shim_runs_as_cloudstack_runs_it(amqp_url: str, unique: str, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    write_extension(
        registry,
        unique,
        '#!/bin/sh\necho "{\\"action\\": \\"$1\\", \\"t\\": $3}"\n',
        hook="orchestrator",
    )
    config = tmp_path / "csext.yaml"
    config.write_text(f"# csext\namqp_url: '{amqp_url}'\nregistry: {registry}\n")
    (tmp_path / "cs").mkdir()
    invoke("shim", unique, "--output", str(tmp_path / "cs"), "--config", str(config))
    shim = tmp_path / "cs" / unique / f"{unique}.sh"
    payload = tmp_path / "p.json"
    payload.write_text("{}")
    async with running_worker(settings_for(amqp_url, registry, f"ex-{unique}", tmp_path)):
        done = await asyncio.to_thread(
            subprocess.run,
            [str(shim), "start", str(payload), "60"],
            env=clean_env(),  # no CSEXT_* from the caller: the shim's config file is used
            capture_output=True,
            timeout=60,
        )
    assert done.returncode == 0, done
    reply = json.loads(done.stdout)
    # argv[3] is the time left: CloudStack's 60 s minus forward's margin and the trip.
    assert reply["action"] == "start" and 0 < reply["t"] <= 60


# ---------------------------------------------------------------------------- KVM agent hooks


@pytest.fixture
def hooks(tmp_path: Path) -> Path:
    directory = tmp_path / "hooks"
    config = tmp_path / "csext.yaml"
    config.write_text("amqp_url: amqp://guest:guest@127.0.0.1:5672/\n")
    invoke("shim", "--kvm-agent", str(directory), "--extension", "x", "--config", str(config))
    return directory


def test_kvm_hook_files(hooks: Path) -> None:
    names = sorted(p.name for p in hooks.iterdir())
    # The agent's default names: AgentProperties (Groovy) and the 4.21 agent's shell hook
    # (apache/cloudstack#11965: ".../hooks/libvirt-vm-xml-transformer.sh' is not available").
    assert names == [
        "libvirt-vm-state-change.groovy",
        "libvirt-vm-xml-transformer.groovy",
        "libvirt-vm-xml-transformer.sh",
    ]
    transformer = (hooks / "libvirt-vm-xml-transformer.groovy").read_text()
    assert "String transform(Object logger, String xml)" in transformer
    assert transformer.rstrip().endswith("new CsextLibvirtVmXmlTransformer()")
    state = (hooks / "libvirt-vm-state-change.groovy").read_text()
    assert "onStart(Object logger, String vmName)" in state and "onStop(" in state
    assert "@@" not in transformer + state + (hooks / "libvirt-vm-xml-transformer.sh").read_text()


def agent_escape(value: str) -> str:
    """What the KVM agent does to the value it passes its shell hook."""
    return "".join("\\" + ch if ch in "\\\"'`$|&;()<>*?![]{}~" else ch for ch in value)


def run_shell_hook(hooks: Path, method: str, value: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(hooks / "libvirt-vm-xml-transformer.sh"), method, agent_escape(value)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done
    return done.stdout


def run_groovy_hook(hooks: Path, script: str, method: str, value: str, env: dict[str, str]) -> str:
    arg = hooks.parent / "arg.txt"
    arg.write_text(value)
    done = subprocess.run(
        [str(GROOVY), str(HARNESS), str(hooks), script, method, str(arg)],
        env={**env, "JAVA_HOME": str(java_home())},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done
    return done.stdout


def shell_only(hooks: Path) -> Path:
    """The hooks without csext's Groovy transformer: the shell one then calls the extension
    (with it, the agent runs Groovy first and the shell hook passes the result on)."""
    (hooks / "libvirt-vm-xml-transformer.groovy").unlink()
    return hooks


def test_shell_hook_passes_the_groovy_result_on(tmp_path: Path) -> None:
    # A stand-in csext that leaves a sentinel when it is run.
    sentinel = tmp_path / "csext-was-run"
    fake = tmp_path / "bin" / "csext"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ntouch {sentinel}\necho from-csext\n")
    fake.chmod(0o755)
    directory = tmp_path / "hooks"
    invoke("shim", "--kvm-agent", str(directory), "--csext", str(fake))
    # The agent runs the Groovy transformer first and hands its result to the shell hook:
    # with csext's Groovy transformer beside it, the shell hook passes the value on.
    assert run_shell_hook(directory, "transform", DOMAIN, clean_env()) == DOMAIN + "\n"
    assert not sentinel.exists()
    shell_only(directory)
    assert run_shell_hook(directory, "transform", DOMAIN, clean_env()) == "from-csext\n"
    assert sentinel.exists()


def test_shell_hook_keeps_the_original_when_the_broker_is_down(hooks: Path) -> None:
    shell_only(hooks)
    env = clean_env(CSEXT_AMQP_URL=f"amqp://127.0.0.1:{closed_port()}/")
    assert run_shell_hook(hooks, "transform", DOMAIN, env) == DOMAIN + "\n"
    assert run_shell_hook(hooks, "onStart", "i-2-4-VM", env) == "i-2-4-VM\n"


def test_shell_hook_without_csext_still_answers(tmp_path: Path) -> None:
    directory = tmp_path / "hooks"
    invoke("shim", "--kvm-agent", str(directory), "--csext", str(tmp_path / "missing" / "csext"))
    shell_only(directory)
    assert run_shell_hook(directory, "transform", DOMAIN, clean_env()) == DOMAIN + "\n"


@needs_groovy
def test_groovy_hooks_keep_the_original_when_the_broker_is_down(hooks: Path) -> None:
    env = clean_env(CSEXT_AMQP_URL=f"amqp://127.0.0.1:{closed_port()}/")
    out = run_groovy_hook(hooks, "libvirt-vm-xml-transformer.groovy", "transform", DOMAIN, env)
    assert out == DOMAIN
    out = run_groovy_hook(hooks, "libvirt-vm-state-change.groovy", "onStop", "i-2-4-VM", env)
    assert out == "i-2-4-VM"


@pytest.mark.broker
async def test_kvm_hooks_transform_through_a_real_worker(
    amqp_url: str, unique: str, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    folder = write_extension(registry, unique, XML_EXTENSION, hook=TRANSPORT_HOOK)
    config = tmp_path / "csext.yaml"
    config.write_text(f"amqp_url: {amqp_url}\n")
    hooks = tmp_path / "hooks"
    invoke("shim", "--kvm-agent", str(hooks), "--extension", unique, "--config", str(config))
    env = clean_env()
    renamed = DOMAIN.replace("i-2-4-VM", "i-9-9-VM")
    async with running_worker(settings_for(amqp_url, registry, f"ex-{unique}", tmp_path)):
        # With csext's Groovy transformer present, the shell hook passes the value on as is.
        out = await asyncio.to_thread(run_shell_hook, hooks, "transform", DOMAIN, env)
        assert out == DOMAIN + "\n"
        groovy = (hooks / "libvirt-vm-xml-transformer.groovy").read_bytes()
        shell_only(hooks)
        out = await asyncio.to_thread(run_shell_hook, hooks, "transform", DOMAIN, env)
        assert 'mode="host-passthrough"' in out and "$value &amp; more" in out
        # An output that changes the domain's name is refused: the original is kept.
        out = await asyncio.to_thread(run_shell_hook, hooks, "transform", renamed, env)
        assert out == renamed + "\n"
        assert await asyncio.to_thread(run_shell_hook, hooks, "onStop", "i-2-4-VM", env) == (
            "i-2-4-VM\n"
        )
        (hooks / "libvirt-vm-xml-transformer.groovy").write_bytes(groovy)
        if GROOVY is not None and java_home() is not None:
            script = "libvirt-vm-xml-transformer.groovy"
            out = await asyncio.to_thread(run_groovy_hook, hooks, script, "transform", DOMAIN, env)
            assert out == DOMAIN.replace('mode="host-model"', 'mode="host-passthrough"')
            out = await asyncio.to_thread(run_groovy_hook, hooks, script, "transform", renamed, env)
            assert out == renamed
            script = "libvirt-vm-state-change.groovy"
            await asyncio.to_thread(run_groovy_hook, hooks, script, "onStart", "i-2-4-VM", env)
    log = (folder / "run.log").read_text().splitlines()
    assert "on-stop i-2-4-VM" in log
    if GROOVY is not None and java_home() is not None:
        assert "on-start i-2-4-VM" in log
