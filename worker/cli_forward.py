"""CLI commands: forward (registered into the main app by worker/cli.py)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main `csext` app."""
