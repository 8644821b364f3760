"""Helpers shared by the bundle, install and index tests: registries and Git repos in tmp_path."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

MANIFEST = """\
apiVersion: csext/v1
kind: Extension
# a comment that should survive install
metadata:
  name: {name}
  description: {description}
  version: {version}
  tags: [{tags}]
spec:
  hook: {hook}
  entrypoint: run.sh
  events:
    patterns: ["management-server.ResourceStateEvent.#"]
"""

SCRIPT = """\
#!/bin/sh
# version {version}
echo '{{"status": "success"}}'
"""

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=GIT_ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def write_extension(
    folder: Path,
    name: str,
    version: str = "1.0.0",
    *,
    hook: str = "event",
    description: str = "Sample extension",
    tags: str = "sample",
) -> Path:
    """A valid extension folder at `folder` (its metadata.name is `name`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "extension.yaml").write_text(
        MANIFEST.format(name=name, version=version, hook=hook, description=description, tags=tags)
    )
    script = folder / "run.sh"
    script.write_text(SCRIPT.format(version=version))
    script.chmod(0o755)
    (folder / "README.md").write_text(f"# {name}\n")
    return folder


def make_registry(root: Path, *names: str) -> Path:
    """A Git registry with the given extensions committed (clean status)."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "--quiet")
    (root / ".keep").write_text("")
    for name in names:
        write_extension(root / name, name)
    git(root, "add", "--all")
    git(root, "commit", "--quiet", "-m", "initial")
    return root


def git_status(root: Path) -> str:
    """Porcelain status including untracked files: empty means untouched."""
    return git(root, "status", "--porcelain", "--untracked-files=all", "--ignored")


def make_repo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "--quiet")
    return root


def commit_all(repo: Path, message: str, tag: str | None = None) -> str:
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", message)
    if tag:
        git(repo, "tag", tag)
    return git(repo, "rev-parse", "HEAD")


UNREACHABLE_AMQP = "amqp://guest:guest@127.0.0.1:1/"
"""Nothing listens on port 1: the reload broadcast fails at once (a warning, not an error)."""


def cli_env(tmp_path: Path, registry: Path, amqp_url: str = UNREACHABLE_AMQP) -> dict[str, str]:
    return {
        "CSEXT_REGISTRY": str(registry),
        "CSEXT_AMQP_URL": amqp_url,
        "CSEXT_CONFIG": str(tmp_path / "no-config.yaml"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }


def csext(env: dict[str, str], *args: str) -> Any:
    """Run the real `csext` app in-process (typer's CliRunner); returns the result."""
    from typer.testing import CliRunner

    from csext.cli.app import app

    return CliRunner().invoke(app, list(args), env=env)
