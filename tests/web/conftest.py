"""Fixtures for the web tests: a Git registry with a secret planted, the app, signed-in clients."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: workerkit

from csext.schemas.manifest import HookType
from csext.store import ops, scaffold
from csext.store.git import Author
from csext.store.index import IndexHome
from csext.web import auth
from csext.web.app import create_app
from csext.web.service import WebConfig
from csext.worker.settings import Settings

SECRET = "pl4nted-s3cret-VALUE-zq"
"""A secret value no response may ever carry (the secret extension prints it)."""

AUTHOR = "Ada Operator <ada@example.org>"


@dataclass
class WebSetup:
    root: Path
    registry: Path
    settings: Settings
    config: WebConfig
    token: str
    store: ops.Store


def secret_extension(registry: Path, name: str = "keeper") -> None:
    """An enabled event extension that prints its secret to stdout and stderr."""
    folder = registry / name
    (folder / "tests").mkdir(parents=True)
    (folder / "run.sh").write_text(
        '#!/bin/sh\necho "token=$API_TOKEN"\necho "err $API_TOKEN" >&2\n'
        'echo \'{"status":"success"}\'\n'
    )
    (folder / "run.sh").chmod(0o755)
    manifest = {
        "apiVersion": "csext/v1",
        "kind": "Extension",
        "metadata": {"name": name, "version": "1.0.0", "description": "holds a secret"},
        "spec": {
            "hook": "orchestrator",
            "entrypoint": "run.sh",
            "secrets": ["API_TOKEN"],
            "enabled": False,
        },
    }
    (folder / "extension.yaml").write_text(yaml.safe_dump(manifest))
    (folder / "README.md").write_text(
        "# keeper\n\n<script>alert('x')</script> and [bad](javascript:alert(1))\n"
    )
    (folder / "tests" / "start.yaml").write_text(
        "action: start\npayload: {}\nexpect: {outcome: success}\n"
    )


def make_setup(root: Path, amqp_url: str, exchange: str, **limits: int) -> WebSetup:
    registry = root / "registry"
    registry.mkdir(parents=True)
    secrets_file = root / "secrets" / "secrets.yaml"
    secrets_file.parent.mkdir()
    settings = Settings(
        amqp_url=amqp_url,
        registry=registry,
        secrets_file=secrets_file,
        cloudstack_exchange=exchange,
        run_dir=root / "runs",
        kill_grace=0.5,
    )
    store = ops.Store(registry, secrets_file, Author("setup", "setup@example.org"))
    scaffold.new(store, "alpha", HookType.EVENT)
    scaffold.new(store, "bravo", HookType.TWO_FACTOR, scaffold.Language.PYTHON)
    secret_extension(registry)
    ops.commit(store, "keeper", "new", "new keeper")
    ops.set_secret(store, "keeper", "API_TOKEN", SECRET)
    config = WebConfig(
        settings=settings,
        token_file=root / "secrets" / "web-token",
        index_home=IndexHome.from_environ(  # what csext serve reads from XDG_* in the browser test
            {"XDG_CONFIG_HOME": str(root / "config"), "XDG_CACHE_HOME": str(root / "cache")}
        ),
        **limits,
    )
    token, _ = auth.ensure_token(config.token_file)
    return WebSetup(root, registry, settings, config, token, store)


@pytest.fixture
def web(tmp_path: Path, amqp_url: str, unique: str) -> WebSetup:
    return make_setup(
        tmp_path, amqp_url, f"{unique}-events", max_body=64 * 1024, max_upload=256 * 1024
    )


@pytest.fixture
async def client(web: WebSetup) -> AsyncIterator[httpx.AsyncClient]:
    """Anonymous client of the app (no token, no session)."""
    app = create_app(web.config)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def api_headers(web: WebSetup) -> dict[str, str]:
    """What an API client with the token sends on a write."""
    return {"Authorization": f"Bearer {web.token}", "X-Csext-Author": AUTHOR}


async def sign_in(client: httpx.AsyncClient, token: str) -> str:
    """Sign in like the browser; returns the session's CSRF token (the cookie stays in client)."""
    done = await client.post(
        "/login", data={"token": token, "name": "Ada Operator", "email": "ada@example.org"}
    )
    assert done.status_code == 303, done.text
    page = await client.get("/")
    found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)
