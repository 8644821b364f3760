"""Discovery: index files that any Git repository can publish, and search across them.

An index is `csext-index.yaml` at the root of a repository (or any file)::

    apiVersion: csext/v1
    kind: ExtensionIndex
    extensions:
      - name: vm-audit
        description: Log every VM state change
        hook: event
        version: 1.2.0
        tags: [audit]
        repo: https://github.com/example/csext-extensions.git
        path: extensions/vm-audit      # folder in the repo ('' or absent: the root)
        ref: v1.2.0                    # tag to install (absent: the default branch)

`build_index` writes one from a folder of extensions. The indexes an operator follows are a
per-user setting, like `helm repo add`: the list lives in `$XDG_CONFIG_HOME/csext/indexes.yaml`
and fetched copies in `$XDG_CACHE_HOME/csext/indexes/`. Neither belongs in the registry's Git
tree: the registry is what workers run, and a fleet following it has no use for someone's
browsing sources (nor should `csext search` create registry commits).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from csext.schemas.errors import CsextError, ManifestError, describe_validation_error
from csext.schemas.manifest import NAME_PATTERN

from . import git
from .bundle import BundleError, check_extension
from .install import SCP_LIKE, recorded_url, redact_url, safe_git
from .registry import MANIFEST_FILE

INDEX_FILE = "csext-index.yaml"
INDEX_API_VERSION = "csext/v1"
INDEX_KIND = "ExtensionIndex"
MAX_INDEX_BYTES = 5 * 1024 * 1024
_SOURCE_NAME_RE = re.compile(r"[^a-z0-9_-]+")


class IndexError_(CsextError):
    """An index that cannot be built, added, fetched or read."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class IndexEntry(_Model):
    """One extension an index offers (unknown keys are ignored for newer index writers)."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    hook: str
    version: str = "0.0.0"
    tags: list[str] = []
    repo: str | None = None
    path: str | None = None
    ref: str | None = None

    def install_command(self) -> str | None:
        """The `csext install` line that installs this entry, or None without a repo."""
        if not self.repo:
            return None
        target = f"{self.repo}@{self.ref}" if self.ref else self.repo
        words = ["csext", "install", shlex.quote(target)]
        if self.path and self.path.strip("/") not in ("", "."):
            words += ["--subdir", shlex.quote(self.path)]
        return " ".join(words)


class ExtensionIndex(_Model):
    api_version: str = INDEX_API_VERSION
    kind: str = INDEX_KIND
    generated: str | None = None
    extensions: list[IndexEntry] = []

    def to_yaml(self) -> str:
        data = self.model_dump(by_alias=True, exclude_none=True)
        data["extensions"] = [
            {k: v for k, v in e.items() if v not in (None, [], "")} for e in data["extensions"]
        ]
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def parse_index(text: str, origin: str) -> ExtensionIndex:
    """Validate index text; IndexError_ naming `origin` and the field otherwise."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise IndexError_(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("kind", INDEX_KIND) != INDEX_KIND:
        raise IndexError_(f"{origin}: not a csext index (expected kind: {INDEX_KIND})")
    if raw.get("apiVersion") != INDEX_API_VERSION:
        raise IndexError_(f"{origin}: apiVersion must be {INDEX_API_VERSION}")
    try:
        return ExtensionIndex.model_validate(raw)
    except ValidationError as exc:
        raise IndexError_(f"{origin}: " + "; ".join(describe_validation_error(exc))) from exc


# --- build ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuildResult:
    index: ExtensionIndex
    output: Path
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "extensions": [e.model_dump(exclude_none=True) for e in self.index.extensions],
            "problems": self.problems,
        }


def build_index(
    directory: Path,
    output: Path | None = None,
    *,
    repo: str | None = None,
    ref: str | None = None,
) -> BuildResult:
    """Index every valid extension under `directory`; broken ones are listed in `problems`.

    `repo` defaults to the folder's Git remote `origin` (or the repository's path), and each
    entry's `path` is relative to the repository's top, so `csext install` finds it.
    """
    if not directory.is_dir():
        raise IndexError_(f"{directory} is not a folder of extensions")
    top = git.work_tree(directory)
    base = (top or directory).resolve()
    repo = repo or _default_repo(top)
    problems = [] if repo else [f"{directory} is not in a Git repository: pass --repo URL"]
    entries = []
    for folder in _extension_folders(directory):
        try:
            manifest = check_extension(folder)
        except (ManifestError, BundleError) as exc:
            problems.append(f"skipped {folder}: {exc}")
            continue
        meta = manifest.metadata
        rel = folder.resolve().relative_to(base).as_posix()
        entries.append(
            IndexEntry(
                name=meta.name, description=meta.description, hook=manifest.spec.hook_type.value,
                version=meta.version, tags=list(meta.tags), repo=repo,
                path=None if rel == "." else rel, ref=ref,
            )
        )  # fmt: skip
    generated = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    index = ExtensionIndex(generated=generated, extensions=sorted(entries, key=lambda e: e.name))
    target = output or directory / INDEX_FILE
    _atomic_write(target, index.to_yaml())
    return BuildResult(index, target, problems)


