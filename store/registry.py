"""Read a registry directory: `<registry>/<name>/extension.yaml` for every extension.

The registry may be edited by hand, so nothing is assumed: every manifest is validated, and a
broken one disables only its own extension, with problems that name the file and the field.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from csext.schemas.errors import ManifestError, describe_validation_error
from csext.schemas.manifest import HookType, Manifest, Spec

from .compat import compatibility_problems

log = logging.getLogger(__name__)

MANIFEST_FILE = "extension.yaml"


@dataclass(frozen=True, slots=True)
class Extension:
    """A valid extension: its manifest plus where it lives on disk."""

    manifest: Manifest
    directory: Path
    entrypoint: Path
    secret_values: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.manifest.metadata.name

    @property
    def spec(self) -> Spec:
        return self.manifest.spec

    @property
    def hook(self) -> HookType:
        return self.manifest.spec.hook_type

    @property
    def enabled(self) -> bool:
        return self.manifest.spec.enabled

    @property
    def version(self) -> str:
        return self.manifest.metadata.version


@dataclass(frozen=True, slots=True)
class BrokenExtension:
    name: str
    manifest_path: Path
    problems: list[str]

    @property
    def message(self) -> str:
        return f"{self.manifest_path}: " + "; ".join(self.problems)


@dataclass(frozen=True, slots=True)
class RegistryView:
    """One consistent reading of the registry."""

    root: Path
    extensions: dict[str, Extension]
    broken: dict[str, BrokenExtension]

    def enabled(self) -> list[Extension]:
        return [ext for ext in self.extensions.values() if ext.enabled]

    def why_unavailable(self, name: str) -> tuple[str, str]:
        """(kind, message) explaining why `name` cannot be called."""
        if name in self.broken:
            return (
                "invalid-manifest",
                f"extension {name!r} is disabled: {self.broken[name].message}",
            )
        ext = self.extensions.get(name)
        if ext is not None and not ext.enabled:
            return "disabled", f"extension {name!r} is disabled (csext enable {name})"
        return "unknown-extension", f"no extension named {name!r} in the registry"


def parse_manifest(path: Path) -> Manifest:
    """Read and validate one extension.yaml; ManifestError names the field and the fix."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(str(path), [f"cannot read: {exc.strerror}"]) from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ManifestError(str(path), [f"not valid YAML: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise ManifestError(str(path), ["must be a YAML mapping with metadata and spec"])
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(str(path), describe_validation_error(exc)) from exc


def resolve_entrypoint(directory: Path, manifest: Manifest) -> Path:
    """The absolute path of the entry point, checked to be an executable regular file."""
    path_text = manifest.spec.entrypoint_path
    path = Path(path_text)
    manifest_path = str(directory / MANIFEST_FILE)
    if not path.is_absolute():
        path = (directory / path).resolve()
        if not path.is_relative_to(directory.resolve()):
            raise ManifestError(
                manifest_path,
                [
                    f"spec.entrypoint: {path_text!r} points outside the extension folder; "
                    "use a path inside it or an absolute path"
                ],
            )
    if not path.is_file():
        raise ManifestError(
            manifest_path, [f"spec.entrypoint: {path} does not exist or is not a regular file"]
        )
    if not os.access(path, os.X_OK):
        raise ManifestError(
            manifest_path, [f"spec.entrypoint: {path} is not executable (chmod +x {path})"]
        )
    return path


def load_extension(directory: Path, secrets: dict[str, dict[str, str]] | None = None) -> Extension:
    manifest_path = directory / MANIFEST_FILE
    manifest = parse_manifest(manifest_path)
    if manifest.metadata.name != directory.name:
        raise ManifestError(
            str(manifest_path),
            [
                f"metadata.name: {manifest.metadata.name!r} must equal the folder name "
                f"{directory.name!r}"
            ],
        )
    entrypoint = resolve_entrypoint(directory, manifest)
    if manifest.spec.enabled:
        problems = compatibility_problems(manifest)
        if problems:
            raise ManifestError(str(manifest_path), problems)
    values = _secret_values(manifest, (secrets or {}).get(manifest.metadata.name, {}))
    return Extension(manifest, directory.resolve(), entrypoint, values)


def _secret_values(manifest: Manifest, available: dict[str, str]) -> dict[str, str]:
    missing = [name for name in manifest.spec.secrets if name not in available]
    if missing:
        raise ManifestError(
            manifest.metadata.name,
            [
                f"spec.secrets: no value for {', '.join(missing)}; add them to the secrets file "
                f"under {manifest.metadata.name}:"
            ],
        )
    return {name: available[name] for name in manifest.spec.secrets}


def load_registry(root: Path, secrets: dict[str, dict[str, str]] | None = None) -> RegistryView:
    """Every extension folder under `root`; broken ones are reported, never fatal."""
    extensions: dict[str, Extension] = {}
    broken: dict[str, BrokenExtension] = {}
    if not root.is_dir():
        log.error("registry %s is not a directory; no extensions loaded", root)
        return RegistryView(root, extensions, broken)
    for directory in sorted(root.iterdir()):
        if directory.name.startswith(".") or not (directory / MANIFEST_FILE).is_file():
            continue
        try:
            ext = load_extension(directory, secrets)
        except ManifestError as exc:
            broken[directory.name] = BrokenExtension(
                directory.name, directory / MANIFEST_FILE, exc.problems
            )
            log.error("extension %s disabled: %s", directory.name, exc)
            continue
        extensions[ext.name] = ext
    return RegistryView(root, extensions, broken)
