"""The web UI in a real browser (Debian's chromium through Playwright), end to end.

One `csext serve` process, one `csext worker` process, real RabbitMQ, a Git registry in tmp: an
operator signs in, scaffolds an extension, edits it (a refused save first), tests it, enables it
and sees an event's run, disables it, reads the diff and rolls back, exports, removes and imports
it, installs one from a local Git repository through Discover, and replays a dead letter.
The pages it passes through are saved to docs/screenshots/ (the README shows them).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from _store_helpers import commit_all, make_repo
from _store_helpers import write_extension as write_store_extension
from conftest import WebSetup, make_setup
from workerkit import (
    consumers_at_least,
    delete_extension_queues,
    publish_event,
    start_worker_process,
    stop_process,
    wait_until,
)

from csext.schemas.event import build_routing_key
from csext.store import git, index
from csext.worker.amqp import names as c

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DEMO = "web-demo"
DOOMED = "doomed"

pytestmark = [
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.timeout(300),  # ~75 s alone; a loaded 2-core machine can double it
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs chromium: scripts/ensure-test-tools.sh"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def doomed_extension(registry: Path) -> None:
    """Enabled, fails every time, one attempt: its events become dead letters."""
    folder = registry / DOOMED
    folder.mkdir()
    (folder / "run").write_text("#!/bin/sh\necho 'upstream API down' >&2\nexit 7\n")
    (folder / "run").chmod(0o755)
    manifest = {
        "apiVersion": "csext/v1",
        "kind": "Extension",
        "metadata": {"name": DOOMED, "version": "1.0.0", "description": "Always fails"},
        "spec": {
            "hook": "event",
            "entrypoint": "run",
            "events": {"patterns": ["management-server.AlertEvent.#"]},
            "retry": {"attempts": 1},
        },
    }
    (folder / "extension.yaml").write_text(yaml.safe_dump(manifest))
    git.commit_paths(registry, [DOOMED], f"new {DOOMED}")


def git_index(root: Path, web: WebSetup) -> None:
    """A Git repository publishing one extension at tag v1.0.0, followed as an index."""
    repo = make_repo(root / "upstream")
    write_store_extension(repo / "git-echo", "git-echo", "1.0.0", description="Echo from Git")
    commit_all(repo, "git-echo 1.0.0", tag="v1.0.0")
    index.build_index(repo, None, repo=str(repo), ref="v1.0.0")
    commit_all(repo, "index")
    index.add_index(web.config.index_home, str(repo), "team")


@pytest.fixture
def stack(tmp_path: Path, amqp_url: str, unique: str) -> Iterator[tuple[WebSetup, str]]:
    web = make_setup(tmp_path, amqp_url, f"{unique}-events")
    doomed_extension(web.registry)
    git_index(tmp_path, web)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    env.update(
        CSEXT_REGISTRY=str(web.registry),
        CSEXT_AMQP_URL=amqp_url,
        CSEXT_SECRETS_FILE=str(web.settings.secrets_file),
        CSEXT_CLOUDSTACK_EXCHANGE=web.settings.cloudstack_exchange,
        CSEXT_RUN_DIR=str(tmp_path / "serve-runs"),
        CSEXT_CONFIG=str(tmp_path / "no-config.yaml"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    serve_log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "csext.cli", "serve", "--port", str(port),
         "--token-file", str(web.config.token_file), "--log-level", "warning"],
        env=env, stdout=serve_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    worker = start_worker_process(
        web.settings, log=tmp_path / "worker.log", CSEXT_SECRETS_FILE=str(web.settings.secrets_file)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # a loaded 2-core machine imports slowly
        while True:
            try:
                if httpx.get(f"{base}/login", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (
                "csext serve did not answer within 90 s: " + (tmp_path / "serve.log").read_text()
            )
            time.sleep(0.2)
        yield web, base
    finally:
        stop_process(worker)
        stop_process(serve)
        serve_log.close()
        asyncio.run(delete_extension_queues(amqp_url, DEMO, DOOMED, "alpha", "git-echo"))


def threaded_child_watcher() -> None:
    """Playwright starts its driver from a loop of its own; a pidfd child watcher that an
    in-process worker of an earlier test attached to its (closed) loop would refuse."""
    if sys.version_info < (3, 12):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.get_event_loop_policy().set_child_watcher(asyncio.ThreadedChildWatcher())


def run_async(coroutine: Any) -> Any:
    """asyncio.run in a thread of its own: Playwright's sync API holds this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    if page.locator("#worker-pill").count():  # the worker state, not its loading state
        page.wait_for_selector("#worker-pill .pill:not(.pill-muted)")
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def flash(page, text: str) -> None:
    try:
        page.wait_for_selector(f".flash:has-text({text!r})", timeout=20_000)
    except Exception:
        raise AssertionError(
            f"no message {text!r} on {page.url}:\n{page.text_content('main')}"
        ) from None