def _default_repo(top: Path | None) -> str | None:
    if top is None:
        return None
    done = git.run_git(["remote", "get-url", "origin"], top, check=False)
    url = done.stdout.strip()
    return recorded_url(url) if done.returncode == 0 and url else str(top.resolve())


def _extension_folders(directory: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        if MANIFEST_FILE in filenames:
            found.append(Path(dirpath))
            dirnames[:] = []
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def _atomic_write(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


# --- sources: the indexes one follows -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexHome:
    """Where the list of followed indexes and their cached copies live."""

    config_file: Path
    cache_dir: Path

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> IndexHome:
        """XDG base directories (~/.config, ~/.cache by default)."""
        home = Path(environ.get("HOME", "~")).expanduser()
        config = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
        cache = Path(environ.get("XDG_CACHE_HOME") or home / ".cache")
        return cls(config / "csext" / "indexes.yaml", cache / "csext" / "indexes")

    def cache_file(self, name: str) -> Path:
        return self.cache_dir / f"{name}.yaml"


@dataclass(frozen=True, slots=True)
class IndexSource:
    name: str
    url: str
    """As added (a credential in it stays in the 0600 config file; it is never printed)."""
    kind: str
    """git, file or dir."""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "url": redact_url(self.url), "kind": self.kind}


def load_sources(home: IndexHome) -> list[IndexSource]:
    if not home.config_file.is_file():
        return []
    raw = yaml.safe_load(home.config_file.read_text(encoding="utf-8")) or {}
    items = raw.get("indexes", []) if isinstance(raw, dict) else []
    if not isinstance(items, list):
        raise IndexError_(f"{home.config_file}: indexes must be a list of {{name, url, kind}}")
    try:
        return [IndexSource(str(i["name"]), str(i["url"]), str(i["kind"])) for i in items]
    except (KeyError, TypeError) as exc:
        raise IndexError_(f"{home.config_file}: each index needs name, url and kind") from exc


def _save_sources(home: IndexHome, sources: list[IndexSource]) -> None:
    data = {"indexes": [{"name": s.name, "url": s.url, "kind": s.kind} for s in sources]}
    _atomic_write(home.config_file, yaml.safe_dump(data, sort_keys=False))
    os.chmod(home.config_file, 0o600)


def classify(url: str) -> tuple[str, str]:
    """(kind, location): a local index file, a local folder holding one, or a Git repository.

    A plain folder path is read as it is on disk (handy while writing an index); a file://
    URL to a folder is cloned like any Git URL (the committed index of the default branch).
    """
    if "://" in url and not url.startswith("file://"):
        return "git", url
    if "://" not in url and SCP_LIKE.match(url):
        return "git", url
    is_url = url.startswith("file://")
    path = Path(urlsplit(url).path if is_url else url).expanduser().resolve()
    if path.is_file():
        return "file", str(path)
    if path.is_dir() and is_url:
        return "git", url
    if (path / INDEX_FILE).is_file():
        return "dir", str(path)
    if path.is_dir():
        return "git", str(path)
    raise IndexError_(f"{url}: no such file or folder (give an index file, a folder or a Git URL)")


def add_index(home: IndexHome, url: str, name: str | None = None) -> tuple[IndexSource, int]:
    """Follow a new index: fetched once to check it, then saved; returns it and its size."""
    kind, location = classify(url)
    sources = load_sources(home)
    name = name or _source_name(location, {s.name for s in sources})
    if not re.fullmatch(NAME_PATTERN, name):
        raise IndexError_(f"index name {name!r} is not valid: use lowercase letters, digits, -, _")
    if any(s.name == name for s in sources):
        raise IndexError_(f"an index named {name!r} is already added (csext index list)")
    source = IndexSource(name, location, kind)
    index = refresh_source(home, source)
    _save_sources(home, [*sources, source])
    return source, len(index.extensions)


def _source_name(location: str, taken: set[str]) -> str:
    stem = location.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    for suffix in (".git", ".yaml", ".yml"):
        stem = stem.removesuffix(suffix)
    if stem == INDEX_FILE.removesuffix(".yaml"):
        stem = location.rstrip("/").rsplit("/", 2)[-2]
    base = _SOURCE_NAME_RE.sub("-", stem.lower()).strip("-_") or "index"
    name, n = base[:50], 2
    while name in taken:
        name, n = f"{base[:50]}-{n}", n + 1
    return name


def remove_index(home: IndexHome, name: str) -> IndexSource:
    sources = load_sources(home)
    match = [s for s in sources if s.name == name]
    if not match:
        raise IndexError_(f"no index named {name!r} (csext index list shows them)")
    _save_sources(home, [s for s in sources if s.name != name])
    with contextlib.suppress(FileNotFoundError):
        home.cache_file(name).unlink()
    return match[0]


def refresh_source(home: IndexHome, source: IndexSource) -> ExtensionIndex:
    """Fetch one index, validate it and replace its cached copy."""
    text = _read_source(source)
    index = parse_index(text, f"index {source.name} ({redact_url(source.url)})")
    _atomic_write(home.cache_file(source.name), text)
    return index


def _read_source(source: IndexSource) -> str:
    if source.kind == "git":
        with tempfile.TemporaryDirectory(prefix="csext-index-") as temp:
            checkout = Path(temp) / "repo"
            clone = ["clone", "--quiet", "--no-local", "--depth", "1", "--no-recurse-submodules"]
            safe_git([*clone, "--", source.url, str(checkout)], Path(temp), source.url)
            return _read_file(checkout / INDEX_FILE, source)
    path = Path(source.url)
    return _read_file(path / INDEX_FILE if source.kind == "dir" else path, source)


def _read_file(path: Path, source: IndexSource) -> str:
    if not path.is_file() or path.is_symlink():
        raise IndexError_(
            f"index {source.name}: {INDEX_FILE} not found in {redact_url(source.url)} "
            "(publish one with csext index build)"
        )
    if path.stat().st_size > MAX_INDEX_BYTES:
        raise IndexError_(f"index {source.name}: larger than {MAX_INDEX_BYTES} bytes")
    return path.read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class SourceStatus:
    source: IndexSource
    extensions: int | None
    fetched: str | None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.source.as_dict(),
            "extensions": self.extensions,
            "fetched": self.fetched,
            "error": self.error,
        }


