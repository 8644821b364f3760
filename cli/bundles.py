"""CLI commands for sharing extensions: bundles, Git install/update, index and search.

A thin layer over csext.store.bundle, .install and .index (registered by worker/cli.py): each
command builds Settings, calls one library function and prints text or `--json`; errors are
reported by cli/context.py. Long steps (clone, fetch, verify, build) show a progress spinner on
a terminal. After a registry change, a best-effort `registry-changed` broadcast on csext.control.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from csext.cli.context import (
    AmqpOpt,
    AuthorOpt,
    JsonOpt,
    RegistryOpt,
    emit,
    fail,
    handled,
    hook_option,
    notify,
    progress,
    table,
    warn,
)
from csext.store import bundle, index, install
from csext.store.git import Author
from csext.worker.settings import load_settings

_MIB = 1024 * 1024


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main `csext` app."""
    app.command("export")(export_cmd)
    app.command("import")(import_cmd)
    app.command("install")(install_cmd)
    app.command("update")(update_cmd)
    app.command("search")(search_cmd)
    index_app = typer.Typer(help="Extension indexes: publish one, follow others.")
    index_app.command("build")(index_build_cmd)
    index_app.command("add")(index_add_cmd)
    index_app.command("list")(index_list_cmd)
    index_app.command("update")(index_update_cmd)
    index_app.command("remove")(index_remove_cmd)
    app.add_typer(index_app, name="index")


def _short(commit: str | None) -> str:
    return commit[:10] if commit else "nothing to commit"


# --- bundles --------------------------------------------------------------------------------


@handled
def export_cmd(
    name: str,
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Bundle file or folder (default ./NAME-VERSION.tar.gz)."
    ),
    registry: Path | None = RegistryOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Write an extension as a .tar.gz bundle with sha256 checksums (bundle.json)."""
    registry_dir = load_settings(registry=registry).registry
    with progress(f"exporting {name}"):
        result = bundle.export_bundle(registry_dir, name, output)
    text = (
        f"exported {result.name} {result.version} to {result.path} "
        f"({len(result.files)} files, sha256 {result.sha256})"
    )
    emit(json_out, result.as_dict(), text)


@handled
def import_cmd(
    file: Path,
    replace: bool = typer.Option(False, "--replace", help="Overwrite an extension of that name."),
    max_file_mib: float = typer.Option(20, "--max-file-mib", min=0.001, help="Per-file cap."),
    max_total_mib: float = typer.Option(50, "--max-total-mib", min=0.001, help="Total cap."),
    registry: Path | None = RegistryOpt,
    author: str | None = AuthorOpt,
    amqp_url: str | None = AmqpOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Verify a bundle and add its extension to the registry (one commit); refuses unsafe ones."""
    settings = load_settings(registry=registry, amqp_url=amqp_url)
    limits = bundle.BundleLimits(
        max_member_bytes=int(max_file_mib * _MIB), max_total_bytes=int(max_total_mib * _MIB)
    )
    with progress(f"verifying and importing {file}"):
        result = bundle.import_bundle(
            settings.registry,
            file,
            replace=replace,
            limits=limits,
            author=(Author.parse(author) if author else None),
        )
    notify(settings, result.name, "import", result.commit)
    verb = "replaced" if result.replaced else "imported"
    text = (
        f"{verb} {result.name} {result.version} from {file} "
        f"({len(result.files)} files verified) ({_short(result.commit)})"
    )
    emit(json_out, result.as_dict(), text)


# --- Git ------------------------------------------------------------------------------------


