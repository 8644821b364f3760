"""The layout: each top-level folder is one part, and imports flow one way between parts.

cli → worker / store / bridges / web → handlers → schemas, read from the source itself (every
`import csext.X` and `from csext.X import`, including imports inside functions). `bridges/` runs
on CloudStack's side and imports no worker, store or web; `sdk/` is copied next to extensions and
imports nothing of csext; nothing imports `cli/`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "handlers": {"schemas"},
    "store": {"schemas", "handlers"},
    "worker": {"schemas", "handlers", "store"},
    "bridges": {"schemas", "handlers"},
    "web": {"schemas", "handlers", "store", "worker"},
    "sdk": set(),
    "cli": {"schemas", "handlers", "store", "worker", "bridges", "web"},
}
"""What each part may import besides itself."""


def _imported_parts(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "csext" and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return found


def _sources(part: str) -> list[Path]:
    return sorted(
        p for p in (ROOT / part).rglob("*.py") if "templates" not in p.relative_to(ROOT).parts
    )


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_imports_flow_one_way(part: str) -> None:
    if not (ROOT / part).is_dir():
        pytest.skip(f"{part}/ does not exist yet")
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports csext.{target}"
        for path in _sources(part)
        for target, line in sorted(_imported_parts(path))
        if target != part and target not in ALLOWED[part]
    ]
    assert not wrong, f"{part}/ may import only {sorted(ALLOWED[part])}:\n" + "\n".join(wrong)


def test_no_relative_import_climbs_out_of_its_part() -> None:
    """`from ..x import` across a part boundary would hide an edge from the check above."""
    wrong = []
    for part in ALLOWED:
        for path in _sources(part) if (ROOT / part).is_dir() else []:
            depth = len(path.relative_to(ROOT / part).parts) - 1
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level > depth + 1:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not wrong, "relative imports leaving their part:\n" + "\n".join(wrong)


def test_every_part_is_packaged() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    for part in ALLOWED:
        if (ROOT / part).is_dir():
            assert f'"csext.{part}" = "{part}"' in pyproject, f"{part}/ missing from package-dir"


def test_no_module_matches_pytests_test_file_pattern_outside_tests() -> None:
    stray = [
        str(p.relative_to(ROOT))
        for part in ALLOWED
        if (ROOT / part).is_dir()
        for p in (ROOT / part).rglob("*.py")
        if p.name.startswith("test_") or p.stem.endswith("_test")
    ]
    assert not stray, f"pytest would collect these as tests: {stray}"
