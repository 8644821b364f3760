"""The contract corpus: one fixture file per message CloudStack sends or output it parses.

A fixture is a text file:

    # upstream: <repository> <path> @<commit> (<what in that file>)
    # what: <one line>
    # <key>: <value>            kind-specific, see README.md
    --- body
    <the exact bytes>
    --- expect-stdout           (optional further sections)
    <the exact bytes>

A section's content is every line after its marker up to the next marker, newlines included;
`# newline: no` drops the final newline of the body (an output without one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass(frozen=True)
class Fixture:
    name: str
    kind: str
    """The folder: events, orchestrator, network, ipmitool."""
    header: dict[str, str]
    sections: dict[str, bytes] = field(default_factory=dict)

    @property
    def body(self) -> bytes:
        return self.sections.get("body", b"")

    def get(self, key: str, default: str = "") -> str:
        return self.header.get(key, default)

    def __str__(self) -> str:  # the pytest id
        return f"{self.kind}/{self.name}"


def parse(path: Path) -> Fixture:
    header: dict[str, str] = {}
    sections: dict[str, bytearray] = {}
    current: bytearray | None = None
    for line in path.read_bytes().splitlines(keepends=True):
        if line.startswith(b"--- "):
            current = sections.setdefault(line[4:].decode().strip(), bytearray())
        elif current is not None:
            current += line
        elif line.startswith(b"# ") and b":" in line:
            key, _, value = line[2:].decode().partition(":")
            header[key.strip()] = value.strip()
    if "upstream" not in header:
        raise ValueError(f"{path}: every fixture names its upstream source (# upstream: ...)")
    body = sections.get("body", bytearray())
    if header.get("newline") == "no" and body.endswith(b"\n"):
        del body[-1:]
    return Fixture(
        name=path.stem,
        kind=path.parent.name,
        header=header,
        sections={name: bytes(content) for name, content in sections.items()},
    )


def load(kind: str) -> list[Fixture]:
    return [parse(path) for path in sorted((FIXTURES / kind).glob("*.fixture"))]
