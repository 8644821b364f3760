"""Bundles: export/import round trip, and one refusal test per kind of unsafe member.

Every refusal checks the same thing: a clear error and the registry untouched (same HEAD, Git
status clean, no new folder).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from _store_helpers import cli_env, csext, git, git_status, make_registry, write_extension

from csext.schemas.errors import CsextError, ManifestError
from csext.store.bundle import (
    BundleError,
    BundleLimits,
    UnsafeBundle,
    export_bundle,
    import_bundle,
)

RUN = b"#!/bin/sh\necho '{}'\n"


def manifest_text(name: str) -> bytes:
    return (
        f"apiVersion: csext/v1\nmetadata:\n  name: {name}\n  version: 2.0.0\n"
        "spec:\n  hook: event\n  entrypoint: run.sh\n"
    ).encode()


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def build_bundle(
    path: Path,
    name: str = "hostile",
    *,
    files: dict[str, bytes] | None = None,
    index_name: str | None = None,
    listed: dict[str, bytes] | None = None,
    extra: Callable[[tarfile.TarFile], None] | None = None,
) -> Path:
    """A bundle as csext would write it, with the knobs a hostile author would turn."""
    files = {"extension.yaml": manifest_text(name), "run.sh": RUN} if files is None else files
    listed = files if listed is None else listed
    index = {
        "format": 1,
        "name": index_name or name,
        "version": "2.0.0",
        "files": [
            {"path": p, "sha256": hashlib.sha256(d).hexdigest(), "size": len(d), "mode": 0o755}
            for p, d in listed.items()
        ],
    }
    with tarfile.open(path, "w:gz") as tar:
        add(tar, "bundle.json", json.dumps(index).encode())
        for rel, data in files.items():
            add(tar, f"{name}/{rel}", data, mode=0o755)
        if extra:
            extra(tar)
    return path


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return make_registry(tmp_path / "registry", "existing")


def assert_refused(registry: Path, bundle: Path, match: str, **kwargs: object) -> CsextError:
    before = git(registry, "rev-parse", "HEAD")
    entries = sorted(p.name for p in registry.iterdir())
    with pytest.raises(CsextError, match=match) as caught:
        import_bundle(registry, bundle, **kwargs)  # type: ignore[arg-type]
    assert git(registry, "rev-parse", "HEAD") == before
    assert git_status(registry) == ""
    assert sorted(p.name for p in registry.iterdir()) == entries
    return caught.value


def test_round_trip_keeps_files_modes_and_makes_one_commit(tmp_path: Path, registry: Path) -> None:
    source = make_registry(tmp_path / "source")
    write_extension(source / "greeter", "greeter", "1.2.3")
    (source / "greeter" / "tests").mkdir()
    (source / "greeter" / "tests" / "case.json").write_text('{"a": 1}')
    (tmp_path / "out").mkdir()
    exported = export_bundle(source, "greeter", tmp_path / "out")
    assert exported.path == tmp_path / "out" / "greeter-1.2.3.tar.gz"
    assert {f.path for f in exported.files} == {
        "extension.yaml",
        "run.sh",
        "README.md",
        "tests/case.json",
    }
    before = git(registry, "rev-list", "--count", "HEAD")

    result = import_bundle(registry, exported.path)

    assert (result.name, result.version, result.replaced) == ("greeter", "1.2.3", False)
    assert result.bundle_sha256 == exported.sha256
    for rel in ("extension.yaml", "run.sh", "tests/case.json"):
        assert (registry / "greeter" / rel).read_bytes() == (source / "greeter" / rel).read_bytes()
    assert (registry / "greeter" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (registry / "greeter" / "README.md").stat().st_mode & 0o777 == 0o644
    assert int(git(registry, "rev-list", "--count", "HEAD")) == int(before) + 1
    assert result.commit == git(registry, "rev-parse", "HEAD")
    assert "import greeter 1.2.3" in git(registry, "log", "-1", "--format=%s")
    assert git_status(registry) == ""


def test_export_is_reproducible(tmp_path: Path, registry: Path) -> None:
    first = export_bundle(registry, "existing", tmp_path / "a.tar.gz")
    second = export_bundle(registry, "existing", tmp_path / "b.tar.gz")
    assert first.sha256 == second.sha256


def test_export_refuses_a_symlink_leading_outside(tmp_path: Path, registry: Path) -> None:
    (registry / "existing" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(BundleError, match="pointing outside"):
        export_bundle(registry, "existing", tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()


def test_export_unknown_extension(tmp_path: Path, registry: Path) -> None:
    with pytest.raises(BundleError, match="no extension named 'nope'"):
        export_bundle(registry, "nope", tmp_path)


def test_valid_hand_built_bundle_imports(tmp_path: Path, registry: Path) -> None:
    result = import_bundle(registry, build_bundle(tmp_path / "ok.tar.gz", "fine"))
    assert result.name == "fine"
    assert (registry / "fine" / "run.sh").read_bytes() == RUN


def test_clash_refused_without_replace_then_replaced(tmp_path: Path, registry: Path) -> None:
    bundle = build_bundle(tmp_path / "b.tar.gz", "existing")
    error = assert_refused(registry, bundle, "already in the registry")
    assert "--replace" in str(error)
    result = import_bundle(registry, bundle, replace=True)
    assert result.replaced
    assert (registry / "existing" / "run.sh").read_bytes() == RUN
    assert not (registry / "existing" / "README.md").exists()
    assert git_status(registry) == ""


def test_absolute_path_refused(tmp_path: Path, registry: Path) -> None:
    bundle = build_bundle(tmp_path / "b.tar.gz", extra=lambda t: add(t, "/tmp/evil", b"x"))
    assert_refused(registry, bundle, "absolute path")


def test_dot_dot_refused(tmp_path: Path, registry: Path) -> None:
    bundle = build_bundle(tmp_path / "b.tar.gz", extra=lambda t: add(t, "hostile/../../evil", b"x"))
    assert_refused(registry, bundle, r"climbs out with '\.\.'")


def test_symlink_out_refused(tmp_path: Path, registry: Path) -> None:
    def link(tar: tarfile.TarFile) -> None:
        add(tar, "hostile/passwd", type=tarfile.SYMTYPE, linkname="/etc/passwd")

    assert_refused(registry, build_bundle(tmp_path / "b.tar.gz", extra=link), "symbolic link")


def test_relative_symlink_climbing_out_refused(tmp_path: Path, registry: Path) -> None:
    def link(tar: tarfile.TarFile) -> None:
        add(tar, "hostile/up", type=tarfile.SYMTYPE, linkname="../../..")

    assert_refused(registry, build_bundle(tmp_path / "b.tar.gz", extra=link), "symbolic link")


def test_hard_link_refused(tmp_path: Path, registry: Path) -> None:
    def link(tar: tarfile.TarFile) -> None:
        add(tar, "hostile/shadow", type=tarfile.LNKTYPE, linkname="/etc/shadow")

    assert_refused(registry, build_bundle(tmp_path / "b.tar.gz", extra=link), "hard link")


def test_device_file_refused(tmp_path: Path, registry: Path) -> None:
    def device(tar: tarfile.TarFile) -> None:
        add(tar, "hostile/sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0)

    assert_refused(registry, build_bundle(tmp_path / "b.tar.gz", extra=device), "device file")


def test_character_device_refused(tmp_path: Path, registry: Path) -> None:
    def device(tar: tarfile.TarFile) -> None:
        add(tar, "hostile/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)

    assert_refused(registry, build_bundle(tmp_path / "b.tar.gz", extra=device), "device file")


def test_fifo_refused(tmp_path: Path, registry: Path) -> None:
    def fifo(tar: tarfile.TarFile) -> None:
        add(tar, "hostile/pipe", type=tarfile.FIFOTYPE)

    assert_refused(registry, build_bundle(tmp_path / "b.tar.gz", extra=fifo), "FIFO")


def test_oversized_member_refused(tmp_path: Path, registry: Path) -> None:
    files = {"extension.yaml": manifest_text("hostile"), "run.sh": RUN, "big": b"x" * 5000}
    bundle = build_bundle(tmp_path / "b.tar.gz", files=files)
    limits = BundleLimits(max_member_bytes=4096)
    assert_refused(registry, bundle, "over the 4096-byte limit", limits=limits)


def test_oversized_total_refused(tmp_path: Path, registry: Path) -> None:
    files = {"extension.yaml": manifest_text("hostile"), "run.sh": RUN}
    files |= {f"part{i}": b"y" * 3000 for i in range(4)}
    bundle = build_bundle(tmp_path / "b.tar.gz", files=files)
    limits = BundleLimits(max_member_bytes=4096, max_total_bytes=10_000)
    assert_refused(registry, bundle, "more than 10000 bytes", limits=limits)


def test_checksum_mismatch_refused(tmp_path: Path, registry: Path) -> None:
    files = {"extension.yaml": manifest_text("hostile"), "run.sh": RUN}
    listed = {**files, "run.sh": b"#!/bin/sh\necho original\n"}
    bundle = build_bundle(tmp_path / "b.tar.gz", files=files, listed=listed)
    assert_refused(registry, bundle, "checksum mismatch for 'hostile/run.sh'")


def test_missing_file_refused(tmp_path: Path, registry: Path) -> None:
    files = {"extension.yaml": manifest_text("hostile"), "run.sh": RUN}
    listed = {**files, "lib.sh": b"x"}
    bundle = build_bundle(tmp_path / "b.tar.gz", files=files, listed=listed)
    assert_refused(registry, bundle, r"missing files .*lib\.sh")


def test_extra_file_refused(tmp_path: Path, registry: Path) -> None:
    files = {"extension.yaml": manifest_text("hostile"), "run.sh": RUN, "sneaky": b"x"}
    listed = {k: v for k, v in files.items() if k != "sneaky"}
    bundle = build_bundle(tmp_path / "b.tar.gz", files=files, listed=listed)
    assert_refused(registry, bundle, r"not listed .*sneaky")


def test_member_outside_the_extension_folder_refused(tmp_path: Path, registry: Path) -> None:
    bundle = build_bundle(tmp_path / "b.tar.gz", extra=lambda t: add(t, "existing/run.sh", RUN))
    assert_refused(registry, bundle, "outside the extension folder")


def test_duplicate_member_refused(tmp_path: Path, registry: Path) -> None:
    bundle = build_bundle(tmp_path / "b.tar.gz", extra=lambda t: add(t, "hostile/run.sh", b"2"))
    assert_refused(registry, bundle, "appears twice")


@pytest.mark.parametrize("hostile_name", ["../x", "a/b", "-", "Upper", ".hidden", "/etc"])
def test_hostile_bundle_name_refused(tmp_path: Path, registry: Path, hostile_name: str) -> None:
    bundle = build_bundle(tmp_path / "b.tar.gz", "hostile", index_name=hostile_name)
    error = assert_refused(registry, bundle, "not a plain extension name")
    assert isinstance(error, UnsafeBundle)


def test_manifest_name_must_match_bundle(tmp_path: Path, registry: Path) -> None:
    files = {"extension.yaml": manifest_text("other"), "run.sh": RUN}
    bundle = build_bundle(tmp_path / "b.tar.gz", files=files)
    error = assert_refused(registry, bundle, "must equal the folder name")
    assert isinstance(error, ManifestError)


def test_invalid_manifest_refused(tmp_path: Path, registry: Path) -> None:
    files = {"extension.yaml": b"metadata: {name: hostile}\nspec: {hook: nope}\n", "run.sh": RUN}
    assert_refused(registry, build_bundle(tmp_path / "b.tar.gz", files=files), "spec")


def test_absolute_entrypoint_refused(tmp_path: Path, registry: Path) -> None:
    text = manifest_text("hostile").replace(b"entrypoint: run.sh", b"entrypoint: /bin/true")
    bundle = build_bundle(tmp_path / "b.tar.gz", files={"extension.yaml": text, "run.sh": RUN})
    assert_refused(registry, bundle, "must carry its entry point")


def test_not_a_bundle_refused(tmp_path: Path, registry: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not gzip")
    assert_refused(registry, junk, "not a readable .tar.gz bundle")


def test_bundle_without_index_refused(tmp_path: Path, registry: Path) -> None:
    path = tmp_path / "b.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        add(tar, "hostile/extension.yaml", manifest_text("hostile"))
    assert_refused(registry, path, "no bundle.json")


# --- from the command line ------------------------------------------------------------------


def test_cli_export_then_import(tmp_path: Path, registry: Path) -> None:
    env = cli_env(tmp_path, registry)
    out = tmp_path / "existing.tar.gz"
    exported = csext(env, "export", "existing", "-o", str(out), "--json")
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["path"] == str(out)

    other = make_registry(tmp_path / "other")
    imported = csext(cli_env(tmp_path, other), "import", str(out), "--json")
    assert imported.exit_code == 0, imported.output
    data = json.loads(imported.stdout)
    assert (data["name"], data["replaced"]) == ("existing", False)
    assert data["commit"] == git(other, "rev-parse", "HEAD")
    assert "could not tell workers to reload" in imported.stderr
    assert git_status(other) == ""

    again = csext(cli_env(tmp_path, other), "import", str(out))
    assert again.exit_code == 1
    assert "already in the registry" in again.stderr
    replaced = csext(cli_env(tmp_path, other), "import", str(out), "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert "replaced existing" in replaced.stdout


def test_cli_refuses_an_unsafe_bundle(tmp_path: Path, registry: Path) -> None:
    def link(tar: tarfile.TarFile) -> None:
        add(tar, "hostile/passwd", type=tarfile.SYMTYPE, linkname="/etc/passwd")

    bundle = build_bundle(tmp_path / "b.tar.gz", extra=link)
    before = git(registry, "rev-parse", "HEAD")
    result = csext(cli_env(tmp_path, registry), "import", str(bundle), "--json")
    assert result.exit_code == 1
    assert "symbolic link" in json.loads(result.stdout)["error"]
    assert result.stderr.startswith("csext: error: bundle member 'hostile/passwd'")
    assert git(registry, "rev-parse", "HEAD") == before
    assert git_status(registry) == ""


def test_cli_size_limits_are_options(tmp_path: Path, registry: Path) -> None:
    files = {"extension.yaml": manifest_text("hostile"), "run.sh": RUN, "big": b"x" * 20_000}
    bundle = build_bundle(tmp_path / "b.tar.gz", files=files)
    result = csext(cli_env(tmp_path, registry), "import", str(bundle), "--max-file-mib", "0.01")
    assert result.exit_code == 1
    assert "over the 10485-byte limit" in result.stderr
    assert git_status(registry) == ""


def test_failed_commit_puts_the_previous_version_back(tmp_path: Path, registry: Path) -> None:
    """A commit refused by a pre-commit hook: the old folder is restored, nothing staged."""
    hook = registry / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'commits are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    original = (registry / "existing" / "run.sh").read_bytes()
    bundle = build_bundle(tmp_path / "b.tar.gz", "existing")
    assert_refused(registry, bundle, "commits are frozen", replace=True)
    assert (registry / "existing" / "run.sh").read_bytes() == original
    assert (registry / "existing" / "README.md").is_file()
    assert_refused(registry, build_bundle(tmp_path / "new.tar.gz", "fresh"), "commits are frozen")
    assert not (registry / "fresh").exists()
