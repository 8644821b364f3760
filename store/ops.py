"""The store's write operations: every change to the registry is one Git commit.

Each operation is a plain function taking a `Store` (where the registry is, the secrets file,
the commit author) and returning a `Change` (what changed and the commit), so the CLI, and
later an HTTP API, are thin layers. A change is checked before it is committed: an invalid
result is rolled back on disk and refused with the reasons, and the registry stays as it was.
Publishing the reload broadcast is the caller's job (it is async and needs the broker).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from csext.schemas.errors import CsextError, ExtensionNotFound, ManifestError
from csext.schemas.manifest import is_valid_name

from . import git, secrets
from .compat import compatibility_problems
from .files import atomic_write, content_problems, update_spec
from .registry import MANIFEST_FILE, Extension, load_extension, parse_manifest
from .secrets import Secrets


class StoreError(CsextError):
    """A store operation was refused; the message says why and what to do."""


class IncompatibleExtension(StoreError):
    """The extension's compatibility range excludes this csext."""


class EditRejected(StoreError):
    """An edited entry point did not pass the checks; `kept` holds the edited copy."""

    def __init__(self, message: str, kept: Path) -> None:
        self.kept = kept
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Store:
    root: Path
    secrets_file: Path | None = None
    """As configured (Settings.secrets_file); None means the default location."""
    author: git.Author = git.DEFAULT_AUTHOR

    @property
    def secrets_path(self) -> Path:
        return secrets.secrets_path(self.secrets_file, self.root)

    def load_secrets(self) -> Secrets:
        return secrets.load_secrets(self.secrets_path)


@dataclass(frozen=True, slots=True)
class Change:
    extension: str
    change: str
    """new, edit, set-content, set-path, enable, disable, remove, rollback, secret."""
    commit: str | None
    """None when nothing changed (or the change is not in Git, like a secret)."""
    message: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def extension_dir(store: Store, name: str) -> Path:
    """The folder of an existing extension; ExtensionNotFound with a hint otherwise."""
    check_name(name)
    folder = store.root / name
    if not (folder / MANIFEST_FILE).is_file():
        raise ExtensionNotFound(
            f"no extension named {name!r} in registry {store.root} (csext list shows them)"
        )
    return folder


def check_name(name: str) -> None:
    if not is_valid_name(name):
        raise StoreError(
            f"{name!r} is not a valid extension name: use lower case letters, digits, - and _, "
            "starting with a letter or digit (at most 63 characters)"
        )


@contextlib.contextmanager
def locked(store: Store) -> Iterator[None]:
    """One writer at a time per registry (an flock beside the registry's .git)."""
    top = git.ensure_repo(store.root)
    git_dir = Path(git.run_git(["rev-parse", "--git-common-dir"], top).stdout.strip())
    lock_path = (top / git_dir) / "csext.lock"
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def commit(store: Store, name: str, change: str, message: str, **extra: Any) -> Change:
    sha = git.commit_paths(store.root, [name], message, store.author)
    if sha is None:
        return Change(name, change, None, f"{message}: nothing changed", **extra)
    return Change(name, change, sha, message, **extra)


def check_loadable(store: Store, folder: Path) -> Extension:
    """The extension as the worker would load it (manifest, entry point, compatibility,
    secrets); ManifestError naming every problem otherwise."""
    return load_extension(folder, store.load_secrets())


@contextlib.contextmanager
def reverting(folder: Path, *files: str) -> Iterator[None]:
    """Restore `files` (relative to folder) as they were if the block raises."""
    saved = {name: (folder / name).read_bytes() for name in files if (folder / name).exists()}
    modes = {name: (folder / name).stat().st_mode & 0o7777 for name in saved}
    try:
        yield
    except BaseException:
        for name, data in saved.items():
            atomic_write(folder / name, data, modes[name])
        raise


