"""Version ranges for `spec.compatibility` (`>=0.1,<1.0`), hand-written: no dependency.

A range is a comma-separated list of clauses, each an operator (`>=`, `<=`, `>`, `<`, `==`,
`!=`) followed by a dotted numeric version (`4`, `4.21`, `4.21.0.1`); a version satisfies the
range when it satisfies every clause. Versions compare number by number, missing trailing
numbers count as 0 (so `4.21 == 4.21.0`). A version being checked (not one in a range) may carry
a suffix such as `0.2.0.dev3` or `4.22.0-SNAPSHOT`: only its leading numbers are compared.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

_OPERATORS: dict[str, Callable[[tuple[int, ...], tuple[int, ...]], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_CLAUSE_RE = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)\s*$")
_LEADING_RE = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")

RANGE_HELP = (
    "use comma-separated clauses of >=, <=, >, <, == or != and a dotted numeric version, "
    "e.g. '>=0.1,<1.0'"
)


def parse_version(text: str) -> tuple[int, ...]:
    """The leading dotted numbers of `text`, trailing zeros dropped; ValueError if none."""
    match = _LEADING_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a version: it must start with numbers like 4.21.0")
    numbers = [int(part) for part in match.group(1).split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


@dataclass(frozen=True, slots=True)
class Clause:
    op: str
    version: tuple[int, ...]

    def matches(self, version: tuple[int, ...]) -> bool:
        return _OPERATORS[self.op](version, self.version)


@dataclass(frozen=True, slots=True)
class VersionRange:
    text: str
    clauses: tuple[Clause, ...]

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        """ValueError naming the bad clause and showing the syntax."""
        if not text.strip():
            raise ValueError(f"empty version range: {RANGE_HELP}")
        clauses = []
        for part in text.split(","):
            match = _CLAUSE_RE.match(part)
            if match is None:
                raise ValueError(f"{part.strip()!r} is not a version clause: {RANGE_HELP}")
            clauses.append(Clause(match.group(1), parse_version(match.group(2))))
        return cls(text.strip(), tuple(clauses))

    def contains(self, version: str) -> bool:
        parsed = parse_version(version)
        return all(clause.matches(parsed) for clause in self.clauses)

    def __str__(self) -> str:
        return self.text


def version_in_range(version: str, range_text: str) -> bool:
    return VersionRange.parse(range_text).contains(version)
