"""The `csext` command line: a thin layer that parses, builds settings and calls the library."""

from __future__ import annotations

import typer

from . import cli_bundles, cli_forward, cli_hooks, cli_store

app = typer.Typer(
    name="csext",
    help="Extend Apache CloudStack with small programs in any language.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (cli_store, cli_bundles, cli_hooks, cli_forward):
    _module.register(app)
