"""`csext fleet`: real workers following one Git registry remote, moved by the real CLI.

Each test gets a vhost of its own, so the only workers that answer are the test's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from workerkit import settings_for, start_worker_process, stop_process, wait_until, write_extension

from csext.worker.amqp.rpc_client import RpcClient
from csext.worker.follow import split_remote

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(240)]

ECHO = """#!/bin/sh
echo '{{"status":"success","version":"{version}"}}'
"""


def _ctl(*args: str) -> bool:
    try:
        done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture
def vhost_url() -> Iterator[str]:
    vhost = f"csext-fleet-{uuid.uuid4().hex[:8]}"
    if not (
        _ctl("add_vhost", vhost) and _ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    ):
        pytest.skip("needs rabbitmqctl (root on the broker's machine) for a vhost of its own")
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}"
    finally:
        _ctl("delete_vhost", vhost)


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


class Remote:
    """A bare repository and a work tree that pushes to it."""

    def __init__(self, tmp: Path) -> None:
        self.bare = tmp / "remote.git"
        self.work = tmp / "authoring"
        git(tmp, "init", "--quiet", "--bare", "-b", "main", str(self.bare))
        git(tmp, "clone", "--quiet", str(self.bare), str(self.work))
        git(self.work, "checkout", "--quiet", "-b", "main")

    def publish(self, version: str, *, broken: bool = False) -> str:
        folder = write_extension(
            self.work, "x", ECHO.format(version=version), hook="orchestrator", patterns=[]
        )
        manifest = yaml.safe_load((folder / "extension.yaml").read_text())
        manifest["metadata"]["version"] = version
        if broken:
            manifest["spec"]["timeout"] = "not a number"
        (folder / "extension.yaml").write_text(yaml.safe_dump(manifest))
        git(self.work, "add", "-A")
        git(self.work, "commit", "--quiet", "-m", f"x {version}")
        git(self.work, "push", "--quiet", "origin", "main")
        return git(self.work, "rev-parse", "HEAD")


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    env["CSEXT_AMQP_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "csext.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def fleet(url: str, expect: int = 3) -> tuple[int, dict]:
    done = cli(url, "fleet", "--json", "--wait", "5", "--expect", str(expect))
    return done.returncode, json.loads(done.stdout)


def test_split_remote():
    assert split_remote("/srv/reg.git@stable") == ("/srv/reg.git", "stable")
    assert split_remote("https://user@git.example/reg.git") == (
        "https://user@git.example/reg.git",
        None,
    )
    assert split_remote("git@host:org/reg.git") == ("git@host:org/reg.git", None)
    assert split_remote("file:///srv/reg.git") == ("file:///srv/reg.git", None)


async def test_fleet_follows_one_remote_with_canary_promote_rollback(tmp_path, vhost_url):
    remote = Remote(tmp_path)
    first = remote.publish("1.0.0")
    workers = []
    links = []
    try:
        for index in range(3):
            home = tmp_path / f"w{index}"
            home.mkdir()
            links.append(home / "registry")
            settings = settings_for(vhost_url, links[-1], "fleet-ex", home)
            workers.append(
                start_worker_process(
                    settings, log=home / "worker.log", CSEXT_REGISTRY_REMOTE=f"{remote.bare}@main"
                )
            )
        await wait_until(lambda: len(fleet(vhost_url)[1].get("workers", [])) == 3, 90, "3 workers")
        code, status = fleet(vhost_url)
        assert code == 0 and status["consistent"] and status["commit"] == first
        assert all(w["extensions"] == {"x": "1.0.0"} for w in status["workers"])
        assert all(link.is_symlink() and link.resolve().name == first for link in links)

        second = remote.publish("2.0.0")
        canary = cli(vhost_url, "fleet", "sync", "--canary", "1", "--json")
        assert canary.returncode == 0, canary.stdout + canary.stderr
        moved = json.loads(canary.stdout)
        assert [r["result"] for r in moved] == ["switched"] and moved[0]["commit"] == second
        code, status = fleet(vhost_url)
        assert code == 1 and not status["consistent"]
        assert sorted(w["commit"] for w in status["workers"]) == sorted([first, first, second])
        assert [w["canary"] for w in status["workers"] if w["commit"] == second] == [True]
        text = cli(vhost_url, "fleet")
        assert text.returncode == 1 and "DIFFERS" in text.stdout and "INCONSISTENT" in text.stdout

        promote = cli(vhost_url, "fleet", "promote", "--json")
        assert promote.returncode == 0, promote.stdout + promote.stderr
        await wait_until(lambda: fleet(vhost_url)[0] == 0, 30, "consistent after promote")
        code, status = fleet(vhost_url)
        assert status["commit"] == second
        assert all(w["extensions"] == {"x": "2.0.0"} for w in status["workers"])
        async with RpcClient(vhost_url) as client:
            reply = await client.call("x", "status", {}, timeout=20)
        assert '"version":"2.0.0"' in reply.stdout

        rollback = cli(vhost_url, "fleet", "rollback", "--json")
        assert rollback.returncode == 0, rollback.stdout + rollback.stderr
        code, status = fleet(vhost_url)
        assert code == 0 and status["commit"] == first

        remote.publish("3.0.0", broken=True)
        refused = cli(vhost_url, "fleet", "sync", "--json")
        assert refused.returncode == 1
        results = json.loads(refused.stdout)
        assert {r["result"] for r in results} == {"failed"}
        assert all("invalid extensions" in r["error"] for r in results)
        code, status = fleet(vhost_url)
        assert code == 0 and status["commit"] == first  # kept running the version it had
        assert all(w["update_error"] for w in status["workers"])
        assert all(link.resolve().name == first for link in links)
        assert all(w.poll() is None for w in workers)
    finally:
        for worker in workers:
            stop_process(worker)


async def test_disabled_is_answered_alike_by_workers_with_other_registries(tmp_path, vhost_url):
    """One worker's registry has `y` disabled, the other's has no `y` at all: every call to
    `y` is answered "disabled", whichever worker takes it; `z`, known nowhere, is "unknown"."""
    with_y, without = tmp_path / "a", tmp_path / "b"
    write_extension(
        with_y / "registry",
        "y",
        ECHO.format(version="1"),
        hook="orchestrator",
        patterns=[],
        spec={"enabled": False},
    )
    (without / "registry").mkdir(parents=True)
    workers = [
        start_worker_process(
            settings_for(vhost_url, home / "registry", "fleet-ex", home), log=home / "worker.log"
        )
        for home in (with_y, without)
    ]
    try:
        await wait_until(
            lambda: len(fleet(vhost_url, 2)[1].get("workers", [])) == 2, 90, "2 workers"
        )
        kinds = set()
        async with RpcClient(vhost_url) as client:
            for _ in range(12):
                reply = await client.call("y", "status", {}, timeout=10)
                assert reply.error is not None
                kinds.add(reply.error.kind)
            unknown = await client.call("z", "status", {}, timeout=10)
        assert kinds == {"disabled"}
        assert unknown.error is not None and unknown.error.kind == "unknown-extension"
        # enabled while no worker runs: the binding left from before must not answer too
        for worker in workers:
            stop_process(worker)
        manifest = with_y / "registry" / "y" / "extension.yaml"
        manifest.write_text(manifest.read_text().replace("enabled: false", "enabled: true"))
        workers = [
            start_worker_process(
                settings_for(vhost_url, with_y / "registry", "fleet-ex", with_y),
                log=with_y / "worker.log",
            )
        ]
        await wait_until(lambda: len(fleet(vhost_url, 1)[1].get("workers", [])) == 1, 90, "1")
        async with RpcClient(vhost_url) as client:
            replies = [await client.call("y", "status", {}, timeout=10) for _ in range(8)]
        assert all(r.error is None and r.exit_code == 0 for r in replies), replies
    finally:
        for worker in workers:
            stop_process(worker)


def _w(worker: str, commit: str, previous: str | None = None, canary: bool = False) -> dict:
    return {
        "worker": worker,
        "commit": commit,
        "previous": previous,
        "canary": canary,
        "extensions": {"x": "1.0.0"},
    }


def test_report_finds_the_fleet_commit_and_the_targets():
    from csext.worker.fleet import FleetReport

    steady = FleetReport([_w("a", "A", "O"), _w("b", "A", "O")])
    assert steady.consistent and steady.commit == "A"
    assert steady.rollback_target() == "O"
    with pytest.raises(ValueError, match="no canary"):
        steady.promote_target()
    canary = FleetReport([_w("a", "A"), _w("b", "A"), _w("c", "B", "A", canary=True)])
    assert not canary.consistent and canary.commit == "A"
    assert [w["worker"] for w in canary.workers if canary.differs(w)] == ["c"]
    assert canary.promote_target() == "B" and canary.rollback_target() == "A"
    other = FleetReport([{**_w("a", "A"), "extensions": {"x": "2.0.0"}}, _w("b", "A")])
    assert not other.consistent  # same commit, different extensions (a local edit)


def test_follower_validates_with_this_hosts_secrets(tmp_path):
    """A commit whose extension needs a secret this host lacks is refused, with the reason;
    with the secret, the same commit is checked out and the registry link swapped to it."""
    from csext.schemas.errors import ConfigError
    from csext.worker.follow import RegistryFollower

    remote = Remote(tmp_path)
    folder = write_extension(
        remote.work, "s", ECHO.format(version="1"), hook="orchestrator", patterns=[]
    )
    manifest = yaml.safe_load((folder / "extension.yaml").read_text())
    manifest["spec"]["secrets"] = ["TOKEN"]
    (folder / "extension.yaml").write_text(yaml.safe_dump(manifest))
    git(remote.work, "add", "-A")
    git(remote.work, "commit", "--quiet", "-m", "s")
    git(remote.work, "push", "--quiet", "origin", "main")
    commit = git(remote.work, "rev-parse", "HEAD")
    link = tmp_path / "host" / "registry"
    link.parent.mkdir()
    lacking = RegistryFollower(f"{remote.bare}@main", link, lambda: {})
    with pytest.raises(ConfigError, match="TOKEN"):
        lacking.prepare()
    assert not link.exists()
    having = RegistryFollower(f"{remote.bare}@main", link, lambda: {"s": {"TOKEN": "x"}})
    having.prepare()
    assert link.is_symlink() and link.resolve().name == commit
    assert (link / "s" / "run").stat().st_mode & 0o111  # executable bits survive the checkout
