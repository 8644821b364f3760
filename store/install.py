"""Install an extension from a Git repository, pinned to a commit, and update it later.

Like `st2 pack install URL=ref` and `faas-cli template pull URL#ref`: the repository is cloned
with the `git` executable (file:// URLs and plain local paths work offline), the ref is resolved
to a commit, the extension folder (the repository root or `--subdir`) is checked and copied into
the registry, and `source: {type: git, url, ref, commit, subdir}` is written into the copy's
manifest so `csext update` knows where it came from. The copy holds only regular files: `.git`
is left behind, a symlink is refused unless it resolves to a file inside the extension folder
(then its content is copied). Everything happens in a staging folder first; the registry sees
one rename and one commit, or nothing at all.

Credentials in a URL (https://user:token@host/...) are never printed and never written to the
registry: messages show `***`, the manifest records the URL without them (a Git credential
helper supplies them to `csext update`).
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from csext.schemas.errors import CsextError
from csext.schemas.manifest import is_valid_name

from . import git
from .bundle import (
    BundleError,
    TreeFile,
    check_extension,
    clash_message,
    collect_files,
    extension_dir,
    place_extension,
    staging,
)
from .registry import MANIFEST_FILE, parse_manifest

_REF_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+-]*$")
_VERSION_TAG_RE = re.compile(r"^v?(\d+(?:\.\d+){0,3})$")
SCP_LIKE = re.compile(r"^[^/]+:")
# Repositories come from strangers: no `ext::`/`fd::` transports (they run commands), objects
# are checked as they arrive, no hook runs, and local paths are cloned through the transport
# (`--no-local`), not by linking their object store (which may hold symlinks).
_GIT_SAFETY = [
    "-c", "protocol.ext.allow=never",
    "-c", "protocol.fd.allow=never",
    "-c", "transfer.fsckObjects=true",
    "-c", "core.hooksPath=/dev/null",
    "-c", "advice.detachedHead=false",
]  # fmt: skip


class InstallError(CsextError):
    """A Git install or update that cannot go ahead; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Checkout:
    directory: Path
    url: str
    """As given (may hold credentials: never print it, use `shown_url`)."""
    ref: str | None
    commit: str

    @property
    def shown_url(self) -> str:
        return redact_url(self.url)


@dataclass(frozen=True, slots=True)
class InstallResult:
    name: str
    version: str
    url: str
    ref: str | None
    commit: str
    subdir: str | None
    registry_commit: str | None
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "url": self.url,
            "ref": self.ref,
            "commit": self.commit,
            "subdir": self.subdir,
            "registry_commit": self.registry_commit,
            "files": self.files,
        }


@dataclass(frozen=True, slots=True)
class UpdatePlan:
    name: str
    url: str
    from_version: str
    to_version: str
    from_ref: str | None
    to_ref: str | None
    from_commit: str | None
    to_commit: str
    diff: str
    changed: list[str]

    @property
    def up_to_date(self) -> bool:
        return not self.changed


@dataclass(frozen=True, slots=True)
class UpdateResult:
    plan: UpdatePlan
    applied: bool
    registry_commit: str | None = None

    def as_dict(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "name": plan.name,
            "url": plan.url,
            "from": {
                "version": plan.from_version,
                "ref": plan.from_ref,
                "commit": plan.from_commit,
            },
            "to": {"version": plan.to_version, "ref": plan.to_ref, "commit": plan.to_commit},
            "up_to_date": plan.up_to_date,
            "changed": plan.changed,
            "diff": plan.diff,
            "applied": self.applied,
            "registry_commit": self.registry_commit,
        }


def _point(version: str, ref: str | None, commit: str | None) -> dict[str, Any]:
    return {"version": version, "ref": ref, "commit": commit}


# --- URLs and refs --------------------------------------------------------------------------


