"""`csext worker --registry-remote URL[@BRANCH]`: follow a shared registry repository.

Every worker of a fleet keeps its own copy of one Git repository, so they all run the same
extensions (CloudStack shows an extension whose files differ between management servers as
"Not Ready"; csext keeps the fleet on one commit instead). Layout, next to `--registry PATH`:

    PATH                         a symlink the worker owns -> .PATH.csext/checkouts/<commit>
    .PATH.csext/mirror.git       a bare mirror of the remote (`git fetch` updates it)
    .PATH.csext/checkouts/<c>    one read-only tree per commit (`git archive`, no .git)
    .PATH.csext/state.json       the commit in use, the one before it, canary or not

An update fetches, checks the commit out into a tree of its own, validates every manifest in it
(a commit with a broken manifest is refused: the fleet keeps the version it has), then swaps
the symlink with one rename: a reader sees the old tree or the new one, never half of each.
Runs already started keep the files they opened. A worker that cannot update (remote down,
bad commit, broken manifest) keeps running its version and reports why in `csext fleet`.

`BRANCH` follows the last `@` when that `@` comes after the URL's last `/`
(`https://git.example/ext.git@stable`, `/srv/registry.git@main`); without it the remote's
default branch is followed.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from csext.schemas.errors import ConfigError
from csext.store.git import GIT_TIMEOUT, GitError, git_executable, run_git
from csext.store.registry import load_registry

log = logging.getLogger(__name__)

KEEP_CHECKOUTS = 3
"""Trees kept on disk: the one in use, the previous one (rollback) and one more."""


def split_remote(remote: str) -> tuple[str, str | None]:
    """`URL[@BRANCH]` -> (URL, BRANCH or None)."""
    at, slash = remote.rfind("@"), remote.rfind("/")
    if at > slash and at > 0 and remote[at + 1 :]:
        return remote[:at], remote[at + 1 :]
    return remote, None


@dataclass
class FollowState:
    commit: str | None = None
    previous: str | None = None
    canary: bool = False
    error: str | None = None
    """Why the last update failed (None after a successful one)."""


class RegistryFollower:
    """The worker's copy of the shared registry; blocking (git): call it from a thread."""

    def __init__(
        self,
        remote: str,
        link: Path,
        secrets: Callable[[], dict[str, dict[str, str]]] | None = None,
    ) -> None:
        self.url, self.branch = split_remote(remote)
        self._secrets = secrets or dict
        self.link = link.absolute()
        self.home = self.link.parent / f".{self.link.name}.csext"
        self.mirror = self.home / "mirror.git"
        self.checkouts = self.home / "checkouts"
        self.state = self._load_state()

    # --- start ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One updater at a time: the processes of `--processes N` share the registry path."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.state = self._load_state()  # another process may have moved it meanwhile
            yield

    def prepare(self) -> None:
        """At start: mirror the remote, and check out the branch tip unless a commit is in use.

        A worker restarted while its remote is down starts on the commit it had."""
        with self._locked():
            self._prepare()

    def _prepare(self) -> None:
        if self.link.exists() and not self.link.is_symlink():
            raise ConfigError(
                f"registry {self.link} is a directory, but --registry-remote needs the path of "
                "a symlink csext manages: move the directory away or give another --registry"
            )
        self.checkouts.mkdir(parents=True, exist_ok=True)
        try:
            self._mirror()
        except GitError as exc:
            if self.state.commit and (self.checkouts / self.state.commit).is_dir():
                self.state.error = f"cannot fetch {self.url}: {exc}"
                log.error("registry remote: %s; keeping commit %s", exc, self.state.commit[:12])
                self._point_at(self.state.commit)
                return
            raise ConfigError(f"cannot clone the registry remote {self.url}: {exc}") from None
        if self.state.commit and (self.checkouts / self.state.commit).is_dir():
            self._point_at(self.state.commit)
            return
        result = self._sync(None, canary=False)
        if result["result"] == "failed":
            raise ConfigError(f"registry remote {self.url}: {result['error']}")

    def _mirror(self) -> None:
        if (self.mirror / "HEAD").exists():
            run_git(["fetch", "--quiet", "--prune", "origin"], self.mirror)
            return
        if self.url.startswith("-"):
            raise GitError(f"repository URL {self.url!r} is not valid")
        tmp = self.home / f"mirror.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        run_git(["clone", "--quiet", "--mirror", "--", self.url, str(tmp)], self.home)
        os.rename(tmp, self.mirror)

    # --- updates ----------------------------------------------------------------------------

    def sync(self, target: str | None, *, canary: bool) -> dict[str, str | None]:
        """Fetch, resolve `target` (None: the branch tip), check out, validate, swap.

        Returns {"result": "switched" | "unchanged" | "failed", "commit", "error"}."""
        with self._locked():
            return self._sync(target, canary=canary)

    def _sync(self, target: str | None, *, canary: bool) -> dict[str, str | None]:
        try:
            self._mirror()
            commit = self._resolve(target)
            if commit == self.state.commit:
                self.state.canary = canary and self.state.canary
                self.state.error = None
                self._save_state()
                return {"result": "unchanged", "commit": commit, "error": None}
            tree = self._checkout(commit)
            self._validate(tree)
        except (GitError, ConfigError, OSError) as exc:
            self.state.error = str(exc)
            self._save_state()
            log.error("registry update failed, keeping %s: %s", self._short(), exc)
            return {"result": "failed", "commit": self.state.commit, "error": str(exc)}
        self._switch(commit, canary=canary)
        return {"result": "switched", "commit": commit, "error": None}

    def _resolve(self, target: str | None) -> str:
        rev = target or (f"refs/heads/{self.branch}" if self.branch else "HEAD")
        args = ["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"]
        done = run_git(args, self.mirror, check=False)
        if done.returncode != 0:
            what = f"commit {target}" if target else f"branch {self.branch or '(default)'}"
            raise GitError(f"{what} not found in {self.url}")
        return done.stdout.strip()

    def _checkout(self, commit: str) -> Path:
        tree = self.checkouts / commit
        if tree.is_dir():
            return tree
        archive = subprocess.run(
            [git_executable(), "--git-dir", str(self.mirror), "archive", "--format=tar", commit],
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
        if archive.returncode != 0:
            raise GitError(f"git archive {commit[:12]} failed: {archive.stderr.decode().strip()}")
        tmp = self.checkouts / f".{commit}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        os.rename(tmp, tree)
        return tree

    def _validate(self, tree: Path) -> None:
        """Every extension of the commit must load on this host, with this host's secrets: a
        broken manifest, or a secret the commit needs and this host lacks, stops the update
        (add the secret first, then sync again)."""
        view = load_registry(tree, self._secrets())
        if view.broken:
            problems = "; ".join(f"{name}: {b.message}" for name, b in sorted(view.broken.items()))
            raise ConfigError(f"commit {tree.name[:12]} has invalid extensions ({problems})")

    def _switch(self, commit: str, *, canary: bool) -> None:
        old = self.state.commit
        self._point_at(commit)
        self.state = FollowState(commit=commit, previous=old, canary=canary)
        self._save_state()
        self._prune()
        log.info("registry switched to %s (was %s)", commit[:12], (old or "none")[:12])

    def _point_at(self, commit: str) -> None:
        """Swap the symlink in one rename (atomic on POSIX)."""
        tmp = self.link.parent / f".{self.link.name}.link-{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(self.checkouts / commit, tmp)
        os.replace(tmp, self.link)

    def _prune(self) -> None:
        keep = {self.state.commit, self.state.previous}
        trees = sorted(
            (p for p in self.checkouts.iterdir() if not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for tree in trees[KEEP_CHECKOUTS:]:
            if tree.name not in keep:
                shutil.rmtree(tree, ignore_errors=True)

    # --- state ------------------------------------------------------------------------------

    def _short(self) -> str:
        return (self.state.commit or "nothing")[:12]

    def _load_state(self) -> FollowState:
        try:
            data = orjson.loads((self.home / "state.json").read_bytes())
            return FollowState(**{k: data.get(k) for k in ("commit", "previous", "canary")})
        except (OSError, ValueError, TypeError):
            return FollowState()

    def _save_state(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.home / f"state.json.tmp-{os.getpid()}"
        tmp.write_bytes(orjson.dumps(asdict(self.state)))
        os.replace(tmp, self.home / "state.json")
