"""Store building blocks: version ranges, secrets file, git wrapper, manifest edits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from csext.schemas.errors import ConfigError
from csext.schemas.manifest import Spec
from csext.schemas.versions import VersionRange, parse_version, version_in_range
from csext.store import git, secrets
from csext.store.files import content_problems, update_spec


@pytest.mark.parametrize(
    ("spec", "prefetch"),
    [
        ({"concurrency": 8}, 8),
        ({"concurrency": 8, "runtime": "coprocess"}, 16),
        ({"concurrency": 8, "runtime": "coprocess", "prefetch": 8}, 8),
        ({"concurrency": 2, "prefetch": 50}, 50),
    ],
)
def test_effective_prefetch(spec: dict, prefetch: int) -> None:
    assert Spec(hook="event", entrypoint="run", **spec).effective_prefetch == prefetch


@pytest.mark.parametrize(
    ("version", "spec", "expected"),
    [
        ("0.1.0", ">=0.1,<1.0", True),
        ("1.0", ">=0.1,<1.0", False),
        ("4.21", "==4.21.0", True),
        ("4.21.1", "!=4.21.1", False),
        ("4.22.0-SNAPSHOT", ">4.21,<=4.22", True),
        ("0.2.0.dev3", ">=0.2", True),
        ("4.9", "<4.10", True),
    ],
)
def test_version_ranges(version: str, spec: str, expected: bool) -> None:
    assert version_in_range(version, spec) is expected


@pytest.mark.parametrize("spec", ["", "~0.1", ">=a", ">=1,", "1.0", ">= 1.0 <2"])
def test_bad_ranges_are_refused_with_the_syntax(spec: str) -> None:
    with pytest.raises(ValueError, match=r"e.g. '>=0.1,<1.0'|empty version range"):
        VersionRange.parse(spec)


@given(st.lists(st.integers(0, 50), min_size=1, max_size=4), st.integers(0, 3))
def test_trailing_zeros_do_not_matter(numbers: list[int], zeros: int) -> None:
    text = ".".join(map(str, numbers))
    padded = text + ".0" * zeros
    assert parse_version(text) == parse_version(padded)
    assert version_in_range(padded, f"=={text}")


def test_secrets_round_trip_and_modes(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "secrets.yaml"
    secrets.set_secret(path, "hello", "API_TOKEN", "v1")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert secrets.load_secrets(path) == {"hello": {"API_TOKEN": "v1"}}
    assert secrets.secret_names(path, "hello") == ["API_TOKEN"]
    path.chmod(0o640)
    with pytest.raises(ConfigError, match=r"mode 0640.*chmod 600"):
        secrets.load_secrets(path)
    path.chmod(0o600)
    assert secrets.unset_secret(path, "hello", "API_TOKEN")
    assert secrets.load_secrets(path) == {}
    with pytest.raises(ConfigError, match="not a valid secret name"):
        secrets.set_secret(path, "hello", "lower", "v")


def test_secrets_symlink_and_registry_location_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.yaml"
    real.write_text("{}")
    real.chmod(0o600)
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="not a regular file"):
        secrets.load_secrets(link)
    registry = tmp_path / "reg"
    registry.mkdir()
    with pytest.raises(ConfigError, match="inside the registry"):
        secrets.secrets_path(registry / "secrets.yaml", registry)
    assert secrets.load_secrets(tmp_path / "absent.yaml") == {}


def test_secrets_file_owned_by_another_user_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    path = tmp_path / "s.yaml"
    path.write_text("{}")
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        secrets.load_secrets(path)


def test_commit_only_names_given_paths(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    git.ensure_repo(root)
    (root / "a").mkdir()
    (root / "a" / "f").write_text("1")
    (root / "b").mkdir()
    (root / "b" / "f").write_text("1")
    git.run_git(["add", "b"], root)  # someone else's staged change
    sha = git.commit_paths(root, ["a"], "add a", git.Author.parse("Ann <ann@x.org>"))
    assert sha is not None and git.head(root) == sha
    files = git.run_git(["show", "--name-only", "--format=", sha], root).stdout.split()
    assert files == ["a/f"]
    assert git.commit_paths(root, ["a"], "again") is None
    entry = git.log_entries(root, "a")[0]
    assert (entry.author, entry.email, entry.subject) == ("Ann", "ann@x.org", "add a")


def test_registry_inside_another_work_tree_commits_there(tmp_path: Path) -> None:
    outer = tmp_path / "mono"
    git.ensure_repo(outer)
    registry = outer / "extensions"
    assert git.ensure_repo(registry) == outer.resolve()
    assert not (registry / ".git").exists()


def test_author_parsing() -> None:
    assert (
        str(git.Author.parse("Ada Lovelace <ada@example.org>")) == "Ada Lovelace <ada@example.org>"
    )
    assert git.Author.parse("ada").email == "csext@localhost"
    with pytest.raises(Exception, match="not valid"):
        git.Author.parse("<>")


def test_clone_at_tag_and_commit(tmp_path: Path) -> None:
    src = tmp_path / "src"
    git.ensure_repo(src)
    (src / "f").write_text("1")
    first = git.commit_paths(src, ["f"], "one")
    git.run_git(["tag", "v1"], src)
    (src / "f").write_text("2")
    git.commit_paths(src, ["f"], "two")
    assert git.clone(str(src), tmp_path / "c1", "v1") == first
    assert (tmp_path / "c1" / "f").read_text() == "1"
    assert git.clone(f"file://{src}", tmp_path / "c2", first) == first
    with pytest.raises(git.GitError, match="not a branch, tag or commit"):
        git.clone(str(src), tmp_path / "c3", "nope")


MANIFEST = """# top comment
apiVersion: csext/v1
metadata:
  name: x
spec:
  hook: event
  entrypoint: run.sh   # the script
  enabled: false  # flip me
  events:
    patterns: ["a.#"]
"""


def test_update_spec_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "extension.yaml"
    path.write_text(MANIFEST)
    update_spec(path, {"enabled": True, "entrypoint": "/opt/x"})
    text = path.read_text()
    assert "# top comment" in text and "enabled: true # flip me" in text
    assert yaml.safe_load(text)["spec"]["entrypoint"] == "/opt/x"
    update_spec(path, {"timeout": 5})  # a key that is not there yet
    assert yaml.safe_load(path.read_text())["spec"]["timeout"] == 5


def test_update_spec_falls_back_to_a_full_dump(tmp_path: Path) -> None:
    path = tmp_path / "extension.yaml"
    path.write_text("metadata: {name: x}\nspec: {hook: event, entrypoint: run.sh}\n")
    update_spec(path, {"enabled": False})
    assert yaml.safe_load(path.read_text())["spec"] == {
        "hook": "event",
        "entrypoint": "run.sh",
        "enabled": False,
    }


def test_content_checks() -> None:
    assert content_problems(b"#!/usr/bin/env python3\nprint(1)\n", "x.py") == []
    assert "Python syntax error" in content_problems(b"#!/usr/bin/python3\ndef (:\n", "x.py")[0]
    assert content_problems(b"\x7fELF\x02\x01", "bin") == []
    assert content_problems(b"#!/usr/bin/env ruby\nputs 1\n", "x.rb") == []