def wait_for_text_after_reloads(page, selector: str, text: str, seconds: float = 30) -> None:
    """Reload until `selector` shows `text` (data that arrives through the broker)."""
    deadline = time.monotonic() + seconds
    while True:
        if text in (page.text_content(selector) or ""):
            return
        assert time.monotonic() < deadline, f"{text!r} never appeared in {selector}"
        page.wait_for_timeout(500)
        page.reload()


def test_an_operator_runs_the_store_from_the_browser(stack, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    web, base = stack
    threaded_child_watcher()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 1366, "height": 860}, accept_downloads=True
            )
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.on("dialog", lambda dialog: dialog.accept())
            sign_in(page, base, web.token)
            scaffold_edit_and_test(page, base)
            enable_run_disable(page, base, web)
            diff_and_rollback(page)
            export_remove_import(page, tmp_path)
            discover_and_install(page, base)
            replay_a_dead_letter(page, base, web)
            page.goto(f"{base}/runs")
            shot(page, "runs")
            page.goto(f"{base}/")
            page.wait_for_selector("#worker-pill .pill-ok")
            shot(page, "extensions")
        finally:
            browser.close()


def sign_in(page, base: str, token: str) -> None:
    page.goto(f"{base}/x/alpha")
    assert "/login" in page.url
    shot(page, "login")
    page.fill("input[name=token]", "not-the-token")
    page.fill("input[name=name]", "Ada Operator")
    page.fill("input[name=email]", "ada@example.org")
    page.click("button[type=submit]")
    flash(page, "not valid")
    page.fill("input[name=token]", token)
    page.fill("input[name=name]", "Ada Operator")
    page.fill("input[name=email]", "ada@example.org")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/x/alpha")
    page.wait_for_selector("#worker-pill .pill-ok")  # the worker process is attached


def scaffold_edit_and_test(page, base: str) -> None:
    page.click("nav >> text=New")
    page.fill("input[name=name]", DEMO)
    page.select_option("select[name=hook]", "event")
    page.select_option("select[name=lang]", "bash")
    page.click("button:has-text('Create extension')")
    page.wait_for_url(f"{base}/x/{DEMO}/edit?new=1")
    flash(page, f"created {DEMO}")
    page.click("#test-now")  # the scaffold's own cases, in one click
    page.wait_for_selector("#result .case")
    assert "0 failed" in (page.text_content("#result .summary") or "")
    page.goto(f"{base}/x/{DEMO}/edit")
    page.wait_for_selector("body.has-editor")

    page.click("#code")
    page.keyboard.press("Control+A")
    page.keyboard.insert_text("echo no shebang here\n")
    page.click("#save")
    flash(page, "no '#!' line")  # refused inline, nothing saved, the text kept
    assert "no shebang here" in page.input_value("#content")

    script = (
        "#!/usr/bin/env bash\n"
        "# edited in the browser\n"
        'echo "handled $1"\n'
        'echo \'{"status":"success","message":"edited"}\'\n'
    )
    page.wait_for_selector("body.has-editor")
    page.click("#code")
    page.keyboard.press("Control+A")
    paste(page, "#code", script)
    page.click("#validate")
    page.wait_for_selector("#problems .flash-ok")
    shot(page, "editor")
    page.keyboard.press("Control+S")
    flash(page, "saved (")

    page.click("a:has-text('Test')")
    page.click("#run-test")
    page.wait_for_selector("#result .case")
    result = page.text_content("#result") or ""
    assert "passed, 0 failed" in result and "handled ResourceStateEvent" in result, result
    assert "exit code 0" in result
    page.check("input[value=adhoc]")
    page.fill("#action", "ResourceStateEvent")
    page.fill("#payload", '{"routing_key": "x"}')
    page.click("#run-test")
    page.wait_for_selector("#result .case >> text=adhoc")
    shot(page, "test-panel")