def update_indexes(home: IndexHome) -> list[SourceStatus]:
    """Refresh every followed index; one failing does not stop the others."""
    results = []
    for source in load_sources(home):
        try:
            index = refresh_source(home, source)
        except CsextError as exc:
            results.append(SourceStatus(source, None, None, str(exc)))
            continue
        results.append(SourceStatus(source, len(index.extensions), _fetched(home, source)))
    return results


def list_indexes(home: IndexHome) -> list[SourceStatus]:
    """Every followed index with its cached copy's size and age (no network)."""
    results = []
    for source in load_sources(home):
        try:
            index = _cached(home, source)
        except CsextError as exc:
            results.append(SourceStatus(source, None, None, str(exc)))
            continue
        count = None if index is None else len(index.extensions)
        results.append(SourceStatus(source, count, _fetched(home, source)))
    return results


def _cached(home: IndexHome, source: IndexSource) -> ExtensionIndex | None:
    path = home.cache_file(source.name)
    if not path.is_file():
        return None
    return parse_index(path.read_text(encoding="utf-8"), f"cached index {source.name} ({path})")


def _fetched(home: IndexHome, source: IndexSource) -> str | None:
    path = home.cache_file(source.name)
    if not path.is_file():
        return None
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- search ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchHit:
    index: str
    entry: IndexEntry

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            **self.entry.model_dump(exclude_none=True),
            "install": self.entry.install_command(),
        }


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[SearchHit]
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"results": [h.as_dict() for h in self.hits], "problems": self.problems}


def search(home: IndexHome, term: str, hook: str | None = None) -> SearchResult:
    """Entries of every followed index whose name, description or tags contain `term`.

    Uses the cached copies; an index never fetched is fetched once. Exact name matches first.
    """
    sources = load_sources(home)
    if not sources:
        raise IndexError_("no index added yet: csext index add URL (a Git repo or an index file)")
    hits: list[SearchHit] = []
    problems: list[str] = []
    for source in sources:
        try:
            index = _cached(home, source) or refresh_source(home, source)
        except CsextError as exc:
            problems.append(f"{exc} (csext index update retries)")
            continue
        hits += [SearchHit(source.name, e) for e in index.extensions if _matches(e, term, hook)]
    needle = term.lower()
    hits.sort(key=lambda h: (h.entry.name != needle, h.entry.name, h.index))
    return SearchResult(hits, problems)


def _matches(entry: IndexEntry, term: str, hook: str | None) -> bool:
    if hook and entry.hook != hook:
        return False
    needle = term.lower()
    haystack = [entry.name, entry.description, *entry.tags]
    return any(needle in text.lower() for text in haystack)
