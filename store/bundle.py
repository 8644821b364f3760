"""Export an extension as a `.tar.gz` bundle, and import one back, refusing anything unsafe.

Import is where csext takes files from strangers and later runs them, so it trusts nothing in
the archive: every member is checked by hand (and by tarfile's `data` filter as a second line),
only regular files and folders are accepted (no links, devices or FIFOs), sizes are capped,
every file must be listed in `bundle.json` with its sha256 (no missing or extra file), and the
extension name must be a plain registry name. Files are written one by one into a staging
folder on the registry's filesystem (inside the Git directory, so `git status` never sees
them), the extension is validated there, then renamed into place and committed. Any failure
before the rename leaves the registry exactly as it was.

Bundle layout::

    bundle.json            {"format": 1, "name", "version", "files": [{path, sha256, size, mode}]}
    <name>/extension.yaml
    <name>/...             the extension folder (regular files only)

Bundles are reproducible: sorted members, fixed owner and times, so the same extension always
gives the same bytes (and the same sha256 to publish next to a download).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from csext.schemas.errors import CsextError, ManifestError
from csext.schemas.manifest import Manifest, is_valid_name

from . import git, ops
from .registry import MANIFEST_FILE, load_extension, parse_manifest

BUNDLE_FORMAT = 1
BUNDLE_MANIFEST = "bundle.json"
SKIPPED_DIRS = frozenset({".git", "__pycache__"})
"""Never exported or installed: Git metadata and Python byte-code caches."""

_CHUNK = 1024 * 1024
_MIB = 1024 * 1024


class BundleError(CsextError):
    """A bundle that cannot be exported or imported; the message says why and what to do."""


class UnsafeBundle(BundleError):
    """The bundle holds something csext refuses to unpack (traversal, links, devices...)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class BundleLimits:
    """Caps on what an import will unpack (sizes are the uncompressed bytes)."""

    max_member_bytes: int = 20 * _MIB
    max_total_bytes: int = 50 * _MIB
    max_members: int = 2000
    max_index_bytes: int = 1 * _MIB
    """Cap on bundle.json itself."""


@dataclass(frozen=True, slots=True)
class BundleFile:
    path: str
    """Relative to the extension folder, '/'-separated."""
    sha256: str
    size: int
    mode: int
    """0o755 (executable) or 0o644."""

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size, "mode": self.mode}


@dataclass(frozen=True, slots=True)
class TreeFile:
    """A file to copy out of an extension folder: where it goes and where to read it."""

    path: str
    source: Path
    mode: int


@dataclass(frozen=True, slots=True)
class ExportResult:
    name: str
    version: str
    path: Path
    sha256: str
    size: int
    files: list[BundleFile]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "path": str(self.path),
            "sha256": self.sha256,
            "size": self.size,
            "files": [f.as_dict() for f in self.files],
        }


@dataclass(frozen=True, slots=True)
class ImportResult:
    name: str
    version: str
    replaced: bool
    commit: str | None
    bundle_sha256: str
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "replaced": self.replaced,
            "commit": self.commit,
            "bundle_sha256": self.bundle_sha256,
            "files": self.files,
        }


# --- shared with install: reading an extension folder, validating, placing, committing --------


def normal_mode(mode: int) -> int:
    """Only the executable bit survives: 0o755 or 0o644."""
    return 0o755 if mode & 0o111 else 0o644


