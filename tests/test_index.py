"""Discovery: build an index from a collection, follow it, search it, install from a hit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from _store_helpers import (
    cli_env,
    commit_all,
    csext,
    git,
    make_registry,
    make_repo,
    write_extension,
)

from csext.store.index import (
    INDEX_FILE,
    IndexError_,
    IndexHome,
    add_index,
    build_index,
    list_indexes,
    remove_index,
    search,
    update_indexes,
)
from csext.store.install import install_extension


@pytest.fixture
def home(tmp_path: Path) -> IndexHome:
    return IndexHome.from_environ(
        {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    )


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    """A published collection: two extensions, one broken folder, an index, tag v1."""
    repo = make_repo(tmp_path / "collection")
    write_extension(
        repo / "extensions" / "vm-audit", "vm-audit", "1.2.0",
        description="Log every VM state change", tags="audit, vm",
    )  # fmt: skip
    write_extension(
        repo / "extensions" / "power-ipmi", "power-ipmi", "0.4.0",
        hook="oob-management", description="Power hosts over IPMI", tags="ipmi",
    )  # fmt: skip
    (repo / "extensions" / "broken").mkdir()
    (repo / "extensions" / "broken" / "extension.yaml").write_text("metadata: {}\n")
    build_index(repo / "extensions", repo / INDEX_FILE, ref="v1")
    commit_all(repo, "collection", tag="v1")
    return repo


def test_build_index_from_a_collection(collection: Path) -> None:
    result = build_index(collection / "extensions", collection / "out.yaml", ref="v1")
    data = yaml.safe_load((collection / "out.yaml").read_text())
    assert data["apiVersion"] == "csext/v1"
    assert data["kind"] == "ExtensionIndex"
    entries = {e["name"]: e for e in data["extensions"]}
    assert set(entries) == {"vm-audit", "power-ipmi"}
    assert entries["vm-audit"] == {
        "name": "vm-audit",
        "description": "Log every VM state change",
        "hook": "event",
        "version": "1.2.0",
        "tags": ["audit", "vm"],
        "repo": str(collection.resolve()),
        "path": "extensions/vm-audit",
        "ref": "v1",
    }
    assert [p for p in result.problems if "broken" in p]


def test_build_index_uses_the_origin_remote_without_credentials(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "single")
    write_extension(repo, "single")
    git(repo, "remote", "add", "origin", "https://bob:hunter2@example.org/x/single.git")
    result = build_index(repo)
    assert result.output == repo / INDEX_FILE
    [entry] = result.index.extensions
    assert entry.repo == "https://example.org/x/single.git"
    assert entry.path is None
    assert entry.install_command() == "csext install https://example.org/x/single.git"


def test_build_index_outside_git_needs_repo(tmp_path: Path) -> None:
    write_extension(tmp_path / "plain" / "one", "one")
    result = build_index(tmp_path / "plain")
    assert any("--repo" in p for p in result.problems)
    result = build_index(tmp_path / "plain", repo="https://example.org/r.git")
    assert result.index.extensions[0].repo == "https://example.org/r.git"
    assert result.index.extensions[0].path == "one"


def test_add_git_repo_search_and_install_the_hit(
    home: IndexHome, collection: Path, tmp_path: Path
) -> None:
    source, count = add_index(home, f"file://{collection}")
    assert (source.kind, count) == ("git", 2)
    assert home.config_file.stat().st_mode & 0o777 == 0o600

    found = search(home, "vm")
    assert [h.entry.name for h in found.hits] == ["vm-audit"]
    hit = found.hits[0]
    assert hit.entry.install_command() == (
        f"csext install {collection.resolve()}@v1 --subdir extensions/vm-audit"
    )
    assert [h.entry.name for h in search(home, "", hook="oob-management").hits] == ["power-ipmi"]
    assert search(home, "nothing-like-this").hits == []

    registry = make_registry(tmp_path / "registry")
    entry = hit.entry
    assert entry.repo and entry.ref
    result = install_extension(registry, f"{entry.repo}@{entry.ref}", subdir=entry.path)
    assert (result.name, result.version) == ("vm-audit", "1.2.0")


def test_search_uses_the_cache_until_update(home: IndexHome, collection: Path) -> None:
    add_index(home, str(collection), name="mine")
    assert [s.source.kind for s in list_indexes(home)] == ["dir"]
    write_extension(collection / "extensions" / "newcomer", "newcomer", description="fresh")
    build_index(collection / "extensions", collection / INDEX_FILE)

    assert search(home, "fresh").hits == []
    [status] = update_indexes(home)
    assert status.error is None and status.extensions == 3
    assert [h.entry.name for h in search(home, "fresh").hits] == ["newcomer"]


def test_add_an_index_file(home: IndexHome, collection: Path) -> None:
    source, count = add_index(home, str(collection / INDEX_FILE))
    assert (source.kind, source.name, count) == ("file", "collection", 2)
    [status] = list_indexes(home)
    assert status.extensions == 2 and status.fetched


def test_invalid_index_is_not_added(home: IndexHome, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: csext/v1\nkind: ExtensionIndex\nextensions: [{name: '../x'}]\n")
    with pytest.raises(IndexError_, match=r"extensions\.0"):
        add_index(home, str(bad))
    assert list_indexes(home) == []


def test_repo_without_index_is_not_added(home: IndexHome, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "bare")
    write_extension(repo, "x")
    commit_all(repo, "no index")
    with pytest.raises(IndexError_, match=r"csext-index\.yaml not found"):
        add_index(home, f"file://{repo}")


def test_duplicate_and_remove(home: IndexHome, collection: Path) -> None:
    add_index(home, str(collection), name="one")
    with pytest.raises(IndexError_, match="already added"):
        add_index(home, str(collection), name="one")
    remove_index(home, "one")
    assert list_indexes(home) == []
    with pytest.raises(IndexError_, match="no index added yet"):
        search(home, "vm")


# --- from the command line ------------------------------------------------------------------


def test_cli_publish_follow_search_install(tmp_path: Path) -> None:
    """The whole sharing story of docs/sharing.md, through the CLI."""
    repo = make_repo(tmp_path / "mine")
    write_extension(repo / "vm-audit", "vm-audit", "1.0.0", description="Audit VM changes")
    commit_all(repo, "vm-audit 1.0.0", tag="v1.0.0")
    registry = make_registry(tmp_path / "registry")
    env = cli_env(tmp_path, registry)

    built = csext(env, "index", "build", str(repo), "--ref", "v1.0.0", "--json")
    assert built.exit_code == 0, built.output
    assert json.loads(built.stdout)["extensions"][0]["path"] == "vm-audit"
    commit_all(repo, "publish the index")

    added = csext(env, "index", "add", f"file://{repo}", "--name", "mine")
    assert added.exit_code == 0, added.output
    assert "added index mine (git, 1 extensions)" in added.stdout
    listed = json.loads(csext(env, "index", "list", "--json").stdout)
    assert [(i["name"], i["extensions"]) for i in listed] == [("mine", 1)]

    found = csext(env, "search", "audit", "--hook", "event")
    assert found.exit_code == 0, found.output
    command = f"csext install {repo}@v1.0.0 --subdir vm-audit"
    assert command in found.stdout
    assert "vm-audit  event  1.0.0    mine   Audit VM changes" in found.stdout

    hits = json.loads(csext(env, "search", "audit", "--json").stdout)["results"]
    installed = csext(env, *hits[0]["install"].split()[1:])
    assert installed.exit_code == 0, installed.output
    assert (registry / "vm-audit" / "run.sh").is_file()

    assert csext(env, "index", "update").exit_code == 0
    assert csext(env, "index", "remove", "mine").exit_code == 0
    nothing = csext(env, "search", "audit")
    assert nothing.exit_code == 1
    assert "no index added yet" in nothing.stderr