def enable(store: Store, name: str) -> Change:
    """Set `spec.enabled: true` after checking it would load and is compatible."""
    with locked(store):
        folder = extension_dir(store, name)
        manifest = parse_manifest(folder / MANIFEST_FILE)
        if manifest.spec.enabled:
            return Change(name, "enable", None, f"{name} is already enabled")
        problems = compatibility_problems(manifest)
        if problems:
            raise IncompatibleExtension(f"cannot enable {name}: " + "; ".join(problems))
        with reverting(folder, MANIFEST_FILE):
            update_spec(folder / MANIFEST_FILE, {"enabled": True})
            _refuse_unloadable(store, folder, f"cannot enable {name}")
        return commit(store, name, "enable", f"enable {name}")


def disable(store: Store, name: str) -> Change:
    with locked(store):
        folder = extension_dir(store, name)
        manifest = parse_manifest(folder / MANIFEST_FILE)
        if not manifest.spec.enabled:
            return Change(name, "disable", None, f"{name} is already disabled")
        update_spec(folder / MANIFEST_FILE, {"enabled": False})
        return commit(store, name, "disable", f"disable {name}")


def _refuse_unloadable(store: Store, folder: Path, what: str) -> Extension:
    try:
        return check_loadable(store, folder)
    except ManifestError as exc:
        raise StoreError(f"{what}: " + "; ".join(exc.problems)) from exc


def remove(store: Store, name: str) -> Change:
    """Delete the extension's folder (its history stays in Git: csext rollback brings it back)."""
    with locked(store):
        folder = extension_dir(store, name)
        shutil.rmtree(folder)
        warnings = []
        with contextlib.suppress(CsextError):
            if secrets.secret_names(store.secrets_path, name):
                warnings.append(
                    f"secret values for {name} remain in {store.secrets_path} "
                    f"(csext secret unset {name} NAME)"
                )
        return commit(store, name, "remove", f"remove {name}", warnings=warnings)


def local_entrypoint(folder: Path, name: str) -> Path | None:
    """The entry point inside the folder, or None when it points at an external path."""
    manifest = parse_manifest(folder / MANIFEST_FILE)
    path_text = manifest.spec.entrypoint_path
    if Path(path_text).is_absolute():
        return None
    path = (folder / path_text).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise StoreError(f"{name}: spec.entrypoint {path_text!r} points outside the folder")
    return path


def set_content(store: Store, name: str, source: Path) -> Change:
    """Replace the entry point's content with `source` (checked: #!, syntax).

    An extension pointing at an external path is brought back into its folder: the content is
    stored as `<folder>/<source file name>` and `spec.entrypoint` points at it.
    """
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read {source}: {exc.strerror}") from exc
    with locked(store):
        folder = extension_dir(store, name)
        target = local_entrypoint(folder, name)
        relocate = target is None
        target = target or folder / source.name
        problems = content_problems(data, target.name)
        if problems:
            raise StoreError(f"refusing the content of {source}: " + "; ".join(problems))
        with reverting(folder, MANIFEST_FILE, target.relative_to(folder).as_posix()):
            atomic_write(target, data, 0o755)
            if relocate:
                update_spec(folder / MANIFEST_FILE, {"entrypoint": target.name})
            _refuse_unloadable(store, folder, f"cannot set {name}")
        return commit(store, name, "set-content", f"set {name}: content from {source.name}")


def set_path(store: Store, name: str, executable: Path) -> Change:
    """Point the extension at an executable elsewhere on disk (absolute, exists, executable)."""
    check_external(executable)
    with locked(store):
        folder = extension_dir(store, name)
        manifest = parse_manifest(folder / MANIFEST_FILE)
        value: Any = str(executable)
        if not isinstance(manifest.spec.entrypoint, str):
            value = {**manifest.spec.entrypoint.model_dump(by_alias=True, exclude_none=True)}
            value["path"] = str(executable)
        with reverting(folder, MANIFEST_FILE):
            update_spec(folder / MANIFEST_FILE, {"entrypoint": value})
            _refuse_unloadable(store, folder, f"cannot set {name}")
        return commit(store, name, "set-path", f"set {name}: path {executable}")