def paste(page, selector: str, text: str) -> None:
    """What pasting from the clipboard does (headless Chromium has no clipboard to use)."""
    page.eval_on_selector(
        selector,
        """(el, text) => { const data = new DataTransfer(); data.setData("text/plain", text);
            el.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true,
            cancelable: true})); }""",
        text,
    )


def enable_run_disable(page, base: str, web: WebSetup) -> None:
    page.goto(f"{base}/x/{DEMO}")
    page.click("button:has-text('Disabled — enable')")
    flash(page, "enabled (")
    assert page.text_content("h1 .status") == "enabled"
    amqp = web.settings.amqp_url
    run_async(
        wait_until(lambda: consumers_at_least(amqp, c.events_queue(DEMO), 1), 30, "the consumer")
    )
    key = build_routing_key("ResourceStateEvent", "OperationSucceeded", "VirtualMachine", "vm-42")
    body = (
        b'{"resource":"VirtualMachine","id":"vm-42","old-state":"Starting","new-state":"Running"}'
    )
    run_async(publish_event(amqp, web.settings.cloudstack_exchange, key, body))
    wait_for_text_after_reloads(page, ".cols", "success")
    shot(page, "extension")
    page.click(".cols a[href^='/runs/']")
    page.wait_for_selector("text=handled ResourceStateEvent")
    page.go_back()
    page.click("button:has-text('Enabled — disable')")
    flash(page, "disabled (")
    assert page.text_content("h1 .status") == "disabled"


def diff_and_rollback(page) -> None:
    page.click("#t-history")
    rows = page.locator("#tab-history tbody tr")
    assert rows.count() >= 4  # new, edit, enable, disable
    rows.nth(rows.count() - 1).locator("a:has-text('diff to now')").click()
    page.wait_for_selector("#tab-history pre.diff")
    assert "edited in the browser" in (page.text_content("pre.diff") or "")
    shot(page, "history-diff")
    rows = page.locator("#tab-history tbody tr")
    rows.nth(rows.count() - 1).locator("button:has-text('roll back here')").click()
    flash(page, "rolled back to")
    page.click("#t-history")
    assert "rollback web-demo" in (page.text_content("#tab-history") or "")


def export_remove_import(page, tmp_path: Path) -> None:
    with page.expect_download() as download:
        page.click("a:has-text('Export')")
    bundle = tmp_path / "web-demo.tar.gz"
    download.value.save_as(bundle)
    assert bundle.stat().st_size > 200
    page.click("summary:has-text('Remove')")
    page.click(f"button:has-text('Remove {DEMO}')")
    flash(page, f"removed {DEMO}")
    assert page.locator(f"a:has-text('{DEMO}')").count() == 0
    page.click("summary:has-text('Import bundle')")
    page.set_input_files("input[type=file]", str(bundle))
    page.click("form[action='/import'] button[type=submit]")
    flash(page, f"imported {DEMO}")
    assert page.url.endswith(f"/x/{DEMO}")


def discover_and_install(page, base: str) -> None:
    page.click("nav >> text=Discover")
    page.fill("input[name=q]", "echo")
    page.click("button:has-text('Search')")
    page.wait_for_selector(".hit:has-text('git-echo')")
    shot(page, "discover")
    hit = page.locator(".hit:has-text('git-echo')")
    assert hit.locator("input[name=ref]").input_value() == "v1.0.0"
    hit.locator("button:has-text('Install git-echo')").click()
    flash(page, "installed git-echo 1.0.0")
    assert page.url == f"{base}/x/git-echo"


def replay_a_dead_letter(page, base: str, web: WebSetup) -> None:
    key = build_routing_key("AlertEvent", "ALERT.HOST", "Host", "host-1")
    run_async(
        publish_event(web.settings.amqp_url, web.settings.cloudstack_exchange, key, b'{"a":1}')
    )
    page.goto(f"{base}/dead?extension={DOOMED}")
    wait_for_text_after_reloads(page, "main", "retries-exhausted")
    assert "upstream API down" in (page.text_content("main") or "")
    shot(page, "dead-letters")
    page.click(f"button:has-text('Replay {DOOMED}')")
    flash(page, "replayed 1 dead letters")