def _replace_credentials(url: str, userinfo: str) -> str:
    """`url` with its user name and password (if any) replaced by `userinfo` (may be "")."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}" if userinfo else host))


def redact_url(url: str) -> str:
    """The URL with any user name or password replaced by `***`, for messages and logs."""
    return _replace_credentials(url, "***") if "://" in url else url


def recorded_url(url: str) -> str:
    """What the manifest records: credentials dropped, local paths made absolute."""
    if "://" in url:
        return _replace_credentials(url, "")
    if SCP_LIKE.match(url):
        return url
    return str(Path(url).expanduser().resolve())


def split_target(target: str) -> tuple[str, str | None]:
    """`URL[@REF]` into (url, ref); `@` inside credentials or `git@host:` is not a ref."""
    url, at, ref = target.rpartition("@")
    if not at or not ref or ":" in ref or not url or not _complete_url(url):
        return target, None
    return url, ref


def _complete_url(url: str) -> bool:
    if "://" in url:
        return bool(urlsplit(url).path.strip("/")) or url.startswith("file://")
    return not url.endswith(":")


def check_ref(ref: str) -> str:
    if not _REF_RE.match(ref) or ".." in ref or ref.endswith((".lock", "/", ".")):
        raise InstallError(
            f"ref {ref!r} is not valid: give a tag (v1.2.0), a branch (main) or a commit id"
        )
    return ref


def check_subdir(subdir: str | None) -> str | None:
    if subdir is None or subdir.strip("/") in ("", "."):
        return None
    path = PurePosixPath(subdir)
    if path.is_absolute() or ".." in path.parts or "\\" in subdir:
        raise InstallError(
            f"--subdir {subdir!r} must be a relative folder inside the repository, without '..'"
        )
    return path.as_posix()


# --- cloning --------------------------------------------------------------------------------


def fetch(url: str, ref: str | None, dest: Path) -> Checkout:
    """Clone `url` into `dest` and check out `ref` (default: the remote's default branch)."""
    if not url or url.startswith("-"):
        raise InstallError(f"repository {redact_url(url)!r} is not a valid Git URL or path")
    if ref is not None:
        check_ref(ref)
    clone = ["clone", "--quiet", "--no-local", "--no-checkout", "--no-recurse-submodules"]
    safe_git([*clone, "--", url, str(dest)], dest.parent, url)
    commit = resolve_ref(dest, ref, url)
    safe_git(["checkout", "--quiet", "--detach", commit], dest, url)
    return Checkout(dest, url, ref, commit)


def resolve_ref(repo: Path, ref: str | None, url: str) -> str:
    """A tag, a branch of the remote, or a commit id, to the full commit id."""
    candidates = (
        ["HEAD"] if ref is None else [f"refs/tags/{ref}", f"refs/remotes/origin/{ref}", ref]
    )
    for candidate in candidates:
        verify = ["rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"]
        done = safe_git(verify, repo, url, check=False)
        if done.returncode == 0:
            return done.stdout.strip()
    raise InstallError(
        f"{redact_url(url)} has no tag, branch or commit {ref!r} "
        f"(tags: {', '.join(list_tags(repo)[:10]) or 'none'})"
    )


def list_tags(repo: Path) -> list[str]:
    done = safe_git(["tag", "--list"], repo, "", check=False)
    return sorted(done.stdout.split())


def safe_git(
    args: list[str], cwd: Path, url: str, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run git with hostile-repository settings; errors are scrubbed of the URL's credentials."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    env.pop("GIT_DIR", None)
    try:
        done = subprocess.run(
            [git.git_executable(), *_GIT_SAFETY, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=git.GIT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise InstallError(f"git {args[0]} of {redact_url(url)} timed out") from exc
    if check and done.returncode != 0:
        detail = scrub(done.stderr.strip() or f"exit code {done.returncode}", url)
        raise InstallError(f"git {args[0]} of {redact_url(url)} failed: {detail}")
    return done


def scrub(text: str, url: str) -> str:
    """`text` with the URL's credentials (and the URL itself) replaced."""
    if not url:
        return text
    text = text.replace(url, redact_url(url))
    parts = urlsplit(url) if "://" in url else None
    for secret in (parts.password, parts.username) if parts else ():
        if secret:
            text = text.replace(secret, "***")
    return text


# --- staging a copy -------------------------------------------------------------------------


def extension_root(checkout: Checkout, subdir: str | None) -> Path:
    """The extension folder inside the checkout, checked to stay inside it."""
    top = checkout.directory.resolve()
    folder = (top / subdir).resolve() if subdir else top
    if not folder.is_relative_to(top):
        raise InstallError(f"--subdir {subdir!r} leads outside the repository (a symlink?)")
    if not (folder / MANIFEST_FILE).is_file():
        found = sorted(p.parent.relative_to(top).as_posix() for p in top.glob(f"*/{MANIFEST_FILE}"))
        found += sorted(
            p.parent.relative_to(top).as_posix() for p in top.glob(f"*/*/{MANIFEST_FILE}")
        )
        hint = f"; pass --subdir, one of: {', '.join(found)}" if found else ""
        where = f"folder {subdir!r}" if subdir else "repository root"
        raise InstallError(f"no {MANIFEST_FILE} in the {where} of {checkout.shown_url}{hint}")
    return folder


def stage_copy(
    checkout: Checkout,
    subdir: str | None,
    staged: Path,
    *,
    name: str | None,
    enabled: bool | None = None,
) -> str:
    """Copy the extension into `staged`, record its source, validate; returns its name."""
    root = extension_root(checkout, subdir)
    _copy_tree(collect_files(root), staged)
    source = {
        "type": "git",
        "url": recorded_url(checkout.url),
        "ref": checkout.ref,
        "commit": checkout.commit,
        "subdir": subdir,
    }
    manifest_path = staged / MANIFEST_FILE
    text = manifest_path.read_text(encoding="utf-8")
    manifest_path.write_text(adjust_manifest(text, source, name=name, enabled=enabled))
    return parse_manifest(manifest_path).metadata.name


def _copy_tree(files: Iterable[TreeFile], staged: Path) -> None:
    staged.mkdir(parents=True)
    for item in files:
        target = staged / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.source, target, follow_symlinks=True)
        os.chmod(target, item.mode)


def adjust_manifest(
    text: str, source: dict[str, Any], *, name: str | None = None, enabled: bool | None = None
) -> str:
    """The manifest text with `source` set (and name/enabled changed if given).

    Only the top-level `source:` block is rewritten so the author's comments and layout
    survive; when that cannot be done safely the whole manifest is re-serialised.
    """
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise InstallError(f"{MANIFEST_FILE} must be a YAML mapping with metadata and spec")
    wanted = dict(raw)
    wanted["source"] = {k: v for k, v in source.items() if v is not None}
    if name is not None:
        wanted["metadata"] = {**(raw.get("metadata") or {}), "name": name}
    if enabled is not None and (raw.get("spec") or {}).get("enabled", True) != enabled:
        wanted["spec"] = {**(raw.get("spec") or {}), "enabled": enabled}
    if wanted.get("metadata") == raw.get("metadata") and wanted.get("spec") == raw.get("spec"):
        edited = _replace_source_block(text, wanted["source"])
        if edited is not None and yaml.safe_load(edited) == wanted:
            return edited
    return yaml.safe_dump(wanted, sort_keys=False, allow_unicode=True)


def _replace_source_block(text: str, source: dict[str, Any]) -> str | None:
    lines = text.splitlines()
    if any(line.startswith(("---", "...")) for line in lines[1:]):
        return None
    block = yaml.safe_dump({"source": source}, sort_keys=False).splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"^source\s*:", line)), None)
    if start is None:
        return "\n".join([*lines, *block]) + "\n"
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return "\n".join([*lines[:start], *block, *lines[end:]]) + "\n"


