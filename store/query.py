"""The store's read operations: list, show, validate, history, diff. Nothing here writes.

Like ops.py, each returns plain data (dataclasses with `to_dict`) for the CLI and the API.
A registry edited by hand is read as it is: problems are reported, never assumed away.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from csext.schemas.errors import ConfigError, CsextError, ManifestError
from csext.schemas.manifest import Manifest

from . import git, secrets
from .ops import Store, check_name, extension_dir
from .registry import MANIFEST_FILE, load_extension, load_registry
from .secrets import Secrets
from .testcases import load_cases


@dataclass(frozen=True, slots=True)
class Summary:
    name: str
    status: str
    """enabled, disabled or broken."""
    hook: str
    version: str
    runtime: str
    description: str
    tags: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    compatibility: str = ""
    """The manifest's ranges, e.g. `csext >=0.1,<1.0; CloudStack >=4.20` ("" = any)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _secrets_or_warning(store: Store) -> tuple[Secrets, list[str]]:
    try:
        return store.load_secrets(), []
    except ConfigError as exc:
        return {}, [str(exc)]


def _raw_manifest(path: Path) -> dict[str, Any]:
    """Best-effort reading of a manifest that may not validate (for display only)."""
    with contextlib.suppress(OSError, UnicodeDecodeError, yaml.YAMLError):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(raw, dict):
            return raw
    return {}


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


def list_extensions(
    store: Store, hook: str | None = None, enabled: bool | None = None
) -> tuple[list[Summary], list[str]]:
    """Every extension (broken ones too) and warnings (e.g. an unreadable secrets file)."""
    values, warnings = _secrets_or_warning(store)
    view = load_registry(store.root, values)
    rows = [
        Summary(
            ext.name,
            "enabled" if ext.enabled else "disabled",
            ext.hook.value,
            ext.version,
            ext.spec.runtime.value,
            ext.manifest.metadata.description,
            list(ext.manifest.metadata.tags),
            compatibility=_compatibility(ext.manifest),
        )
        for ext in view.extensions.values()
    ]
    rows += [_broken_summary(b.name, b.manifest_path, b.problems) for b in view.broken.values()]
    rows.sort(key=lambda row: row.name)
    if hook is not None:
        rows = [row for row in rows if row.hook == hook]
    if enabled is not None:
        rows = [row for row in rows if (row.status == "enabled") == enabled]
    return rows, warnings


def _compatibility(manifest: Manifest) -> str:
    compat = manifest.spec.compatibility
    if compat is None:
        return ""
    ranges = [("csext", compat.csext), ("CloudStack", compat.cloudstack)]
    return "; ".join(f"{what} {text}" for what, text in ranges if text)


def _broken_summary(name: str, manifest_path: Path, problems: list[str]) -> Summary:
    raw = _raw_manifest(manifest_path)
    meta, spec = _section(raw, "metadata"), _section(raw, "spec")
    return Summary(
        name,
        "broken",
        str(spec.get("hook") or spec.get("type") or "?"),
        str(meta.get("version", "?")),
        str(spec.get("runtime", "exec")),
        str(meta.get("description", "")),
        [],
        list(problems),
    )


def show(store: Store, name: str) -> dict[str, Any]:
    """Everything about one extension: manifest, README, status, problems, history, runs."""
    folder = extension_dir(store, name)
    rows, warnings = list_extensions(store)
    summary = next(row for row in rows if row.name == name)
    readme = folder / "README.md"
    return {
        "name": name,
        "path": str(folder),
        "status": summary.status,
        "problems": summary.problems,
        "manifest": _raw_manifest(folder / MANIFEST_FILE),
        "entrypoint": _entrypoint_text(folder),
        "secrets": _secret_status(store, folder),
        "readme": readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else "",
        "history": [asdict(c) for c in history(store, name, limit=5)],
        "last_runs": [],  # filled by the CLI from the csext.runs.log stream (no broker I/O here)
        "warnings": warnings,
    }


def _entrypoint_text(folder: Path) -> str:
    spec = _section(_raw_manifest(folder / MANIFEST_FILE), "spec")
    entry = spec.get("entrypoint")
    return str(entry.get("path") if isinstance(entry, dict) else entry)