@handled
def install_cmd(
    target: str = typer.Argument(..., metavar="GIT_URL[@REF]"),
    ref: str | None = typer.Option(None, "--ref", help="Tag, branch or commit (or URL@REF)."),
    subdir: str | None = typer.Option(None, "--subdir", help="Extension folder in the repo."),
    name: str | None = typer.Option(None, "--name", help="Install under this name."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite an extension of that name."),
    registry: Path | None = RegistryOpt,
    author: str | None = AuthorOpt,
    amqp_url: str | None = AmqpOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Install an extension from a Git repository, pinned to the commit REF resolves to."""
    settings = load_settings(registry=registry, amqp_url=amqp_url)
    with progress(f"cloning {target} and validating"):
        result = install.install_extension(
            settings.registry, target, ref=ref, subdir=subdir, name=name, replace=replace,
            author=(Author.parse(author) if author else None),
        )  # fmt: skip
    notify(settings, result.name, "install", result.registry_commit)
    at = f"@{result.ref}" if result.ref else ""
    text = (
        f"installed {result.name} {result.version} from {result.url}{at} "
        f"(commit {result.commit[:10]}) ({_short(result.registry_commit)})"
    )
    emit(json_out, result.as_dict(), text)


@handled
def update_cmd(
    name: str,
    ref: str | None = typer.Option(
        None, "--ref", help="Move to this ref (default: newest version tag, or the branch tip)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Apply without asking."),
    registry: Path | None = RegistryOpt,
    author: str | None = AuthorOpt,
    amqp_url: str | None = AmqpOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Update a Git-installed extension: show the diff, then apply (--yes, or confirm)."""
    settings = load_settings(registry=registry, amqp_url=amqp_url)

    def confirm(plan: install.UpdatePlan) -> bool:
        if yes:
            return True
        if json_out or not sys.stdin.isatty():
            return False
        step.stop()  # the question replaces the spinner
        typer.echo(_plan_text(plan))
        return typer.confirm(f"Apply this update to {plan.name}?", default=False)

    with progress(f"fetching {name}'s repository") as step:
        result = install.update_extension(
            settings.registry,
            name,
            ref=ref,
            confirm=confirm,
            author=(Author.parse(author) if author else None),
        )
    notify(settings, name, "update", result.registry_commit)
    plan = result.plan
    if json_out:
        emit(True, result.as_dict(), "")
    elif plan.up_to_date:
        typer.echo(
            f"{name} is up to date ({plan.to_ref or 'default branch'}, {plan.to_commit[:10]})"
        )
    elif result.applied:
        if yes:
            typer.echo(_plan_text(plan))
        typer.echo(f"updated {name} ({_short(result.registry_commit)})")
    else:
        typer.echo(_plan_text(plan))
    if not plan.up_to_date and not result.applied:
        fail(f"update of {name} not applied", f"re-run with --yes (csext update {name} --yes)")


def _plan_text(plan: install.UpdatePlan) -> str:
    head = (
        f"{plan.name}: {plan.from_version} ({plan.from_ref or '-'}, "
        f"{(plan.from_commit or '-')[:10]}) -> {plan.to_version} "
        f"({plan.to_ref or 'default branch'}, {plan.to_commit[:10]}) from {plan.url}"
    )
    return f"{head}\n{plan.diff}".rstrip("\n")


# --- discovery ------------------------------------------------------------------------------


def _home() -> index.IndexHome:
    return index.IndexHome.from_environ(os.environ)


@handled
def index_build_cmd(
    directory: Path = typer.Argument(..., metavar="DIR"),
    output: Path | None = typer.Option(
        None, "--output", "-o", help=f"Index file (default DIR/{index.INDEX_FILE})."
    ),
    repo: str | None = typer.Option(
        None, "--repo", help="Git URL others clone (default: the origin remote of DIR)."
    ),
    ref: str | None = typer.Option(None, "--ref", help="Tag each entry installs (e.g. v1.2.0)."),
    json_out: bool = JsonOpt,
) -> None:
    """Build a csext-index.yaml from a folder of extensions, to publish in a Git repository."""
    with progress(f"validating the extensions in {directory}"):
        result = index.build_index(directory, output, repo=repo, ref=ref)
    for problem in result.problems:
        warn(problem)
    names = ", ".join(e.name for e in result.index.extensions) or "none"
    text = f"wrote {result.output}: {len(result.index.extensions)} extensions ({names})"
    emit(json_out, result.as_dict(), text)


@handled
def index_add_cmd(
    url: str = typer.Argument(..., metavar="URL", help="Git repo, index file or folder."),
    name: str | None = typer.Option(None, "--name", help="Short name for this index."),
    json_out: bool = JsonOpt,
) -> None:
    """Follow an index (a Git repository with csext-index.yaml, or a local index file)."""
    home = _home()
    with progress(f"fetching {url}"):
        source, count = index.add_index(home, url, name)
    data = {**source.as_dict(), "extensions": count, "config": str(home.config_file)}
    emit(json_out, data, f"added index {source.name} ({source.kind}, {count} extensions)")


@handled
def index_list_cmd(json_out: bool = JsonOpt) -> None:
    """List the indexes followed, with the size and age of their cached copies."""
    statuses = index.list_indexes(_home())
    rows = [
        [s.source.name, s.source.kind, str(s.extensions or 0), s.fetched or "never",
         s.as_dict()["url"] + (f"  (error: {s.error})" if s.error else "")]
        for s in statuses
    ]  # fmt: skip
    text = table(rows, ["NAME", "KIND", "EXTENSIONS", "FETCHED", "URL"])
    emit(json_out, [s.as_dict() for s in statuses], text)


@handled
def index_update_cmd(json_out: bool = JsonOpt) -> None:
    """Fetch every followed index again (search uses the cached copies)."""
    with progress("fetching the followed indexes"):
        statuses = index.update_indexes(_home())
    lines = [
        f"{s.source.name}: " + (f"error: {s.error}" if s.error else f"{s.extensions} extensions")
        for s in statuses
    ]
    emit(json_out, [s.as_dict() for s in statuses], "\n".join(lines) or "(no index added)")
    if any(s.error for s in statuses):
        raise typer.Exit(1)


@handled
def index_remove_cmd(name: str, json_out: bool = JsonOpt) -> None:
    """Stop following an index (its cached copy is deleted)."""
    source = index.remove_index(_home(), name)
    emit(json_out, source.as_dict(), f"removed index {source.name}")


@handled
def search_cmd(
    term: str = typer.Argument(..., help="Matched in names, descriptions and tags ('' = all)."),
    hook: str | None = typer.Option(None, "--hook", metavar="HOOK", help="Only this hook type."),
    json_out: bool = JsonOpt,
) -> None:
    """Search the followed indexes; prints how to install each hit."""
    wanted = hook_option(hook).value if hook else None
    result = index.search(_home(), term, wanted)
    for problem in result.problems:
        warn(problem)
    emit(json_out, result.as_dict(), _search_text(result))


def _search_text(result: index.SearchResult) -> str:
    if not result.hits:
        return "no extension matches (csext index update fetches the indexes again)"
    rows = [
        [h.entry.name, h.entry.hook, h.entry.version, h.index, h.entry.description]
        for h in result.hits
    ]
    lines = table(rows, ["NAME", "HOOK", "VERSION", "INDEX", "DESCRIPTION"]).splitlines()
    out = [lines[0]]
    for line, hit in zip(lines[1:], result.hits, strict=True):
        command = hit.entry.install_command() or "(no repo in the index: cannot install)"
        out += [line, f"    {command}"]
    return "\n".join(out)
