"""Is an extension compatible with this csext (and, when known, this CloudStack)?

The ranges live in `spec.compatibility` (syntax in schemas/versions.py). csext's own version
is the installed distribution's; CloudStack's is not known to csext, so its range is only
checked when a caller passes a version (and always checked for syntax by the manifest model).
"""

from __future__ import annotations

import importlib.metadata

from csext.schemas.manifest import Manifest
from csext.schemas.versions import VersionRange

UNKNOWN_VERSION = "0"


def csext_version() -> str:
    """The installed csext version (`0` when running from a tree that is not installed)."""
    try:
        return importlib.metadata.version("csext")
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN_VERSION


def compatibility_problems(
    manifest: Manifest, *, csext: str | None = None, cloudstack: str | None = None
) -> list[str]:
    """Why `manifest` cannot run here, one line each; empty when it can."""
    compat = manifest.spec.compatibility
    if compat is None:
        return []
    problems = []
    current = csext or csext_version()
    if compat.csext and not VersionRange.parse(compat.csext).contains(current):
        problems.append(
            f"spec.compatibility.csext: this extension needs csext {compat.csext}, "
            f"this is csext {current}; upgrade csext or install a version of the extension "
            "made for this csext"
        )
    if (
        cloudstack
        and compat.cloudstack
        and not VersionRange.parse(compat.cloudstack).contains(cloudstack)
    ):
        problems.append(
            f"spec.compatibility.cloudstack: this extension needs CloudStack {compat.cloudstack}, "
            f"not {cloudstack}"
        )
    return problems
