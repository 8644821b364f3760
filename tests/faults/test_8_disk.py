"""Scenario 8: disk full, a read-only registry, git missing.

Disk full and read-only use a real small tmpfs mounted for the test (root may mount here; if
not, the tests skip and say so): the registry lives on it, the disk is filled up, or the file
system is remounted read-only. Every store command must fail with a clear error and leave no
half-written extension (registry HEAD, `git status` and folders unchanged). The worker's run
directory on a full disk makes a run fail with a clear error instead of crashing the worker.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _store_helpers import cli_env, commit_all, csext, git, git_status, make_registry, make_repo
from _store_helpers import write_extension as write_store_extension
from test_bundle import build_bundle, manifest_text

from csext.worker.runtimes.runner import ExecRunner, RunRequest

SCENARIO = "8 disk full, read-only, no git"
pytestmark = [pytest.mark.timeout(120)]


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); nothing to fill")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path, leave: int) -> None:
    """Fill the file system holding `path` until about `leave` bytes are free."""
    stats = os.statvfs(path)
    free = stats.f_bavail * stats.f_frsize
    with open(path / "filler", "wb") as handle, contextlib.suppress(OSError):
        handle.write(bytes(max(0, free - leave)))


def snapshot(registry: Path) -> tuple[str, str, list[str]]:
    return (
        git(registry, "rev-parse", "HEAD"),
        git_status(registry),
        sorted(p.name for p in registry.iterdir()),
    )


def bundle_with(tmp: Path, size: int) -> Path:
    files = {
        "extension.yaml": manifest_text("hostile"),
        "run.sh": b"#!/bin/sh\n",
        "data.bin": os.urandom(size),
    }
    return build_bundle(tmp / "big.tar.gz", files=files)


def test_disk_full_leaves_no_half_written_extension(tmp_path, report):
    report.load("registry on a 4 MiB tmpfs, filled to ~300 KiB free; 1 MiB bundle")
    with tmpfs(tmp_path / "disk", "4m") as disk:
        registry = make_registry(disk / "registry", "existing")
        before = snapshot(registry)
        bundle = bundle_with(tmp_path, 1 << 20)
        fill(disk, 300 << 10)
        result = csext(cli_env(tmp_path, registry), "import", str(bundle))
        assert result.exit_code != 0, result.output
        assert "No space left" in result.output or "space" in result.output.lower(), result.output
        assert "Traceback" not in result.output
        report.check(
            "`csext import` fails with one line: 'No space left on device; nothing was "
            "changed (free some space ...)'"
        )
        assert snapshot(registry) == before
        report.check("no half-written extension: HEAD, git status and folders unchanged")
        (disk / "filler").unlink()
        assert csext(cli_env(tmp_path, registry), "import", str(bundle)).exit_code == 0
        report.check("the same import works once there is room")


def test_read_only_registry(tmp_path, report):
    report.load("registry on a tmpfs remounted read-only; import, install, disable")
    upstream = make_repo(tmp_path / "upstream")
    write_store_extension(upstream, "greeter")
    commit_all(upstream, "v1", tag="v1")
    with tmpfs(tmp_path / "disk", "8m") as disk:
        registry = make_registry(disk / "registry", "existing")
        before = snapshot(registry)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        env = cli_env(tmp_path, registry)
        bundle = bundle_with(tmp_path, 1000)
        for args in (
            ["import", str(bundle)],
            ["install", f"{upstream}@v1"],
            ["disable", "existing"],
        ):
            result = csext(env, *args)
            assert result.exit_code != 0, (args, result.output)
            assert "Read-only" in result.output or "read-only" in result.output, result.output
            assert "Traceback" not in result.output
        report.check("import, install and disable each fail with a read-only error")
        assert snapshot(registry) == before
        report.check("registry unchanged")


def test_missing_git(tmp_path, report):
    report.load("PATH without git; install and import")
    registry = make_registry(tmp_path / "registry", "existing")
    before = snapshot(registry)
    env = {**cli_env(tmp_path, registry), "PATH": str(tmp_path / "empty-bin")}
    bundle = bundle_with(tmp_path, 1000)
    for args in (["install", "https://example.org/x.git@v1"], ["import", str(bundle)]):
        result = csext(env, *args)
        assert result.exit_code != 0, (args, result.output)
        assert "git" in result.output.lower() and "Traceback" not in result.output, result.output
    report.check("both fail with an error that says git is missing")
    assert snapshot(registry) == before
    report.check("no half-written extension")


async def test_full_run_dir_fails_the_run_not_the_worker(tmp_path, report):
    report.load("exec runner whose run_dir is a full 64 KiB tmpfs; 200 KiB payload")
    with tmpfs(tmp_path / "disk", "64k") as disk:
        runner = ExecRunner(run_dir=disk / "runs", output_cap=4096, kill_grace=0.2)
        fill(disk, 0)
        request = RunRequest(
            entrypoint=Path("/bin/true"),
            action="a",
            payload=bytes(200_000),
            timeout=5,
            env={"PATH": "/usr/bin:/bin"},
            cwd=tmp_path,
        )
        result = await runner.run(request)
        assert result.exit_code is None and result.error, result
        assert "could not write the payload file" in result.error
        assert "No space left" in result.error
        report.check(
            "the run fails with 'could not write the payload file in <run dir>: "
            "No space left on device'; the worker carries on"
        )
        assert list((disk / "runs").iterdir()) == []
        report.check("no partial payload file left")