# --- install --------------------------------------------------------------------------------


def install_extension(
    registry: Path,
    target: str,
    *,
    ref: str | None = None,
    subdir: str | None = None,
    name: str | None = None,
    replace: bool = False,
    author: git.Author | None = None,
) -> InstallResult:
    """Clone `target` (`URL[@REF]`), validate, copy into the registry pinned to the commit."""
    url, target_ref = split_target(target)
    ref = ref or target_ref
    subdir = check_subdir(subdir)
    if name is not None:
        extension_dir(registry, name)  # checks the name
    with staging(registry) as stage:
        checkout = fetch(url, ref, stage / "checkout")
        staged = stage / "new" / "extension"
        final = stage_copy(checkout, subdir, staged, name=name)
        if not is_valid_name(final):
            raise InstallError(f"metadata.name {final!r} is not a valid extension name")
        staged = staged.rename(staged.parent / final)
        manifest = check_extension(staged)
        if (registry / final).exists() and not replace:
            raise BundleError(
                clash_message(final) + f", update it (csext update {final}) or pick --name"
            )
        message = (
            f"install {final} {manifest.metadata.version} from {checkout.shown_url}"
            f"{'@' + ref if ref else ''} ({checkout.commit[:12]})"
        )
        files = sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file())
        commit = place_extension(
            registry, staged, final, replace=replace, message=message, author=author
        )
    return InstallResult(
        final,
        manifest.metadata.version,
        checkout.shown_url,
        ref,
        checkout.commit,
        subdir,
        commit,
        files,
    )


# --- update ---------------------------------------------------------------------------------


