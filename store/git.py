"""The registry's history, through the `git` executable.

The registry is a Git repository so history, diff and rollback come free and a fleet of workers
can follow one remote. We run the `git` program (never a shell, never a library): it is what
operators already have, and what they will use to inspect or repair the registry by hand.

Every commit csext makes carries an explicit author (`-c user.name/-c user.email`), so no
global Git configuration is needed, and names only the paths it changed (`commit -- paths`),
so changes staged by someone else are never swept in.

If the registry folder sits inside an existing work tree (a monorepo of extensions), csext
commits there, scoped to the registry's paths; otherwise the first write runs `git init` in it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from csext.schemas.errors import CsextError

log = logging.getLogger(__name__)

GIT_TIMEOUT = 120.0
"""Seconds any one git command may take (clones of large repositories included)."""

_FIELD_SEP = "\x1f"
_LOG_FORMAT = _FIELD_SEP.join(["%H", "%an", "%ae", "%aI", "%s"])


class GitError(CsextError):
    """A git command failed; the message carries git's own stderr."""


class GitMissing(GitError):
    """The `git` executable is not installed."""


DEFAULT_EMAIL = "csext@localhost"


@dataclass(frozen=True, slots=True)
class Author:
    name: str = "csext"
    email: str = DEFAULT_EMAIL

    @classmethod
    def parse(cls, text: str) -> Author:
        """`Name <email>` (as git prints it) or just a name."""
        text = text.strip()
        if text.endswith(">") and "<" in text:
            name, _, email = text[:-1].partition("<")
            if name.strip() and email.strip():
                return cls(name.strip(), email.strip())
        if not text or "<" in text or ">" in text:
            raise CsextError(f"author {text!r} is not valid: use 'Name <email@example.org>'")
        return cls(text, DEFAULT_EMAIL)

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


DEFAULT_AUTHOR = Author()


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    author: str
    email: str
    date: str
    """ISO 8601, with the author's offset."""
    subject: str

    @property
    def short(self) -> str:
        return self.sha[:10]


def git_executable() -> str:
    path = shutil.which("git")
    if path is None:
        raise GitMissing("csext needs the git executable: apt-get install git (or dnf install git)")
    return path


def run_git(
    args: Sequence[str],
    cwd: Path,
    *,
    check: bool = True,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    author: Author | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `git <args>` in `cwd`; GitError with git's stderr when it fails and `check`."""
    argv = [git_executable()]
    who = author or DEFAULT_AUTHOR
    argv += ["-c", f"user.name={who.name}", "-c", f"user.email={who.email}"]
    argv += ["-c", "commit.gpgsign=false", *args]
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}
    log.debug("git %s (in %s)", " ".join(args), cwd)
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            input=input_text,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=GIT_TIMEOUT,
            check=False,
            stdin=None if input_text is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"git {args[0]} took longer than {GIT_TIMEOUT:.0f}s in {cwd}") from exc
    except OSError as exc:
        raise GitError(f"cannot run git in {cwd}: {exc.strerror}") from exc
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        raise GitError(f"git {' '.join(args[:2])} failed in {cwd}: {detail}")
    return done


def work_tree(path: Path) -> Path | None:
    """The top of the Git work tree containing `path`, or None if it is not in one."""
    if not path.is_dir():
        return None
    done = run_git(["rev-parse", "--show-toplevel"], path, check=False)
    if done.returncode != 0:
        return None
    return Path(done.stdout.strip())


def is_repo(path: Path) -> bool:
    return work_tree(path) is not None


def ensure_repo(root: Path) -> Path:
    """Make sure `root` is inside a work tree (`git init` it if not); returns the top."""
    root.mkdir(parents=True, exist_ok=True)
    top = work_tree(root)
    if top is not None:
        return top
    run_git(["init", "--quiet"], root)
    log.info("initialised a Git repository in registry %s", root)
    return root.resolve()


def head(root: Path) -> str | None:
    """The current commit, or None in a repository with no commits yet."""
    done = run_git(["rev-parse", "--verify", "--quiet", "HEAD"], root, check=False)
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def commit_paths(
    root: Path, paths: Sequence[str], message: str, author: Author | None = None
) -> str | None:
    """Stage `paths` (additions, changes and deletions) and commit only them.

    Paths are relative to `root`. Returns the new commit, or None when nothing changed.
    """
    ensure_repo(root)
    run_git(["add", "--all", "--", *paths], root)
    staged = run_git(["diff", "--cached", "--quiet", "--", *paths], root, check=False)
    if staged.returncode == 0:
        return None
    run_git(["commit", "--quiet", "-m", message, "--", *paths], root, author=author)
    return head(root)


def log_entries(root: Path, path: str | None = None, limit: int = 50) -> list[Commit]:
    """Newest first; only commits touching `path` (relative to root) when given."""
    if not is_repo(root) or head(root) is None:
        return []
    args = ["log", f"--max-count={limit}", f"--format={_LOG_FORMAT}"]
    if path is not None:
        args += ["--", path]
    done = run_git(args, root)
    commits = []
    for line in done.stdout.splitlines():
        sha, author, email, date, subject = line.split(_FIELD_SEP, 4)
        commits.append(Commit(sha, author, email, date, subject))
    return commits


def resolve(root: Path, rev: str) -> str:
    """The full commit id `rev` names; GitError with a hint when it names none."""
    if rev.startswith("-"):
        raise GitError(f"revision {rev!r} is not valid: give a commit id, tag or branch")
    done = run_git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], root, check=False)
    if done.returncode != 0:
        raise GitError(f"no commit {rev!r} in {root} (see csext history for valid revisions)")
    return done.stdout.strip()


def diff(root: Path, path: str, rev: str | None = None) -> str:
    """Unified diff of `path` between `rev` (default HEAD) and the work tree."""
    base = resolve(root, rev or "HEAD")
    return run_git(["diff", base, "--", path], root).stdout


def path_exists_at(root: Path, rev: str, path: str) -> bool:
    """Whether `path` (file or folder, relative to root) exists in commit `rev`."""
    done = run_git(["ls-tree", "--name-only", resolve(root, rev), "--", path], root)
    return bool(done.stdout.strip())


def restore(root: Path, path: str, rev: str) -> None:
    """Make `path` in the work tree exactly as it was at `rev` (files added since removed)."""
    commit = resolve(root, rev)
    target = root / path
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    run_git(["checkout", commit, "--", path], root)


def clone(url: str, dest: Path, ref: str | None = None) -> str:
    """Clone `url` into `dest` (must not exist) and check out `ref`; returns the commit id.

    `ref` may be a branch, a tag or a commit id; local paths and file:// URLs work offline.
    """
    if url.startswith("-"):
        raise GitError(f"repository URL {url!r} is not valid")
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    run_git(["clone", "--quiet", "--no-checkout", "--", url, str(dest)], parent)
    commit = resolve(dest, ref or "HEAD") if ref is None else _resolve_remote_ref(dest, ref)
    run_git(["checkout", "--quiet", "--detach", commit], dest)
    return commit


def _resolve_remote_ref(repo: Path, ref: str) -> str:
    for candidate in (f"refs/tags/{ref}", f"refs/remotes/origin/{ref}", ref):
        done = run_git(
            ["rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"], repo, check=False
        )
        if done.returncode == 0:
            return done.stdout.strip()
    raise GitError(f"ref {ref!r} is not a branch, tag or commit of the repository")
