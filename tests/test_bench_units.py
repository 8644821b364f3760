"""The benchmark report's arithmetic (pure logic, no broker)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# bench/ is a folder of the repository, not part of the installed package (the smoke test runs
# it as `python -m bench` from the root); this module imports its arithmetic directly.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.core import paired_ratio


def test_ratios_pair_each_repeat_with_its_own_floor() -> None:
    """The machine halves its speed in repeat 2; csext catches a quiet moment in repeat 3.
    Paired, two of three repeats say 0.5; the ratio of medians (420 / 600) would say 0.7."""
    floors, ours = [1000.0, 500.0, 600.0], [500.0, 250.0, 420.0]
    assert paired_ratio(ours, floors) == 0.5
    assert paired_ratio([3.0, 1.0, 2.0], [1.0, 1.0, 1.0]) == 2.0
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])
