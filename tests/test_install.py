"""Install from Git and update: local repositories in tmp_path, so everything runs offline."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aio_pika
import orjson
import pytest
import yaml
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

from csext.schemas.errors import CsextError
from csext.store.install import (
    InstallError,
    adjust_manifest,
    install_extension,
    redact_url,
    split_target,
    update_extension,
)
from csext.worker.amqp.names import CONTROL_EXCHANGE


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return make_registry(tmp_path / "registry", "existing")


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    """A repository with the extension `greeter` at its root: v1.0.0, then v1.1.0."""
    repo = make_repo(tmp_path / "upstream")
    write_extension(repo, "greeter", "1.0.0")
    commit_all(repo, "first release", tag="v1.0.0")
    write_extension(repo, "greeter", "1.1.0")
    commit_all(repo, "second release", tag="v1.1.0")
    return repo


def manifest(registry: Path, name: str) -> dict:
    return yaml.safe_load((registry / name / "extension.yaml").read_text())


def commits(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "HEAD"))


def assert_untouched(registry: Path, head: str) -> None:
    assert git(registry, "rev-parse", "HEAD") == head
    assert git_status(registry) == ""
    assert sorted(p.name for p in registry.iterdir()) == [".git", ".keep", "existing"]


def test_install_at_a_tag(registry: Path, upstream: Path) -> None:
    before = commits(registry)
    result = install_extension(registry, f"{upstream}@v1.0.0")

    tag_commit = git(upstream, "rev-parse", "v1.0.0^{commit}")
    assert (result.name, result.version, result.commit) == ("greeter", "1.0.0", tag_commit)
    source = manifest(registry, "greeter")["source"]
    assert source == {"type": "git", "url": str(upstream), "ref": "v1.0.0", "commit": tag_commit}
    text = (registry / "greeter" / "extension.yaml").read_text()
    assert "# a comment that should survive install" in text
    assert "# version 1.0.0" in (registry / "greeter" / "run.sh").read_text()
    assert (registry / "greeter" / "run.sh").stat().st_mode & 0o111
    assert not (registry / "greeter" / ".git").exists()
    assert commits(registry) == before + 1
    assert result.registry_commit == git(registry, "rev-parse", "HEAD")
    assert "install greeter 1.0.0" in git(registry, "log", "-1", "--format=%s")
    assert git_status(registry) == ""


def test_install_at_a_commit_over_file_url(registry: Path, upstream: Path) -> None:
    first = git(upstream, "rev-parse", "v1.0.0^{commit}")
    result = install_extension(registry, f"file://{upstream}@{first}")
    assert result.commit == first
    assert result.version == "1.0.0"
    source = manifest(registry, "greeter")["source"]
    assert source["url"] == f"file://{upstream}"
    assert source["ref"] == first


def test_install_default_branch(registry: Path, upstream: Path) -> None:
    result = install_extension(registry, str(upstream))
    assert result.version == "1.1.0"
    assert result.ref is None
    assert manifest(registry, "greeter")["source"]["commit"] == git(upstream, "rev-parse", "HEAD")


def test_install_from_subdir_under_another_name(registry: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "collection")
    write_extension(repo / "extensions" / "alpha", "alpha", "0.3.0")
    write_extension(repo / "extensions" / "beta", "beta")
    commit_all(repo, "collection", tag="2024.1")
    result = install_extension(
        registry, str(repo), ref="2024.1", subdir="extensions/alpha", name="alpha-copy"
    )
    assert result.name == "alpha-copy"
    data = manifest(registry, "alpha-copy")
    assert data["metadata"]["name"] == "alpha-copy"
    assert data["source"]["subdir"] == "extensions/alpha"
    assert git_status(registry) == ""


def test_missing_subdir_hint_lists_candidates(registry: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "collection")
    write_extension(repo / "alpha", "alpha")
    commit_all(repo, "collection")
    head = git(registry, "rev-parse", "HEAD")
    with pytest.raises(InstallError, match="pass --subdir, one of: alpha"):
        install_extension(registry, str(repo))
    assert_untouched(registry, head)


def test_symlink_out_of_the_tree_refused(registry: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "evil")
    write_extension(repo, "evil")
    (repo / "secrets").symlink_to("/etc/passwd")
    commit_all(repo, "link out", tag="v1")
    head = git(registry, "rev-parse", "HEAD")
    with pytest.raises(CsextError, match="pointing outside the extension"):
        install_extension(registry, f"{repo}@v1")
    assert_untouched(registry, head)


def test_symlink_to_a_file_inside_is_copied_as_a_file(registry: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "linked")
    write_extension(repo, "linked")
    (repo / "lib").mkdir()
    (repo / "lib" / "common.sh").write_text("echo common\n")
    (repo / "common.sh").symlink_to("lib/common.sh")
    commit_all(repo, "inner link")
    install_extension(registry, str(repo))
    copied = registry / "linked" / "common.sh"
    assert not copied.is_symlink()
    assert copied.read_text() == "echo common\n"


def test_unknown_ref_refused_with_the_tags(registry: Path, upstream: Path) -> None:
    head = git(registry, "rev-parse", "HEAD")
    with pytest.raises(InstallError, match=r"no tag, branch or commit 'v9'.*v1\.0\.0, v1\.1\.0"):
        install_extension(registry, f"{upstream}@v9")
    assert_untouched(registry, head)


def test_invalid_manifest_refused(registry: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "broken")
    write_extension(repo, "broken")
    (repo / "extension.yaml").write_text("metadata: {name: broken}\nspec: {hook: bogus}\n")
    commit_all(repo, "broken")
    head = git(registry, "rev-parse", "HEAD")
    with pytest.raises(CsextError, match="spec"):
        install_extension(registry, str(repo))
    assert_untouched(registry, head)


def test_clash_refused(registry: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "dup")
    write_extension(repo, "existing", "9.9.9")
    commit_all(repo, "same name")
    head = git(registry, "rev-parse", "HEAD")
    with pytest.raises(CsextError, match="already in the registry"):
        install_extension(registry, str(repo))
    assert_untouched(registry, head)


def test_credentials_never_appear_in_errors(registry: Path) -> None:
    with pytest.raises(InstallError) as caught:
        install_extension(registry, "http://alice:s3cr3t-token@127.0.0.1:9/repo.git@v1")
    assert "s3cr3t-token" not in str(caught.value)
    assert "alice" not in str(caught.value)
    assert "***@127.0.0.1:9" in str(caught.value)


def test_update_to_a_newer_tag_shows_the_diff_then_applies(registry: Path, upstream: Path) -> None:
    install_extension(registry, f"{upstream}@v1.0.0")
    installed = commits(registry)

    dry = update_extension(registry, "greeter")
    assert not dry.applied
    assert dry.plan.to_ref == "v1.1.0"
    assert "-# version 1.0.0" in dry.plan.diff
    assert "+# version 1.1.0" in dry.plan.diff
    assert "+++ b/greeter/run.sh" in dry.plan.diff
    assert commits(registry) == installed
    assert git_status(registry) == ""

    seen = []
    applied = update_extension(registry, "greeter", confirm=lambda plan: seen.append(plan) or True)
    assert applied.applied and seen
    assert manifest(registry, "greeter")["metadata"]["version"] == "1.1.0"
    source = manifest(registry, "greeter")["source"]
    assert source["ref"] == "v1.1.0"
    assert source["commit"] == git(upstream, "rev-parse", "v1.1.0^{commit}")
    assert commits(registry) == installed + 1
    assert "update greeter 1.0.0 -> 1.1.0" in git(registry, "log", "-1", "--format=%s")
    assert git_status(registry) == ""

    again = update_extension(registry, "greeter", confirm=lambda plan: True)
    assert again.plan.up_to_date and not again.applied


def test_update_with_explicit_ref_keeps_disabled(registry: Path, upstream: Path) -> None:
    install_extension(registry, f"{upstream}@v1.1.0")
    path = registry / "greeter" / "extension.yaml"
    path.write_text(path.read_text().replace("  hook: event", "  hook: event\n  enabled: false"))
    commit_all(registry, "disable greeter")
    result = update_extension(registry, "greeter", ref="v1.0.0", confirm=lambda plan: True)
    assert result.applied
    data = manifest(registry, "greeter")
    assert data["metadata"]["version"] == "1.0.0"
    assert data["spec"]["enabled"] is False


def test_update_refuses_a_local_extension(registry: Path) -> None:
    with pytest.raises(InstallError, match="was not installed from Git"):
        update_extension(registry, "existing")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/srv/repo@v1.0", ("/srv/repo", "v1.0")),
        ("/srv/repo", ("/srv/repo", None)),
        ("file:///srv/repo@main", ("file:///srv/repo", "main")),
        ("https://u:p@host/org/repo.git", ("https://u:p@host/org/repo.git", None)),
        ("https://u:p@host/org/repo.git@v2", ("https://u:p@host/org/repo.git", "v2")),
        ("https://token@host/org/repo", ("https://token@host/org/repo", None)),
        ("git@github.com:org/repo.git", ("git@github.com:org/repo.git", None)),
        ("git@github.com:org/repo.git@release/1.x", ("git@github.com:org/repo.git", "release/1.x")),
    ],
)
def test_split_target(target: str, expected: tuple[str, str | None]) -> None:
    assert split_target(target) == expected


def test_redact_url() -> None:
    assert redact_url("https://u:pw@host:8443/r.git") == "https://***@host:8443/r.git"
    assert redact_url("https://host/r.git") == "https://host/r.git"


def test_adjust_manifest_replaces_only_the_source_block() -> None:
    text = "# top\napiVersion: csext/v1\nsource:\n  type: local\n\n# spec next\nspec: {}\n"
    out = adjust_manifest(text, {"type": "git", "url": "/r", "ref": None})
    assert (
        out
        == "# top\napiVersion: csext/v1\nsource:\n  type: git\n  url: /r\n\n# spec next\nspec: {}\n"
    )


# --- from the command line ------------------------------------------------------------------


def test_cli_install_then_update(tmp_path: Path, registry: Path, upstream: Path) -> None:
    env = cli_env(tmp_path, registry)
    installed = csext(env, "install", f"{upstream}@v1.0.0", "--json")
    assert installed.exit_code == 0, installed.output
    data = json.loads(installed.stdout)
    assert (data["name"], data["version"], data["ref"]) == ("greeter", "1.0.0", "v1.0.0")
    assert data["registry_commit"] == git(registry, "rev-parse", "HEAD")

    shown = csext(env, "update", "greeter")
    assert shown.exit_code == 1
    assert "+# version 1.1.0" in shown.stdout
    assert "re-run with --yes" in shown.stderr
    assert manifest(registry, "greeter")["metadata"]["version"] == "1.0.0"

    applied = csext(env, "update", "greeter", "--yes")
    assert applied.exit_code == 0, applied.output
    assert "updated greeter" in applied.stdout
    assert manifest(registry, "greeter")["metadata"]["version"] == "1.1.0"

    current = csext(env, "update", "greeter", "--json")
    assert current.exit_code == 0
    assert json.loads(current.stdout)["up_to_date"] is True


def test_cli_install_refusal_is_a_clear_error(tmp_path: Path, registry: Path) -> None:
    env = cli_env(tmp_path, registry)
    result = csext(env, "install", "https://bob:pa55word@127.0.0.1:9/x.git@v1", "--json")
    assert result.exit_code == 1
    assert "pa55word" not in result.output + result.stderr
    assert json.loads(result.stdout)["error"].startswith("git clone of https://***@127.0.0.1:9")
    assert git_status(registry) == ""


@pytest.mark.broker
def test_cli_install_tells_the_workers(
    tmp_path: Path, registry: Path, upstream: Path, amqp_url: str, unique: str
) -> None:
    """After the commit, a registry-changed message goes out on csext.control."""

    async def bind() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(unique, auto_delete=False)
            await queue.bind(CONTROL_EXCHANGE)

    async def receive() -> dict:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(unique)
            try:
                async with asyncio.timeout(10):
                    while (message := await queue.get(fail=False)) is None:
                        await asyncio.sleep(0.05)
                return orjson.loads(message.body)
            finally:
                await queue.delete(if_unused=False, if_empty=False)

    asyncio.run(_declare_control(amqp_url))
    asyncio.run(bind())
    result = csext(cli_env(tmp_path, registry, amqp_url), "install", f"{upstream}@v1.0.0")
    assert result.exit_code == 0, result.output
    body = asyncio.run(receive())
    assert body["extension"] == "greeter"
    assert body["change"] == "install"
    assert body["commit"] == git(registry, "rev-parse", "HEAD")


async def _declare_control(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(CONTROL_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
