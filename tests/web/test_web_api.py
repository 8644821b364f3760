"""The HTTP API (/api/v1) through httpx against the real app: store on disk, Git, RabbitMQ."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from _store_helpers import commit_all, make_repo
from _store_helpers import write_extension as write_store_extension
from conftest import AUTHOR, SECRET, WebSetup, sign_in
from workerkit import delete_extension_queues, publish_event, running_worker, wait_until

from csext.schemas.event import build_routing_key
from csext.store import git, index
from csext.web import auth

API = "/api/v1"


def no_secret(response: httpx.Response) -> httpx.Response:
    assert SECRET.encode() not in response.content, f"{response.request.url} leaked the secret"
    return response


async def test_reads_list_filter_show_and_openapi(client: httpx.AsyncClient) -> None:
    listed = no_secret(await client.get(f"{API}/extensions")).json()
    assert [e["name"] for e in listed["extensions"]] == ["alpha", "bravo", "keeper"]
    alpha = listed["extensions"][0]
    assert alpha["status"] == "disabled" and alpha["hook"] == "event"
    assert alpha["compatibility"].startswith("csext >=")
    only = (await client.get(f"{API}/extensions", params={"hook": "two-factor"})).json()
    assert [e["name"] for e in only["extensions"]] == ["bravo"]
    found = (await client.get(f"{API}/extensions", params={"q": "secret"})).json()
    assert [e["name"] for e in found["extensions"]] == ["keeper"]
    enabled = (await client.get(f"{API}/extensions", params={"status": "enabled"})).json()
    assert enabled["extensions"] == []

    shown = no_secret(await client.get(f"{API}/extensions/keeper")).json()
    assert shown["secrets"]["declared"] == ["API_TOKEN"] and shown["secrets"]["set"] == [
        "API_TOKEN"
    ]
    assert shown["cases"] == ["start"] and "last_runs" not in shown
    content = (await client.get(f"{API}/extensions/alpha/content")).json()
    assert content["path"] == "alpha.sh" and content["content"].startswith("#!")
    report = (await client.get(f"{API}/extensions/alpha/validate")).json()
    assert report["ok"] is True
    history = (await client.get(f"{API}/extensions/alpha/history")).json()["commits"]
    assert history[0]["subject"].startswith("new alpha")
    assert (await client.get(f"{API}/history")).json()["commits"]
    diff = (await client.get(f"{API}/extensions/alpha/diff")).json()
    assert "+++ b/alpha/alpha.sh" in diff["diff"]

    schema = (await client.get(f"{API}/openapi.json")).json()
    assert "/api/v1/extensions/{name}/rollback" in schema["paths"]
    page = await client.get("/login")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    missing = await client.get(f"{API}/extensions/nope")
    assert missing.status_code == 404 and "csext list" in missing.json()["error"]


async def test_writes_need_the_token_and_a_csrf_token_with_a_session(
    client: httpx.AsyncClient, web: WebSetup, api_headers: dict[str, str]
) -> None:
    body = {"name": "charlie", "hook": "event"}
    anonymous = await client.post(f"{API}/extensions", json=body)
    assert anonymous.status_code == 401 and anonymous.json()["field"] == "authorization"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    wrong = await client.post(
        f"{API}/extensions", json=body, headers={"Authorization": "Bearer nope" * 4}
    )
    assert wrong.status_code == 401
    for path in ("/runs", "/runs/x", "/dead", "/dead/0"):
        assert (await client.get(f"{API}{path}")).status_code == 401, path
    assert (await client.post(f"{API}/dead/replay", json={})).status_code == 401

    no_author = await client.post(
        f"{API}/extensions", json=body, headers={"Authorization": f"Bearer {web.token}"}
    )
    assert no_author.status_code == 400 and no_author.json()["field"] == auth.AUTHOR_HEADER
    made = await client.post(f"{API}/extensions", json=body, headers=api_headers)
    assert made.status_code == 201, made.text
    assert made.json()["commit"] and made.json()["change"] == "new"
    [last] = git.log_entries(web.registry, "charlie", 1)
    assert (last.author, last.email) == ("Ada Operator", "ada@example.org")

    csrf = await sign_in(client, web.token)  # the browser: a session cookie from now on
    no_csrf = await client.post(f"{API}/extensions/charlie/enable")
    assert no_csrf.status_code == 403 and no_csrf.json()["field"] == auth.CSRF_HEADER
    bad_csrf = await client.post(
        f"{API}/extensions/charlie/enable", headers={auth.CSRF_HEADER: "x" * 40}
    )
    assert bad_csrf.status_code == 403
    ok = await client.post(f"{API}/extensions/charlie/enable", headers={auth.CSRF_HEADER: csrf})
    assert ok.status_code == 200 and ok.json()["change"] == "enable"
    [last] = git.log_entries(web.registry, "charlie", 1)
    assert last.subject == "enable charlie" and last.author == "Ada Operator"

    auth.rotate_token(web.config.token_file)  # the old token and its session stop working
    assert (await client.get(f"{API}/runs")).status_code == 401
    stale = await client.post(f"{API}/extensions/charlie/disable", headers=api_headers)
    assert stale.status_code == 401


async def test_session_cookie_is_httponly_samesite_strict(
    client: httpx.AsyncClient, web: WebSetup
) -> None:
    refused = await client.post("/login", data={"token": "wrong", "name": "a", "email": "a@b"})
    assert refused.status_code == 401 and "not valid" in refused.text
    done = await client.post(
        "/login", data={"token": web.token, "name": "Ada", "email": "ada@example.org"}
    )
    cookie = done.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert done.headers["location"] == "/"
    evil = await client.post(
        "/login",
        data={"token": web.token, "name": "Ada", "email": "a@b.c", "next": "//evil.example"},
    )
    assert evil.headers["location"] == "/"


async def test_edit_validate_enable_disable_rollback_remove(
    client: httpx.AsyncClient, web: WebSetup, api_headers: dict[str, str]
) -> None:
    bad = await client.put(
        f"{API}/extensions/alpha/content", json={"content": "echo hi\n"}, headers=api_headers
    )
    assert bad.status_code == 400 and "#!" in bad.json()["error"]
    checked = await client.post(
        f"{API}/extensions/alpha/check",
        json={"content": "#!/usr/bin/env bash\nif then\n"},
        headers=api_headers,
    )
    assert checked.json()["ok"] is False and checked.json()["problems"]
    text = '#!/usr/bin/env bash\necho \'{"status":"success"}\'\n'
    saved = await client.put(
        f"{API}/extensions/alpha/content", json={"content": text}, headers=api_headers
    )
    assert saved.status_code == 200 and saved.json()["commit"], saved.text
    assert (web.registry / "alpha" / "alpha.sh").read_text() == text

    path = await client.put(
        f"{API}/extensions/alpha/path", json={"path": "relative/x"}, headers=api_headers
    )
    assert path.status_code == 400 and "absolute" in path.json()["error"]
    enabled = await client.post(f"{API}/extensions/alpha/enable", headers=api_headers)
    assert enabled.json()["change"] == "enable"
    again = await client.post(f"{API}/extensions/alpha/enable", headers=api_headers)
    assert again.json()["commit"] is None and "already" in again.json()["message"]
    disabled = await client.post(f"{API}/extensions/alpha/disable", headers=api_headers)
    assert disabled.json()["change"] == "disable"

    history = (await client.get(f"{API}/extensions/alpha/history")).json()["commits"]
    first = history[-1]["sha"]
    since = (await client.get(f"{API}/extensions/alpha/diff", params={"rev": first})).json()
    assert 'echo \'{"status":"success"}\'' in since["diff"]
    between = await client.get(
        f"{API}/extensions/alpha/diff", params={"rev": first, "to": saved.json()["commit"]}
    )
    assert "success" in between.json()["diff"] and between.json()["to"] == saved.json()["commit"]
    assert "enabled: true" not in between.json()["diff"]  # the enable came after that version
    back = await client.post(
        f"{API}/extensions/alpha/rollback", json={"rev": first}, headers=api_headers
    )
    assert back.status_code == 200 and back.json()["change"] == "rollback"
    assert (web.registry / "alpha" / "alpha.sh").read_text() != text
    unknown = await client.post(
        f"{API}/extensions/alpha/rollback", json={"rev": "deadbeef"}, headers=api_headers
    )
    assert unknown.status_code == 400 and "csext history" in unknown.json()["error"]

    external = await client.put(
        f"{API}/extensions/alpha/path", json={"path": "/bin/true"}, headers=api_headers
    )
    assert external.status_code == 200 and external.json()["change"] == "set-path"
    assert (await client.get(f"{API}/extensions/alpha/content")).json()["external"] is True
    removed = await client.delete(f"{API}/extensions/alpha", headers=api_headers)
    assert removed.json()["change"] == "remove"
    assert (await client.get(f"{API}/extensions/alpha")).status_code == 404


async def test_test_endpoint_runs_cases_and_adhoc_payloads_with_secrets_masked(
    client: httpx.AsyncClient, api_headers: dict[str, str]
) -> None:
    ran = no_secret(
        await client.post(f"{API}/extensions/keeper/test", json={}, headers=api_headers)
    )
    result = ran.json()
    assert result["passed"] == 1 and result["failed"] == 0, result
    [case] = result["results"]
    assert case["exit_code"] == 0 and "token=***" in case["stdout"] and "err ***" in case["stderr"]
    assert case["duration_ms"] >= 0 and case["outcome"] == "success"

    adhoc = await client.post(
        f"{API}/extensions/bravo/test",
        json={"action": "check", "payload": {"code": "123456"}},
        headers=api_headers,
    )
    assert adhoc.status_code == 200, adhoc.text
    assert adhoc.json()["results"][0]["action"] == "check"
    both = await client.post(
        f"{API}/extensions/bravo/test", json={"case": "x", "action": "y"}, headers=api_headers
    )
    assert both.status_code == 400 and both.json()["field"] == "case"
    orphan = await client.post(
        f"{API}/extensions/bravo/test", json={"payload": {}}, headers=api_headers
    )
    assert orphan.status_code == 400 and orphan.json()["field"] == "action"
    no_case = await client.post(
        f"{API}/extensions/bravo/test", json={"case": "nope"}, headers=api_headers
    )
    assert no_case.status_code == 400 and "cases:" in no_case.json()["error"]


async def test_bad_input_gets_4xx_naming_the_field(
    client: httpx.AsyncClient, api_headers: dict[str, str]
) -> None:
    hook = await client.post(
        f"{API}/extensions", json={"name": "x1", "hook": "nonsense"}, headers=api_headers
    )
    assert hook.status_code == 400 and hook.json()["field"] == "hook"
    assert "two-factor" in hook.json()["error"]
    extra = await client.post(
        f"{API}/extensions", json={"name": "x1", "hook": "event", "colour": 1}, headers=api_headers
    )
    assert extra.status_code == 400 and "remove it" in extra.json()["error"]
    name = await client.post(
        f"{API}/extensions", json={"name": "Bad Name", "hook": "event"}, headers=api_headers
    )
    assert name.status_code == 400 and "lower case" in name.json()["error"]
    taken = await client.post(
        f"{API}/extensions", json={"name": "alpha", "hook": "event"}, headers=api_headers
    )
    assert taken.status_code == 409 and "already exists" in taken.json()["error"]
    broken = await client.post(
        f"{API}/extensions",
        content=b"{not json",
        headers={**api_headers, "content-type": "application/json"},
    )
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]
    since = await client.get(
        f"{API}/runs",
        params={"since": "soon"},
        headers={"Authorization": api_headers["Authorization"]},
    )
    assert since.status_code == 400 and since.json()["field"] == "since"
    status = await client.get(f"{API}/extensions", params={"status": "sleepy"})
    assert status.status_code == 400 and status.json()["field"] == "status"
    search = await client.get(f"{API}/index/search", params={"q": "x"})
    assert search.status_code == 400 and "csext index add" in search.json()["error"]


async def test_oversize_requests_get_413(
    client: httpx.AsyncClient, api_headers: dict[str, str]
) -> None:
    big = "#!/bin/sh\n" + "#" * (70 * 1024)
    too_big = await client.put(
        f"{API}/extensions/alpha/content", json={"content": big}, headers=api_headers
    )
    assert too_big.status_code == 413 and too_big.json()["field"] == "body"

    async def chunks():  # no Content-Length: counted as it arrives
        for _ in range(80):
            yield b"x" * 1024

    streamed = await client.put(
        f"{API}/extensions/alpha/content",
        content=chunks(),
        headers={**api_headers, "content-type": "application/json"},
    )
    assert streamed.status_code == 413
    upload = await client.post(
        f"{API}/import",
        files={"file": ("b.tar.gz", b"\0" * (300 * 1024), "application/gzip")},
        headers=api_headers,
    )
    assert upload.status_code == 413


async def test_export_then_import_round_trip(
    client: httpx.AsyncClient, web: WebSetup, api_headers: dict[str, str]
) -> None:
    exported = await client.get(f"{API}/extensions/bravo/export")
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "application/gzip"
    assert "bravo-0.1.0.tar.gz" in exported.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(exported.content)) as tar:
        assert "bravo/extension.yaml" in tar.getnames()
    await client.delete(f"{API}/extensions/bravo", headers=api_headers)

    files = {"file": ("bravo-0.1.0.tar.gz", exported.content, "application/gzip")}
    imported = await client.post(f"{API}/import", files=files, headers=api_headers)
    assert imported.status_code == 200, imported.text
    assert imported.json()["name"] == "bravo" and imported.json()["commit"]
    assert (web.registry / "bravo" / "bravo.py").is_file()
    clash = await client.post(f"{API}/import", files=files, headers=api_headers)
    assert clash.status_code == 409 and "replace" in clash.json()["error"]
    junk = await client.post(
        f"{API}/import",
        files={"file": ("x.tar.gz", b"not a tarball", "application/gzip")},
        headers=api_headers,
    )
    assert junk.status_code == 400


async def test_install_from_git_at_a_ref_and_index_search(
    client: httpx.AsyncClient, web: WebSetup, api_headers: dict[str, str], tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "upstream")
    write_store_extension(repo / "delta", "delta", "1.0.0", description="Delta from Git")
    commit_all(repo, "delta 1.0.0", tag="v1.0.0")
    write_store_extension(repo / "delta", "delta", "2.0.0", description="Delta from Git")
    commit_all(repo, "delta 2.0.0")
    index.build_index(repo, None, repo=str(repo), ref="v1.0.0")
    commit_all(repo, "index")
    index.add_index(web.config.index_home, str(repo), "local")

    found = (await client.get(f"{API}/index/search", params={"q": "delta"})).json()
    [hit] = found["results"]
    assert hit["name"] == "delta" and hit["ref"] == "v1.0.0" and hit["index"] == "local"
    listed = (await client.get(f"{API}/indexes")).json()["indexes"]
    assert listed[0]["name"] == "local"

    installed = await client.post(
        f"{API}/install",
        json={"url": hit["repo"], "ref": "v1.0.0", "subdir": hit["path"]},
        headers=api_headers,
    )
    assert installed.status_code == 200, installed.text
    assert installed.json()["version"] == "1.0.0" and installed.json()["registry_commit"]
    shown = (await client.get(f"{API}/extensions/delta")).json()
    assert shown["manifest"]["source"]["ref"] == "v1.0.0"
    nowhere = await client.post(
        f"{API}/install", json={"url": str(tmp_path / "missing")}, headers=api_headers
    )
    assert nowhere.status_code == 400


@pytest.mark.broker
async def test_runs_dead_letters_replay_and_workers_from_a_real_worker(
    client: httpx.AsyncClient, web: WebSetup, api_headers: dict[str, str], unique: str
) -> None:
    auth_only = {"Authorization": api_headers["Authorization"]}
    idle = (await client.get(f"{API}/workers")).json()
    assert idle["broker"] == "up" and idle["running"] is False
    await sign_in(client, web.token)
    assert "worker not running" in (await client.get("/ui/worker")).text
    failing = web.registry / unique
    failing.mkdir()
    (failing / "run").write_text(f"#!/bin/sh\necho 'fail {SECRET}' >&2\nexit 3\n")
    (failing / "run").chmod(0o755)
    (failing / "extension.yaml").write_text(
        orjson.dumps(
            {
                "apiVersion": "csext/v1",
                "kind": "Extension",
                "metadata": {"name": unique, "version": "1.0.0"},
                "spec": {
                    "hook": "event",
                    "entrypoint": "run",
                    "secrets": ["API_TOKEN"],
                    "events": {"patterns": ["management-server.ActionEvent.#"]},
                    "retry": {"attempts": 1},
                },
            }
        ).decode()
    )
    git.commit_paths(web.registry, [unique], f"new {unique}")
    from csext.store import ops

    ops.set_secret(web.store, unique, "API_TOKEN", SECRET)
    key = build_routing_key("ActionEvent", "VM.STOP", "VirtualMachine", "vm-9")
    try:
        async with running_worker(web.settings):
            assert "1 worker running" in (await client.get("/ui/worker")).text
            status = (await client.get(f"{API}/workers")).json()
            assert status["running"] is True and status["workers"] >= 1
            mine = next(e for e in status["extensions"] if e["name"] == unique)
            assert mine["consumed"] is True and mine["queue"]["queue"].endswith(".events")
            await publish_event(web.settings.amqp_url, web.settings.cloudstack_exchange, key, b"{}")

            async def dead_letters() -> list[dict]:
                reply = await client.get(
                    f"{API}/dead", params={"extension": unique}, headers=auth_only
                )
                return reply.json()["dead"]

            await wait_until(dead_letters, 30, "a dead letter")
        [dead] = await dead_letters()
        assert dead["reason"] == "retries-exhausted" and dead["exit_code"] == 3
        one = no_secret(
            await client.get(f"{API}/dead/0", params={"extension": unique}, headers=auth_only)
        )
        assert one.json()["extension"] == unique
        missing = await client.get(f"{API}/dead/5", params={"extension": unique}, headers=auth_only)
        assert missing.status_code == 404

        web_ops = client._transport.app.state.web.ops  # type: ignore[attr-defined]

        async def last_hour() -> dict:
            web_ops.forget_stats()  # not the 5 s cache: the record may arrive in a later batch
            listed = (await client.get(f"{API}/extensions", params={"stats": "true"})).json()
            return next(e for e in listed["extensions"] if e["name"] == unique)["last_hour"]

        await wait_until(lambda: _counted(last_hour()), 20, "the run in the statistics")
        counted = await last_hour()
        assert counted["runs"] == counted["failures"] == 1 and counted["last"] == "failed"
        status = (await client.get(f"{API}/workers")).json()
        [ran_on] = next(e for e in status["extensions"] if e["name"] == unique)["ran_on"]
        assert ran_on.endswith(f":{os.getpid()}")  # the in-process worker ran it
        runs = no_secret(
            await client.get(
                f"{API}/runs", params={"extension": unique, "since": "10m"}, headers=auth_only
            )
        ).json()["runs"]
        assert runs and runs[0]["outcome"] == "failed" and "***" in runs[0]["stderr_tail"]
        failed = (
            await client.get(
                f"{API}/runs", params={"outcome": "success", "extension": unique}, headers=auth_only
            )
        ).json()["runs"]
        assert failed == []
        run = no_secret(await client.get(f"{API}/runs/{runs[0]['run_id']}", headers=auth_only))
        assert run.json()["exit_code"] == 3
        assert (await client.get(f"{API}/runs/nope", headers=auth_only)).status_code == 404

        replayed = await client.post(
            f"{API}/dead/replay", json={"extension": unique}, headers=api_headers
        )
        assert replayed.json()["replayed"] == 1
        assert await dead_letters() == []
    finally:
        await delete_extension_queues(web.settings.amqp_url, unique)


async def _counted(stats: Any) -> bool:
    return bool((await stats)["runs"])


async def test_no_response_carries_the_planted_secret(
    client: httpx.AsyncClient, web: WebSetup, api_headers: dict[str, str]
) -> None:
    # Plant it where a careless handler could pick it up: a README and the entry point.
    readme = web.registry / "bravo" / "README.md"
    readme.write_text(readme.read_text() + f"\nold token: {SECRET}\n")
    csrf = await sign_in(client, web.token)
    pages = [
        "/", "/x/keeper", "/x/bravo", "/x/bravo/edit", "/x/keeper/test", "/new", "/discover",
    ]  # fmt: skip
    apis = [
        "/extensions", "/extensions/bravo", "/extensions/keeper", "/extensions/bravo/content",
        "/extensions/bravo/diff", "/extensions/keeper/validate", "/workers",
    ]  # fmt: skip
    for path in pages + [API + p for p in apis]:
        reply = no_secret(await client.get(path))
        assert reply.status_code == 200, path
    assert "old token: ***" in (await client.get(f"{API}/extensions/bravo")).json()["readme"]
    ran = no_secret(
        await client.post(
            "/x/keeper/test", data={"mode": "case", "case": "start", "csrf_token": csrf}
        )
    )
    assert "token=***" in ran.text
    unknown = await client.get("/x/nope")
    assert unknown.status_code == 404 and "no extension named" in unknown.text
    assert unknown.headers["content-type"].startswith("text/html")
    html = (await client.get("/x/keeper")).text
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert 'href="javascript:' not in html


async def test_pages_need_a_session(client: httpx.AsyncClient) -> None:
    for path in ("/", "/x/alpha", "/runs", "/dead", "/discover"):
        reply = await client.get(path)
        assert reply.status_code == 303 and reply.headers["location"].startswith("/login"), path
    fragment = await client.get("/ui/worker", headers={"HX-Request": "true"})
    assert fragment.status_code == 204 and fragment.headers["hx-redirect"] == "/login"
    login = await client.get("/login")
    assert login.status_code == 200 and 'name="token"' in login.text


async def test_two_writers_at_once_get_two_commits(
    client: httpx.AsyncClient, web: WebSetup, api_headers: dict[str, str]
) -> None:
    first, second = await asyncio.gather(
        client.post(
            f"{API}/extensions", json={"name": "echo1", "hook": "event"}, headers=api_headers
        ),
        client.post(
            f"{API}/extensions", json={"name": "echo2", "hook": "event"}, headers=api_headers
        ),
    )
    assert first.status_code == second.status_code == 201
    subjects = [c.subject for c in git.log_entries(web.registry, None, 2)]
    assert sorted(subjects) == [
        "new echo1: event extension (bash)",
        "new echo2: event extension (bash)",
    ]
    assert AUTHOR.startswith(git.log_entries(web.registry, None, 1)[0].author)