def collect_files(root: Path) -> list[TreeFile]:
    """Every file under `root`, sorted; BundleError on anything that is not a plain file.

    A symlink is accepted only when it resolves to a regular file inside `root`; it is then
    read as that file (the copy holds no link). Links to folders, dangling links and links
    leading outside are refused, as are devices, FIFOs and sockets.
    """
    real_root = root.resolve()
    found: list[TreeFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in [d for d in dirnames if (here / d).is_symlink()]:
            raise BundleError(
                f"{here / name} is a symbolic link to a folder; replace it with the folder itself"
            )
        for name in sorted(filenames):
            found.append(_tree_file(here / name, root, real_root))
    return sorted(found, key=lambda f: f.path)


def _tree_file(path: Path, root: Path, real_root: Path) -> TreeFile:
    relative = path.relative_to(root).as_posix()
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        target = path.resolve()
        if not target.is_relative_to(real_root):
            raise BundleError(
                f"{path} is a symbolic link pointing outside the extension ({os.readlink(path)}); "
                "copy the file into the extension instead"
            )
        if not target.is_file():
            raise BundleError(f"{path} is a symbolic link to {os.readlink(path)}, not to a file")
        return TreeFile(relative, target, normal_mode(target.stat().st_mode))
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(f"{path} is not a regular file (device, FIFO or socket); remove it")
    return TreeFile(relative, path, normal_mode(info.st_mode))


def check_extension(directory: Path) -> Manifest:
    """Validate an extension folder as the worker would load it (secrets need no values here).

    Shared extensions must carry their entry point: an absolute path would run something
    outside the bundle, so it is refused (point it elsewhere later with `csext set --path`).
    """
    manifest = parse_manifest(directory / MANIFEST_FILE)
    if Path(manifest.spec.entrypoint_path).is_absolute():
        raise ManifestError(
            str(directory / MANIFEST_FILE),
            [
                f"spec.entrypoint: {manifest.spec.entrypoint_path!r} is outside the extension; "
                "a shared extension must carry its entry point (use a relative path)"
            ],
        )
    placeholders = {manifest.metadata.name: dict.fromkeys(manifest.spec.secrets, "")}
    load_extension(directory, placeholders)
    return manifest


def extension_dir(registry: Path, name: str) -> Path:
    """The folder of extension `name`; BundleError if the name is not a plain one."""
    if not is_valid_name(name):
        raise BundleError(
            f"{name!r} is not a valid extension name: use lowercase letters, digits, '-' and "
            "'_' (at most 63), starting with a letter or digit"
        )
    return registry / name


@contextlib.contextmanager
def staging(registry: Path) -> Iterator[Path]:
    """A private temporary folder on the registry's filesystem, outside its work tree.

    It lives in the Git directory (so renames into the registry are atomic and `git status`
    never shows it) and is removed on exit, whatever happened.
    """
    git.ensure_repo(registry)
    done = git.run_git(["rev-parse", "--absolute-git-dir"], registry)
    base = Path(done.stdout.strip())
    if base.stat().st_dev != registry.stat().st_dev:
        base = registry.resolve().parent
    stage = Path(tempfile.mkdtemp(prefix="csext-staging-", dir=base))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def place_extension(
    registry: Path,
    staged: Path,
    name: str,
    *,
    replace: bool,
    message: str,
    author: git.Author | None = None,
) -> str | None:
    """Rename `staged` to `<registry>/<name>` and commit it; undo everything if that fails.

    Holds the registry's writer lock (the one store.ops takes), so it never interleaves
    with another csext change.
    """
    target = registry / name
    backup = staged.parent / f"{staged.name}.previous"
    with ops.locked(ops.Store(registry)):
        had_previous = target.exists() or target.is_symlink()
        if had_previous and not replace:
            raise BundleError(clash_message(name))
        if had_previous:
            os.rename(target, backup)
        try:
            os.rename(staged, target)
            return git.commit_paths(registry, [name], message, author)
        except BaseException:
            _undo_place(registry, target, backup, name, had_previous)
            raise


def _undo_place(registry: Path, target: Path, backup: Path, name: str, had: bool) -> None:
    if target.exists() and (not had or backup.exists()):
        shutil.rmtree(target, ignore_errors=True)
    if had and backup.exists():
        os.rename(backup, target)
    git.run_git(["reset", "--quiet", "--", name], registry, check=False)


def clash_message(name: str) -> str:
    return (
        f"an extension named {name!r} is already in the registry; pass --replace to overwrite "
        f"it (its history stays in Git) or remove it first (csext remove {name})"
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- export ---------------------------------------------------------------------------------


def export_bundle(registry: Path, name: str, output: Path | None = None) -> ExportResult:
    """Write extension `name` as a reproducible `.tar.gz`; default `<name>-<version>.tar.gz`."""
    directory = extension_dir(registry, name)
    if not (directory / MANIFEST_FILE).is_file():
        raise BundleError(f"no extension named {name!r} in the registry {registry}")
    manifest = check_extension(directory)
    tree = collect_files(directory)
    files = [
        BundleFile(f.path, sha256_file(f.source), f.source.stat().st_size, f.mode) for f in tree
    ]
    version = manifest.metadata.version
    target = output or Path(f"{name}-{version}.tar.gz")
    if target.is_dir():
        target = target / f"{name}-{version}.tar.gz"
    index = {
        "format": BUNDLE_FORMAT,
        "name": name,
        "version": version,
        "files": [f.as_dict() for f in files],
    }
    _write_tarball(target, name, index, tree)
    return ExportResult(name, version, target, sha256_file(target), target.stat().st_size, files)


def _write_tarball(target: Path, name: str, index: dict[str, Any], tree: list[TreeFile]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            data = json.dumps(index, indent=2, sort_keys=True).encode() + b"\n"
            tar.addfile(_tarinfo(BUNDLE_MANIFEST, len(data), 0o644), io.BytesIO(data))
            for item in tree:
                info = _tarinfo(f"{name}/{item.path}", item.source.stat().st_size, item.mode)
                with item.source.open("rb") as handle:
                    tar.addfile(info, handle)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def _tarinfo(name: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# --- import ---------------------------------------------------------------------------------


def import_bundle(
    registry: Path,
    bundle: Path,
    *,
    replace: bool = False,
    limits: BundleLimits | None = None,
    author: git.Author | None = None,
) -> ImportResult:
    """Verify `bundle` and add its extension to the registry as one commit.

    UnsafeBundle / BundleError / ManifestError leave the registry untouched.
    """
    limits = limits or BundleLimits()
    if not bundle.is_file():
        raise BundleError(f"bundle {bundle} does not exist or is not a file")
    digest = sha256_file(bundle)
    with staging(registry) as stage:
        name, files = _unpack(bundle, stage, limits)
        staged = stage / name
        manifest = check_extension(staged)
        if (registry / name).exists() and not replace:
            raise BundleError(clash_message(name))
        replaced = (registry / name).exists()
        version = manifest.metadata.version
        verb = "replace" if replaced else "import"
        message = f"{verb} {name} {version} from bundle {bundle.name} (sha256 {digest[:12]})"
        commit = place_extension(
            registry, staged, name, replace=replace, message=message, author=author
        )
    return ImportResult(name, version, replaced, commit, digest, files)


def _unpack(bundle: Path, stage: Path, limits: BundleLimits) -> tuple[str, list[str]]:
    """Check every member, then write the listed files under `stage/<name>`."""
    try:
        with tarfile.open(bundle, mode="r:gz") as tar:
            members = _checked_members(tar, stage, limits)
            index = _read_index(tar, members, limits)
            name = _index_name(index)
            expected = _index_files(index)
            _check_layout(members, name, expected)
            for path, entry in sorted(expected.items()):
                _extract_file(tar, members[f"{name}/{path}"], stage / name / path, entry)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise BundleError(f"{bundle} is not a readable .tar.gz bundle: {exc}") from exc
    return name, sorted(expected)


def _checked_members(
    tar: tarfile.TarFile, stage: Path, limits: BundleLimits
) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    total = 0
    for member in tar:
        if len(members) >= limits.max_members:
            raise UnsafeBundle(f"bundle has more than {limits.max_members} members")
        name = _check_member(member, stage, limits)
        if name in members:
            raise UnsafeBundle(f"bundle member {name!r} appears twice")
        total += member.size
        if total > limits.max_total_bytes:
            raise UnsafeBundle(
                f"bundle unpacks to more than {limits.max_total_bytes} bytes (the limit)"
            )
        members[name] = member
    return members


def _check_member(member: tarfile.TarInfo, stage: Path, limits: BundleLimits) -> str:
    """The member's normalised name; UnsafeBundle naming the member and what is wrong."""
    raw = member.name
    parts = PurePosixPath(raw).parts
    if raw.startswith("/") or PurePosixPath(raw).is_absolute():
        raise UnsafeBundle(f"bundle member {raw!r} has an absolute path")
    if ".." in parts:
        raise UnsafeBundle(f"bundle member {raw!r} climbs out with '..'")
    if "\\" in raw or "\0" in raw or not parts:
        raise UnsafeBundle(f"bundle member {raw!r} has a name csext does not accept")
    _check_member_type(member)
    if member.size > limits.max_member_bytes:
        raise UnsafeBundle(
            f"bundle member {raw!r} is {member.size} bytes, over the "
            f"{limits.max_member_bytes}-byte limit per file"
        )
    try:
        tarfile.data_filter(member, str(stage))
    except tarfile.FilterError as exc:
        raise UnsafeBundle(f"bundle member {raw!r} is refused: {exc}") from exc
    return "/".join(part for part in parts if part != ".")


def _check_member_type(member: tarfile.TarInfo) -> None:
    kinds = (
        (member.issym(), f"is a symbolic link (to {member.linkname!r})"),
        (member.islnk(), f"is a hard link (to {member.linkname!r})"),
        (member.ischr() or member.isblk(), "is a device file"),
        (member.isfifo(), "is a FIFO"),
        (member.issparse(), "is a sparse file"),
    )
    for matched, what in kinds:
        if matched:
            raise UnsafeBundle(
                f"bundle member {member.name!r} {what}; bundles may hold only files and folders"
            )
    if not (member.isreg() or member.isdir()):
        raise UnsafeBundle(f"bundle member {member.name!r} has an unsupported type")


def _read_index(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], limits: BundleLimits
) -> dict[str, Any]:
    member = members.get(BUNDLE_MANIFEST)
    if member is None or not member.isreg():
        raise BundleError(
            f"bundle has no {BUNDLE_MANIFEST} (its list of files and checksums); "
            "make bundles with csext export"
        )
    if member.size > limits.max_index_bytes:
        raise UnsafeBundle(f"{BUNDLE_MANIFEST} is larger than {limits.max_index_bytes} bytes")
    handle = tar.extractfile(member)
    assert handle is not None  # a regular file
    try:
        index = json.loads(handle.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{BUNDLE_MANIFEST} is not valid JSON: {exc}") from exc
    if not isinstance(index, dict) or index.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{BUNDLE_MANIFEST}: format must be {BUNDLE_FORMAT} (got "
            f"{index.get('format') if isinstance(index, dict) else index!r:.40}); "
            "a newer csext may have made it"
        )
    return index


def _index_name(index: dict[str, Any]) -> str:
    name = index.get("name")
    if not isinstance(name, str) or not is_valid_name(name):
        raise UnsafeBundle(
            f"{BUNDLE_MANIFEST}: name {name!r} is not a plain extension name (lowercase letters, "
            "digits, '-', '_'); refusing it"
        )
    return name


def _index_files(index: dict[str, Any]) -> dict[str, dict[str, Any]]:
    files = index.get("files")
    if not isinstance(files, list):
        raise BundleError(f"{BUNDLE_MANIFEST}: files must be a list of {{path, sha256, mode}}")
    expected: dict[str, dict[str, Any]] = {}
    for entry in files:
        path = entry.get("path") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(path, str) or not isinstance(digest, str) or len(digest) != 64:
            raise BundleError(f"{BUNDLE_MANIFEST}: file entry {entry!r:.80} needs path and sha256")
        if path in expected:
            raise UnsafeBundle(f"{BUNDLE_MANIFEST}: {path!r} is listed twice")
        expected[path] = entry
    return expected


def _check_layout(
    members: dict[str, tarfile.TarInfo], name: str, expected: dict[str, dict[str, Any]]
) -> None:
    """Everything sits under `<name>/`, and the files are exactly those listed."""
    present: set[str] = set()
    for member_name, member in members.items():
        if member_name in (BUNDLE_MANIFEST, name):
            continue
        if not member_name.startswith(f"{name}/"):
            raise UnsafeBundle(
                f"bundle member {member_name!r} is outside the extension folder {name + '/'!r}"
            )
        if member.isreg():
            present.add(member_name.removeprefix(f"{name}/"))
    missing = sorted(set(expected) - present)
    extra = sorted(present - set(expected))
    if missing:
        raise UnsafeBundle(f"bundle is missing files listed in {BUNDLE_MANIFEST}: {missing}")
    if extra:
        raise UnsafeBundle(f"bundle holds files not listed in {BUNDLE_MANIFEST}: {extra}")


def _extract_file(
    tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, entry: dict[str, Any]
) -> None:
    """Stream one member to `target`, hashing as it goes; the checksum must match."""
    source = tar.extractfile(member)
    assert source is not None  # checked to be a regular file
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = _copy_new_file(source, target, member.size)
    if digest != entry["sha256"]:
        raise UnsafeBundle(
            f"checksum mismatch for {member.name!r}: {BUNDLE_MANIFEST} says "
            f"{entry['sha256'][:16]}..., the file is {digest[:16]}...; the bundle was altered "
            "or damaged"
        )
    mode = entry.get("mode", member.mode)
    os.chmod(target, normal_mode(mode if isinstance(mode, int) else member.mode))


def _copy_new_file(source: IO[bytes], target: Path, limit: int) -> str:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    digest = hashlib.sha256()
    written = 0
    with os.fdopen(os.open(target, flags, 0o600), "wb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                raise UnsafeBundle(f"{target.name}: more data than its header declares")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()