def _secret_status(store: Store, folder: Path) -> dict[str, Any]:
    """Names declared in the manifest and names set in the secrets file. Never values."""
    declared = _section(_raw_manifest(folder / MANIFEST_FILE), "spec").get("secrets") or []
    try:
        path = store.secrets_path
        have = secrets.secret_names(path, folder.name)
    except ConfigError as exc:
        return {"declared": declared, "set": [], "file": None, "error": str(exc)}
    return {"declared": declared, "set": have, "file": str(path), "error": None}


@dataclass(frozen=True, slots=True)
class Report:
    """validate's verdict on one extension folder."""

    name: str
    path: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def validate(path: Path, store: Store | None = None) -> list[Report]:
    """Check one extension folder, or every extension in a registry folder.

    Secrets are checked when `store` is given and its secrets file can be read.
    """
    if not path.is_dir():
        raise ConfigError(f"{path} is not a directory: give an extension folder or a registry")
    values: Secrets | None = None
    warnings: list[str] = []
    if store is not None:
        values, warnings = _secrets_or_warning(store)
    if (path / MANIFEST_FILE).is_file():
        return [validate_folder(path, values, warnings)]
    reports = []
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (folder / MANIFEST_FILE).is_file():
            reports.append(validate_folder(folder, values, warnings))
        else:
            reports.append(
                Report(
                    folder.name, str(folder), warnings=[f"{folder}: no {MANIFEST_FILE}, ignored"]
                )
            )
    return reports


def validate_folder(folder: Path, values: Secrets | None, warnings: list[str]) -> Report:
    errors: list[str] = []
    notes = list(warnings)
    manifest_path = folder / MANIFEST_FILE
    try:
        load_extension(folder, values if values is not None else None)
    except ManifestError as exc:
        errors += _with_file(exc, manifest_path)
        if values is None and all("spec.secrets" in p for p in exc.problems):
            notes += [f"{manifest_path}: {p}" for p in exc.problems]
            errors = []
    _, case_problems = load_cases(folder)
    errors += case_problems
    return Report(folder.name, str(folder), errors, notes)


def _with_file(exc: ManifestError, manifest_path: Path) -> list[str]:
    prefix = exc.path if exc.path.endswith((".yaml", ".yml")) else str(manifest_path)
    return [f"{prefix}: {problem}" for problem in exc.problems]


def history(store: Store, name: str | None = None, limit: int = 50) -> list[git.Commit]:
    """Commits touching one extension (or the whole registry), newest first."""
    if name is not None:
        check_name(name)
    if not store.root.is_dir():
        raise ConfigError(f"registry {store.root} does not exist")
    return git.log_entries(store.root, name or ".", limit)


def diff(store: Store, name: str, rev: str | None = None, to: str | None = None) -> dict[str, Any]:
    """The extension's changes since `rev` (up to commit `to`, default: the files now), as a
    unified diff.

    Without `rev`: what its last commit changed, plus any uncommitted edits made by hand.
    """
    check_name(name)
    if rev is None:
        commits = git.log_entries(store.root, name, limit=1)
        if not commits:
            raise CsextError(f"{name} has no history in {store.root}")
        rev = _parent_or_empty(store.root, commits[0].sha)
    target = [git.resolve(store.root, to)] if to else []
    args = ["diff", _resolve_base(store.root, rev), *target, "--", name]
    text = git.run_git(args, store.root).stdout
    return {"extension": name, "base": rev, "diff": text, **({"to": to} if to else {})}


def _parent_or_empty(root: Path, sha: str) -> str:
    done = git.run_git(["rev-parse", "--verify", "--quiet", f"{sha}^"], root, check=False)
    if done.returncode == 0:
        return done.stdout.strip()
    return git.run_git(["hash-object", "-t", "tree", "/dev/null"], root).stdout.strip()


def _resolve_base(root: Path, rev: str) -> str:
    done = git.run_git(["cat-file", "-t", rev], root, check=False)
    if done.stdout.strip() == "tree":
        return rev
    return git.resolve(root, rev)
