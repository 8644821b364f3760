"""File-level helpers for the store: atomic writes, manifest edits, entry-point checks.

Manifests are written by people, with comments and their own layout, so csext changes a spec
field by rewriting only its line when it safely can; the result is re-read and compared with
the intended data, and if the targeted edit did not produce exactly that, the whole manifest is
re-dumped instead (correctness over formatting).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

_SPEC_LINE = re.compile(r"^spec:\s*(#.*)?$")
SYNTAX_CHECK_TIMEOUT = 30.0


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` in one rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def update_spec(manifest_path: Path, changes: dict[str, Any]) -> None:
    """Set `spec.<key>` for each change, keeping the rest of the file as written."""
    text = manifest_path.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    expected = copy.deepcopy(raw)
    expected["spec"].update(changes)
    new_text: str | None = text
    for key, value in changes.items():
        new_text = _replace_spec_scalar(new_text, key, value) if new_text else None
    if new_text is None or _safe_load(new_text) != expected:
        new_text = yaml.safe_dump(expected, sort_keys=False, default_flow_style=False)
    atomic_write(manifest_path, new_text.encode("utf-8"))


def _safe_load(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _replace_spec_scalar(text: str, key: str, value: Any) -> str | None:
    """Rewrite `  key: old` under `spec:` (or add it); None when the layout is not simple."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _SPEC_LINE.match(line)), None)
    if start is None:
        return None
    indent = _child_indent(lines, start)
    rendered = json.dumps(value)
    key_re = re.compile(rf"^{re.escape(indent)}{re.escape(key)}:(?P<value>[^#\n]*)(?P<rest>.*)$")
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if line.strip() and not line.startswith(indent) and not line.lstrip().startswith("#"):
            break
        match = key_re.match(line.rstrip("\n"))
        if match:
            if not match.group("value").strip():
                return None  # a block value: leave it to the full re-dump
            comment = f" {match.group('rest').strip()}" if match.group("rest").strip() else ""
            lines[i] = f"{indent}{key}: {rendered}{comment}\n"
            return "".join(lines)
    lines.insert(start + 1, f"{indent}{key}: {rendered}\n")
    return "".join(lines)


def _child_indent(lines: list[str], start: int) -> str:
    for line in lines[start + 1 :]:
        if line.strip() and not line.lstrip().startswith("#"):
            width = len(line) - len(line.lstrip(" "))
            return " " * width if width else "  "
    return "  "


def content_problems(data: bytes, name: str) -> list[str]:
    """Why `data` could not work as an entry point named `name`: no #!, a syntax error."""
    if data.startswith(b"\x7fELF"):
        return []
    if not data.startswith(b"#!"):
        return [
            f"{name}: no '#!' line, so it cannot be executed; start it with e.g. "
            "'#!/usr/bin/env bash' or '#!/usr/bin/env python3'"
        ]
    shebang = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    if "python" in shebang:
        return _python_problems(data, name)
    if re.search(r"\b(bash|sh)\b", shebang):
        return _shell_problems(data, name, "bash" if "bash" in shebang else "sh")
    return []


def _python_problems(data: bytes, name: str) -> list[str]:
    try:
        compile(data, name, "exec")
    except SyntaxError as exc:
        return [f"{name}:{exc.lineno}: Python syntax error: {exc.msg}"]
    except ValueError as exc:
        return [f"{name}: cannot be compiled: {exc}"]
    return []


def _shell_problems(data: bytes, name: str, shell: str) -> list[str]:
    program = shutil.which(shell)
    if program is None:
        return []
    done = subprocess.run(
        [program, "-n"],
        input=data,
        capture_output=True,
        timeout=SYNTAX_CHECK_TIMEOUT,
        check=False,
    )
    if done.returncode == 0:
        return []
    detail = done.stderr.decode("utf-8", "replace").strip().replace(f"{program}: ", "")
    return [f"{name}: {shell} syntax error: {detail}"]