def update_extension(
    registry: Path,
    name: str,
    *,
    ref: str | None = None,
    confirm: Callable[[UpdatePlan], bool] | None = None,
    author: git.Author | None = None,
) -> UpdateResult:
    """Move a Git-installed extension to `ref` (default: see `newer_ref`), diff shown first.

    `confirm(plan)` decides whether to apply; without it nothing is applied (a dry run).
    The local `spec.enabled` is kept: an update never re-enables a disabled extension.
    """
    directory = extension_dir(registry, name)
    if not (directory / MANIFEST_FILE).is_file():
        raise InstallError(f"no extension named {name!r} in the registry {registry}")
    current = parse_manifest(directory / MANIFEST_FILE)
    source = current.source
    if source.type != "git" or not source.url:
        raise InstallError(
            f"{name} was not installed from Git (source.type is {source.type!r}); "
            f"install it with csext install URL --name {name} --replace"
        )
    with staging(registry) as stage:
        checkout = fetch(source.url, None, stage / "checkout")
        target_ref = ref or newer_ref(checkout.directory, source.ref, source.url)
        commit = resolve_ref(checkout.directory, target_ref, source.url)
        safe_git(["checkout", "--quiet", "--detach", commit], checkout.directory, source.url)
        checkout = Checkout(checkout.directory, source.url, target_ref, commit)
        staged = stage / "new" / name
        stage_copy(checkout, source.subdir, staged, name=name, enabled=current.spec.enabled)
        manifest = check_extension(staged)
        diff, changed = tree_diff(directory, staged, name)
        plan = UpdatePlan(
            name,
            checkout.shown_url,
            current.metadata.version,
            manifest.metadata.version,
            source.ref,
            target_ref,
            source.commit,
            commit,
            diff,
            changed,
        )
        if plan.up_to_date or confirm is None or not confirm(plan):
            return UpdateResult(plan, applied=False)
        message = (
            f"update {name} {plan.from_version} -> {plan.to_version} from {checkout.shown_url}"
            f"{'@' + target_ref if target_ref else ''} ({commit[:12]})"
        )
        registry_commit = place_extension(
            registry, staged, name, replace=True, message=message, author=author
        )
    return UpdateResult(plan, applied=True, registry_commit=registry_commit)


def newer_ref(repo: Path, ref: str | None, url: str) -> str | None:
    """What `csext update` moves to without --ref.

    No recorded ref: the default branch. A version tag (v1.2.0): the highest version tag of
    the repository. A branch: its tip. Anything else (a commit id, another tag): unchanged.
    """
    if ref is None:
        return None
    if _is_tag(repo, ref, url) and (current := _version(ref)) is not None:
        versions = [(v, tag) for tag in list_tags(repo) if (v := _version(tag)) is not None]
        best = max(versions, default=(current, ref))
        return best[1] if best[0] > current else ref
    return ref


def _is_tag(repo: Path, ref: str, url: str) -> bool:
    done = safe_git(
        ["rev-parse", "--verify", "--quiet", f"refs/tags/{ref}"], repo, url, check=False
    )
    return done.returncode == 0


def _version(tag: str) -> tuple[int, ...] | None:
    match = _VERSION_TAG_RE.match(tag)
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def tree_diff(old: Path, new: Path, name: str) -> tuple[str, list[str]]:
    """A unified diff of two extension folders, and the paths that differ."""
    before = {f.path: f for f in collect_files(old)}
    after = {f.path: f for f in collect_files(new)}
    chunks: list[str] = []
    changed: list[str] = []
    for path in sorted(before.keys() | after.keys()):
        old_file, new_file = before.get(path), after.get(path)
        text = _file_diff(path, name, old_file, new_file)
        if text:
            chunks.append(text)
            changed.append(path)
    return "".join(chunks), changed


def _file_diff(path: str, name: str, old: TreeFile | None, new: TreeFile | None) -> str:
    old_bytes = old.source.read_bytes() if old else b""
    new_bytes = new.source.read_bytes() if new else b""
    header = ""
    if old and new and old.mode != new.mode:
        header = f"mode of {name}/{path}: {old.mode:o} -> {new.mode:o}\n"
    if old_bytes == new_bytes and (old is None) == (new is None):
        return header
    a_label = f"a/{name}/{path}" if old else "/dev/null"
    b_label = f"b/{name}/{path}" if new else "/dev/null"
    try:
        old_lines = old_bytes.decode("utf-8").splitlines(keepends=True)
        new_lines = new_bytes.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return header + f"Binary files {a_label} and {b_label} differ\n"
    lines = difflib.unified_diff(old_lines, new_lines, a_label, b_label)
    return header + "".join(line if line.endswith("\n") else line + "\n" for line in lines)
