"""Scenario 7: hostile store input, all at once, through the `csext` command line.

tests/test_bundle.py and tests/test_install.py hold one focused test per refusal (reused here
through their builders); this scenario throws every hostile bundle and Git repository at one
registry through `csext import` / `csext install`, as an operator would, and adds what they do
not cover: a compression bomb under the default limits, a Git install whose manifest itself is
a symlink out of the tree, a symlinked directory, and a hostile manifest name in a Git repo.
Every one must fail with a clear message, and the registry must stay exactly as it was.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest
from _store_helpers import (
    cli_env,
    commit_all,
    csext,
    git,
    git_status,
    make_registry,
    make_repo,
    write_extension,
)
from test_bundle import RUN, add, build_bundle, manifest_text

SCENARIO = "7 store input"
pytestmark = [pytest.mark.timeout(180)]


def hostile_bundles(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name → (bundle, words the error must contain)."""

    def link(kind: int, target: str):  # type: ignore[no-untyped-def]
        return lambda t: add(t, "hostile/x", type=kind, linkname=target)

    files = {"extension.yaml": manifest_text("hostile"), "run.sh": RUN}
    cases = {
        "path traversal": (dict(extra=lambda t: add(t, "hostile/../../evil", b"x")), ".."),
        "absolute path": (dict(extra=lambda t: add(t, "/tmp/evil", b"x")), "absolute"),
        "symlink out": (dict(extra=link(tarfile.SYMTYPE, "/etc/passwd")), "symbolic link"),
        "relative symlink out": (dict(extra=link(tarfile.SYMTYPE, "../../..")), "symbolic link"),
        "hard link": (dict(extra=link(tarfile.LNKTYPE, "/etc/shadow")), "hard link"),
        "block device": (
            dict(extra=lambda t: add(t, "hostile/sda", type=tarfile.BLKTYPE)),
            "device",
        ),
        "FIFO": (dict(extra=lambda t: add(t, "hostile/p", type=tarfile.FIFOTYPE)), "FIFO"),
        "checksum mismatch": (dict(files=files, listed={**files, "run.sh": b"other"}), "checksum"),
        "name ../x": (dict(index_name="../x"), "not a plain extension name"),
        "name a/b": (dict(index_name="a/b"), "not a plain extension name"),
        "manifest name mismatch": (
            dict(files={"extension.yaml": manifest_text("other"), "run.sh": RUN}),
            "name",
        ),
        "into another extension": (
            dict(extra=lambda t: add(t, "existing/run.sh", RUN)),
            "outside the extension folder",
        ),
    }
    made = {}
    for index, (label, (knobs, words)) in enumerate(cases.items()):
        made[label] = (build_bundle(tmp / f"b{index}.tar.gz", **knobs), words)
    made["compression bomb (default limits)"] = (_bomb(tmp / "bomb.tar.gz"), "limit")
    return made


def _bomb(path: Path) -> Path:
    """60 MiB of zeros in one member (over the default 20 MiB member limit), ~60 KiB gzipped."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        add(tar, "bundle.json", b'{"format":1,"name":"hostile","version":"2.0.0","files":[]}')
        info = tarfile.TarInfo("hostile/zeros")
        info.size = 60 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    path.write_bytes(gzip.compress(raw.getvalue(), 9))
    return path


def hostile_repos(tmp: Path) -> dict[str, tuple[str, str]]:
    """name → (install target, words the error must contain)."""
    repos: dict[str, tuple[str, str]] = {}
    repo = make_repo(tmp / "link-out")
    write_extension(repo, "linkout")
    (repo / "secrets").symlink_to("/etc/passwd")
    commit_all(repo, "link out", tag="v1")
    repos["git: symlink out of the tree"] = (f"{repo}@v1", "outside")
    repo = make_repo(tmp / "dir-out")
    write_extension(repo, "dirout")
    (repo / "etc").symlink_to("/etc")
    commit_all(repo, "dir link out", tag="v1")
    repos["git: symlinked directory out"] = (f"{repo}@v1", "symbolic link")
    repo = make_repo(tmp / "manifest-out")
    write_extension(repo, "manout")
    outside = tmp / "elsewhere.yaml"
    outside.write_text((repo / "extension.yaml").read_text())
    (repo / "extension.yaml").unlink()
    (repo / "extension.yaml").symlink_to(outside)
    commit_all(repo, "manifest is a link", tag="v1")
    repos["git: manifest is a symlink out"] = (f"{repo}@v1", "")
    repo = make_repo(tmp / "bad-name")
    write_extension(repo, "badname")
    text = (repo / "extension.yaml").read_text().replace("name: badname", "name: ../evil")
    (repo / "extension.yaml").write_text(text)
    commit_all(repo, "hostile name", tag="v1")
    repos["git: manifest name ../evil"] = (f"{repo}@v1", "name")
    return repos


def test_hostile_store_input_is_refused_and_registry_untouched(tmp_path, report):
    registry = make_registry(tmp_path / "registry", "existing")
    env = cli_env(tmp_path, registry)
    head = git(registry, "rev-parse", "HEAD")
    entries = sorted(p.name for p in registry.iterdir())
    bundles = hostile_bundles(tmp_path)
    repos = hostile_repos(tmp_path)
    report.load(f"{len(bundles)} hostile bundles, {len(repos)} hostile Git repositories")
    for label, (bundle, words) in bundles.items():
        result = csext(env, "import", str(bundle))
        assert result.exit_code != 0, (label, result.output)
        assert words.lower() in result.output.lower(), (label, result.output)
    report.check("every bundle refused by `csext import` with an error naming the problem")
    for label, (target, words) in repos.items():
        result = csext(env, "install", target)
        assert result.exit_code != 0, (label, result.output)
        assert words.lower() in result.output.lower(), (label, result.output)
        assert "Traceback" not in result.output
    report.check("every Git install refused by `csext install` with a clear error")
    assert git(registry, "rev-parse", "HEAD") == head
    assert git_status(registry) == ""
    assert sorted(p.name for p in registry.iterdir()) == entries
    report.check("registry untouched: same HEAD, `git status` clean, no new folder")