def check_external(executable: Path) -> None:
    if not executable.is_absolute():
        raise StoreError(f"--path {executable} must be absolute, e.g. /usr/local/bin/my-ext")
    if not executable.exists():
        raise StoreError(f"--path {executable} does not exist")
    if not executable.is_file():
        raise StoreError(f"--path {executable} is not a regular file")
    if not os.access(executable, os.X_OK):
        raise StoreError(f"--path {executable} is not executable (chmod +x {executable})")


def edit(store: Store, name: str, run_editor: Callable[[Path], None]) -> Change:
    """Open a copy of the entry point with `run_editor`; commit it if it changed and is valid.

    Like visudo: the registry only ever sees the finished file. A rejected edit is kept in a
    private temporary file (EditRejected.kept) so no work is lost.
    """
    folder = extension_dir(store, name)
    target = local_entrypoint(folder, name)
    if target is None:
        external = parse_manifest(folder / MANIFEST_FILE).spec.entrypoint_path
        raise StoreError(
            f"{name} runs the external executable {external}: edit that file directly, or bring "
            f"the content into the registry with csext set {name} --content FILE"
        )
    original = target.read_bytes()
    scratch = Path(tempfile.mkdtemp(prefix=f"csext-edit-{name}-")) / target.name
    atomic_write(scratch, original, 0o700)
    run_editor(scratch)
    edited = scratch.read_bytes()
    if edited == original:
        shutil.rmtree(scratch.parent)
        return Change(name, "edit", None, f"{name}: no changes")
    problems = content_problems(edited, target.name)
    if problems:
        raise EditRejected(
            f"not saved: {'; '.join(problems)}; your edit is kept in {scratch}", scratch
        )
    with locked(store):
        with reverting(folder, target.relative_to(folder).as_posix()):
            atomic_write(target, edited, target.stat().st_mode & 0o7777 or 0o755)
            _refuse_unloadable(store, folder, f"cannot save {name}")
        shutil.rmtree(scratch.parent)
        return commit(store, name, "edit", f"edit {name}: {target.name}")


def rollback(store: Store, name: str, rev: str) -> Change:
    """Make the extension's folder exactly as it was at `rev`, as a new commit."""
    check_name(name)
    with locked(store):
        sha = git.resolve(store.root, rev)
        if not git.path_exists_at(store.root, sha, name):
            raise StoreError(f"{name} did not exist at {rev} (csext history {name} lists commits)")
        git.restore(store.root, name, sha)
        try:
            _refuse_unloadable(store, store.root / name, f"cannot roll {name} back to {rev}")
        except StoreError:
            if git.path_exists_at(store.root, "HEAD", name):
                git.restore(store.root, name, "HEAD")
            else:
                shutil.rmtree(store.root / name)
                git.run_git(["rm", "-r", "--cached", "--quiet", "--", name], store.root)
            raise
        return commit(store, name, "rollback", f"rollback {name} to {sha[:10]}")


def set_secret(store: Store, name: str, key: str, value: str) -> Change:
    """Store a secret value (not in Git); warns when the manifest does not list it."""
    folder = extension_dir(store, name)
    secrets.set_secret(store.secrets_path, name, key, value)
    warnings = []
    if key not in parse_manifest(folder / MANIFEST_FILE).spec.secrets:
        warnings.append(
            f"{key} is not listed in {name}'s spec.secrets, so the extension will not receive "
            "it until you add it there"
        )
    return Change(name, "secret", None, f"set secret {key} of {name}", warnings)


def unset_secret(store: Store, name: str, key: str) -> Change:
    check_name(name)
    if not secrets.unset_secret(store.secrets_path, name, key):
        raise StoreError(f"{name} has no secret {key} set (csext secret list {name})")
    return Change(name, "secret", None, f"unset secret {key} of {name}")
