"""Latency the CloudStack plugin adds to a login, against floors measured in the same run.

Starts a real `csext worker` (child process) on a temporary registry with two user
authenticators: `noop-auth` (a shell script that says yes: only csext's own cost shows) and the
bundled `htpasswd-auth` (PBKDF2, 200,000 rounds: a realistic one). For each it measures, N times:

- floor: the extension run directly, `<entrypoint> authenticate <payload> 5` (what a login
  would cost if the management server exec'd it itself, without csext);
- plugin: CsextUserAuthenticator.authenticate() in a warm JVM (the Java test driver), i.e.
  Java -> RabbitMQ -> worker -> extension -> reply, as in the management server;
- forward: `csext forward` exec'd per login, the alternative transport the plugin does not use.

usage: .venv/bin/python -m bench.plugin_latency [--runs 100] [--amqp-url URL]
Needs the JDK and the jars of `make test-tools`; builds the plugin if needed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from csext.worker.settings import DEFAULT_PATH

from .forward_latency import cleanup
from .stats import percentile

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "bridges" / "cloudstack-plugin"
CSEXT = Path(sys.executable).parent / "csext"
JARS = ["amqp-client.jar", "gson.jar", "slf4j-api.jar", "slf4j-nop.jar"]
WARMUP = 20


def build() -> str:
    """The driver's classpath, after `build.sh test`."""
    done = subprocess.run(
        ["bash", str(PLUGIN / "build.sh"), "test"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"build.sh failed:\n{done.stdout}{done.stderr}")
    build_dir = PLUGIN / "build"
    parts = [*build_dir.glob("csext-cloudstack-plugin-*.jar"), build_dir / "standins"]
    parts += [build_dir / "test-classes"]
    parts += [Path("/usr/share/java") / jar for jar in JARS]
    return ":".join(str(p) for p in parts)


def write_registry(registry: Path, noop: str, real: str) -> None:
    folder = registry / noop
    folder.mkdir(parents=True)
    (folder / "run").write_text("#!/bin/sh\necho '{\"authenticated\": true}'\n")
    (folder / "run").chmod(0o755)
    manifest = {
        "apiVersion": "csext/v1",
        "kind": "Extension",
        "metadata": {"name": noop, "version": "1.0.0"},
        "spec": {"hook": "user-authenticator", "entrypoint": "run", "actions": ["authenticate"]},
    }
    (folder / "extension.yaml").write_text(yaml.safe_dump(manifest))
    shutil.copytree(ROOT / "extensions" / "htpasswd-auth", registry / real)
    manifest_path = registry / real / "extension.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["metadata"]["name"] = real
    manifest_path.write_text(yaml.safe_dump(manifest))


def timed(argv: list[str], runs: int, env: dict[str, str], cwd: Path) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True)
        samples.append((time.perf_counter() - start) * 1000)
        if done.returncode != 0:
            raise SystemExit(f"{argv} failed: {done.stdout!r} {done.stderr!r}")
    return samples


class Driver:
    """The Java test driver kept running: one adapter call per request line, timed in the JVM."""

    def __init__(self, classpath: str, properties: Path) -> None:
        self.process = subprocess.Popen(
            [
                "java",
                f"-Dcsext.properties={properties}",
                "-cp",
                classpath,
                "org.csext.cloudstack.PluginDriver",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def login(self, adapter: str) -> float:
        """ms of one CsextUserAuthenticator.authenticate(); raises unless it authenticated."""
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"op": "auth", "adapter": adapter, "username": "alice", "password": "wonderland"}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        if not answer["authenticated"]:
            raise RuntimeError(f"login refused: {answer}")
        return float(answer["us"]) / 1000

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


def once(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed: {done.stdout!r} {done.stderr!r}")
    return (time.perf_counter() - start) * 1000


def row(label: str, samples: list[float], floor: list[float]) -> str:
    """p50/p99 of `samples`, and the median of the per-iteration ratios and differences to the
    floor (each iteration ran floor, plugin and forward back to back)."""
    ratio = statistics.median(s / f for s, f in zip(samples, floor, strict=True))
    added = statistics.median(s - f for s, f in zip(samples, floor, strict=True))
    return (
        f"| {label} | {statistics.median(samples):.1f} ms | {percentile(samples, 99):.1f} ms "
        f"| {ratio:.2f}x | {added:+.1f} ms |"
    )


def wait_ready(driver: Driver, adapter: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            driver.login(adapter)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not answer within 60 s") from None
            time.sleep(0.5)


def measure(amqp_url: str, runs: int) -> list[str]:
    classpath = build()
    tag = uuid.uuid4().hex[:8]
    noop, real = f"bench-noop-auth-{tag}", f"bench-htpasswd-{tag}"
    lines = [
        "| extension, path | p50 | p99 | ÷ floor (p50) | added per login (p50) |",
        "|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_registry(root / "registry", noop, real)
        payload = root / "payload.json"
        payload.write_text(json.dumps({"username": "alice", "password": "wonderland"}))
        properties = root / "csext.properties"
        properties.write_text(
            f"broker.url={amqp_url}\ndeadline.ms=10000\nNOOP.extension={noop}\nREAL.extension={real}\n"
        )
        config = root / "csext.yaml"
        config.write_text(f"amqp_url: {amqp_url}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
        env.update(
            {
                "CSEXT_CONFIG": str(config),
                "CSEXT_REGISTRY": str(root / "registry"),
                "CSEXT_CLOUDSTACK_EXCHANGE": f"bench-{tag}",
                "CSEXT_RUN_DIR": str(root / "runs"),
            }
        )
        worker = subprocess.Popen(
            [str(CSEXT), "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        driver = Driver(classpath, properties)
        try:
            wait_ready(driver, "NOOP")
            for adapter, name, entry in (("NOOP", noop, "run"), ("REAL", real, "htpasswd-auth.py")):
                folder = root / "registry" / name
                # the environment the worker gives an extension (worker/runtimes/environment.py)
                ext_env = {
                    "PATH": DEFAULT_PATH,
                    "LANG": "C.UTF-8",
                    "HTPASSWD_FILE": "users.htpasswd",
                }
                direct = [str(folder / entry), "authenticate", str(payload), "5"]
                forward_argv = [
                    str(CSEXT),
                    "forward",
                    "--extension",
                    name,
                    "authenticate",
                    str(payload),
                    "5",
                ]
                for _ in range(WARMUP):
                    driver.login(adapter)
                floor, plugin, forward = [], [], []
                for _ in range(runs):  # interleaved: all three see the same machine load
                    floor.append(once(direct, ext_env, folder))
                    plugin.append(driver.login(adapter))
                    forward.append(once(forward_argv, env, root))
                short = name.rsplit("-", 1)[0].removeprefix("bench-")
                lines.append(row(f"{short}: floor, the extension run directly", floor, floor))
                lines.append(row(f"{short}: plugin (Java adapter, warm JVM)", plugin, floor))
                lines.append(row(f"{short}: `csext forward` exec'd per login", forward, floor))
                for line in lines[-3:]:
                    print(line, flush=True)
            driver.close()
        finally:
            worker.terminate()
            worker.wait(30)
            asyncio.run(cleanup(amqp_url, [noop, real], f"bench-{tag}"))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("CSEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"plugin latency, {args.runs} logins per row, {started}")
    measure(args.amqp_url, args.runs)


if __name__ == "__main__":
    main()
