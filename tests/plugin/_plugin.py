"""Helpers for the CloudStack plugin tests: build the jar, a registry, run the Java driver."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "bridges" / "cloudstack-plugin"
BUILD = PLUGIN / "build"
JAVA_LIBS = Path("/usr/share/java")
RUNTIME_JARS = ["amqp-client.jar", "gson.jar", "slf4j-api.jar", "slf4j-nop.jar"]


def plugin_jar() -> Path:
    jars = sorted(BUILD.glob("csext-cloudstack-plugin-*.jar"))
    assert len(jars) == 1, f"expected one plugin jar in {BUILD}, found {jars}"
    return jars[0]


def _newest_source() -> float:
    return max(
        p.stat().st_mtime
        for tree in ("src", "standins")
        for p in (PLUGIN / tree).rglob("*")
        if p.is_file()
    )


def build_plugin() -> Path:
    """The jar and the test driver, rebuilt (build.sh test) when a source is newer."""
    driver = BUILD / "test-classes" / "org" / "csext" / "cloudstack" / "PluginDriver.class"
    jars = list(BUILD.glob("csext-cloudstack-plugin-*.jar"))
    stale = not driver.exists() or len(jars) != 1 or _newest_source() > driver.stat().st_mtime
    if stale:
        done = subprocess.run(
            ["bash", str(PLUGIN / "build.sh"), "test"], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"build.sh failed:\n{done.stdout}\n{done.stderr}"
    return plugin_jar()


def classpath() -> str:
    parts = [plugin_jar(), BUILD / "standins", BUILD / "test-classes"]
    parts += [JAVA_LIBS / jar for jar in RUNTIME_JARS if (JAVA_LIBS / jar).exists()]
    return ":".join(str(p) for p in parts)


def drive(properties: Path, requests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Run the Java driver on `requests`: its answers, one per request, and its log (stderr)."""
    done = subprocess.run(
        [
            "java",
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            f"-Dcsext.properties={properties}",
            "-cp",
            classpath(),
            "org.csext.cloudstack.PluginDriver",
        ],
        input="".join(json.dumps(r) + "\n" for r in requests),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"driver failed:\n{done.stdout}\n{done.stderr}"
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(answers) == len(requests), f"{answers}\n{done.stderr}"
    return answers, done.stderr


def copy_extension(src: str, registry: Path, name: str, **spec: Any) -> Path:
    """A bundled extension copied under another name, with `spec` fields changed."""
    folder = registry / name
    shutil.copytree(ROOT / "extensions" / src, folder)
    manifest_path = folder / "extension.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["metadata"]["name"] = name
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(manifest["spec"].get(key), dict):
            manifest["spec"][key].update(value)
        else:
            manifest["spec"][key] = value
    manifest_path.write_text(yaml.safe_dump(manifest))
    return folder


def write_sleeper(registry: Path, name: str, hook: str, actions: list[str]) -> None:
    """An extension that never answers in time: it sleeps past any deadline the tests use."""
    folder = registry / name
    folder.mkdir(parents=True)
    entry = folder / "run"
    entry.write_text("#!/bin/sh\nsleep 30\n")
    entry.chmod(0o755)
    manifest = {
        "apiVersion": "csext/v1",
        "kind": "Extension",
        "metadata": {"name": name, "version": "1.0.0"},
        "spec": {"hook": hook, "entrypoint": "run", "actions": actions, "timeout": 30},
    }
    (folder / "extension.yaml").write_text(yaml.safe_dump(manifest))


def closed_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_properties(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path
