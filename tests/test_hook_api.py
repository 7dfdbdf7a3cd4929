"""The hook's HTTP surface against a real uvicorn server on 127.0.0.1: auth, bad input,
coalescing, webhook, sign-in + CSRF, nightly, metrics. The queue is paused here (no
builds run), so these tests need no conda channel; test_hook_builds.py runs real builds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from support.clock import FakeClock
from support.hook import (
    TOKEN,
    WEBHOOK_SECRET,
    HookServer,
    csrf_of,
    free_port,
    hook_site,
    sign,
    wait_for_build,
    write_env,
)
from support.processes import wait_for

from nsls2_artifacts.config import load_config
from nsls2_artifacts.hook.nightly import run_nightly, site_schedule
from nsls2_artifacts.hook.queue import FINISHED, BuildQueue

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HookServer]:
    config = hook_site(tmp_path)
    write_env(tmp_path / "manifests", "demo", {"python": "3.11.*"})
    write_env(tmp_path / "manifests", "other", {"python": "3.11.*"})
    with HookServer(config) as hook, hook.client() as client:
        # Nothing runs in these tests: every request stays queued where we can count it.
        assert client.post("/api/queue", json={"paused": True}).json()["paused"] is True
        yield hook


def builds(hook: HookServer, env: str | None = None) -> list[dict]:
    with hook.client() as client:
        params = {"env": env} if env else {}
        return client.get("/api/builds", params=params).raise_for_status().json()


def test_api_requires_a_valid_token(server: HookServer) -> None:
    with server.client(token=None) as anonymous:
        response = anonymous.post("/api/builds", json={"env": "demo"})
        assert response.status_code == 401
        assert "bearer" in response.json()["error"]
        assert anonymous.get("/api/envs").status_code == 401
    with server.client(token="not-" + TOKEN) as wrong:
        assert wrong.post("/api/builds", json={"env": "demo"}).status_code == 403
        assert wrong.post("/api/queue", json={"paused": False}).status_code == 403
    with httpx.Client(base_url=server.url) as raw:
        response = raw.post(
            "/api/builds", json={"env": "demo"}, headers={"Authorization": f"Basic {TOKEN}"}
        )
        assert response.status_code == 401
    assert builds(server) == []


def test_unknown_env_and_malformed_json(server: HookServer) -> None:
    with server.client() as client:
        response = client.post("/api/builds", json={"env": "nope"})
        assert response.status_code == 404 and "nope" in response.json()["error"]
        assert response.json()["envs"] == ["demo", "other"]
        traversal = client.post("/api/builds", json={"env": "../manifests/demo"})
        assert traversal.status_code == 404
        response = client.post(
            "/api/builds", content=b'{"env": "demo"', headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        assert response.json()["error"].startswith("malformed JSON")
        for body in ([], {"env": 3}, {"environment": "demo"}, "demo"):
            response = client.post("/api/builds", json=body)
            assert response.status_code == 422 and "env" in response.json()["error"]
        assert client.get("/api/builds/999").status_code == 404
        huge = b'{"env": "demo", "pad": "' + b"x" * 2_000_000 + b'"}'
        assert client.post("/api/builds", content=huge).status_code == 413
    assert builds(server) == []


def test_a_body_field_missing_or_of_the_wrong_type_is_named(server: HookServer) -> None:
    """Request bodies are typed records (hook/web.py `Body`): a field missing or of the wrong
    type is a 422 whose error names the body, the field and the shape it should have; nothing
    is queued, unpaused or promoted."""
    said = {  # path -> (the body's name in errors, its shape)
        "/api/builds": ("POST /api/builds body", '{"env": "base"}'),
        "/api/queue": ("POST /api/queue body", '{"paused": true}'),
        "/api/envs/demo/promote": (
            "POST /api/envs/ENV/promote body",
            '{"build_id": "...", "label": "2026-3"}',
        ),
    }
    build_id = "2026.01.01T000000Z-deadbeef"
    cases = [
        ("/api/builds", {"env": 3}, "field 'env': expected str, got int"),
        ("/api/queue", {"paused": "no"}, "field 'paused': expected bool, got str"),
        (
            "/api/envs/demo/promote",
            {"build_id": build_id, "label": "2026-3", "allow_failed": "yes"},
            "field 'allow_failed': expected bool, got str",
        ),
        ("/api/envs/demo/promote", {"label": "2026-3"}, "field 'build_id': missing"),
    ]
    with server.client() as client:
        for path, body, problem in cases:
            response = client.post(path, json=body)
            assert response.status_code == 422, (path, response.text)
            name, shape = said[path]
            assert response.json() == {"error": f"{name}: {problem}; a body looks like {shape}"}
        assert client.get("/api/queue").json()["paused"] is True
    assert builds(server) == []


def test_two_hundred_concurrent_posts_make_one_queued_build(server: HookServer) -> None:
    def post(_: int) -> httpx.Response:
        with server.client() as client:
            return client.post("/api/builds", json={"env": "demo"})

    with ThreadPoolExecutor(max_workers=200) as pool:
        responses = list(pool.map(post, range(200)))
    assert {r.status_code for r in responses} == {202}
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert sum(not r.json()["joined"] for r in responses) == 1
    (record,) = builds(server, "demo")
    assert record["state"] == "queued" and record["requests"] == 200
    with server.client() as client:
        assert client.get(f"/api/builds/{ids.pop()}").json()["requests"] == 200
        metrics = client.get("/metrics").text
    assert "nsls2_hook_queue_length 1" in metrics
    assert "nsls2_hook_joined_requests_total 199" in metrics


def _signed(body: bytes, delivery: str, event: str = "release") -> dict[str, str]:
    return {
        "X-Hub-Signature-256": sign(body),
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
    }


def test_webhook_signature(server: HookServer) -> None:
    payload = json.dumps(
        {"ref": "refs/tags/v1.2.3", "repository": {"full_name": "nsls-ii/Demo-Pkg"}}
    )
    body = payload.encode()
    with httpx.Client(base_url=server.url) as raw:
        missing = raw.post("/api/webhook", content=body)
        assert missing.status_code == 401
        forged = raw.post(
            "/api/webhook", content=body, headers={"X-Hub-Signature-256": sign(body, "guess")}
        )
        assert forged.status_code == 403
        # a valid signature of a different body: the body was changed in flight
        swapped = raw.post(
            "/api/webhook", content=body + b" ", headers={"X-Hub-Signature-256": sign(body)}
        )
        assert swapped.status_code == 403
        # signed, but without a delivery id a replay could not be told apart
        headers = {"X-Hub-Signature-256": sign(body)}
        anonymous = raw.post("/api/webhook", content=body, headers=headers)
        assert anonymous.status_code == 400 and "X-GitHub-Delivery" in anonymous.json()["error"]
        assert builds(server) == []
        ping = raw.post("/api/webhook", content=body, headers=_signed(body, "d-0", "ping"))
        assert ping.status_code == 200 and builds(server) == []
        unknown = json.dumps({"repository": {"full_name": "someone/else"}}).encode()
        response = raw.post("/api/webhook", content=unknown, headers=_signed(unknown, "d-1"))
        assert response.status_code == 404 and "webhook_repos" in response.json()["error"]
        bad = b"{not json"
        response = raw.post("/api/webhook", content=bad, headers=_signed(bad, "d-2"))
        assert response.status_code == 422
        ok = raw.post("/api/webhook", content=body, headers=_signed(body, "d-3"))
    assert ok.status_code == 202
    (record,) = builds(server)
    assert ok.json()["ids"] == [record["id"]]
    assert record["env"] == "demo" and record["requested_by"] == "webhook:nsls-ii/Demo-Pkg v1.2.3"


def test_replayed_webhook_delivery_is_refused(server: HookServer) -> None:
    """A captured delivery sent again (same `X-GitHub-Delivery`, or the same signed body
    under a fresh id: the signature does not cover headers) queues nothing, also after
    the queued build ended and after a restart of the hook."""
    body = json.dumps({"repository": {"full_name": "NSLS-II/demo-pkg"}, "n": 1}).encode()
    with httpx.Client(base_url=server.url) as raw:
        assert raw.post("/api/webhook", content=body, headers=_signed(body, "a")).status_code == 202
        (record,) = builds(server)
        with server.client() as client:  # the build ends: a replay would queue a new one
            client.post(f"/api/builds/{record['id']}/cancel").raise_for_status()
        again = raw.post("/api/webhook", content=body, headers=_signed(body, "a"))
        assert again.status_code == 409 and "already received" in again.json()["error"]
        fresh_id = raw.post("/api/webhook", content=body, headers=_signed(body, "b"))
        assert fresh_id.status_code == 409
        other = json.dumps({"repository": {"full_name": "NSLS-II/demo-pkg"}, "n": 2}).encode()
        reused_id = raw.post("/api/webhook", content=other, headers=_signed(other, "a"))
        assert reused_id.status_code == 409
    assert len(builds(server)) == 1
    server.kill()
    server.start()
    with httpx.Client(base_url=server.url) as raw:
        replayed = raw.post("/api/webhook", content=body, headers=_signed(body, "a"))
        assert replayed.status_code == 409
        new = raw.post("/api/webhook", content=other, headers=_signed(other, "c"))
        assert new.status_code == 202
    assert len(builds(server)) == 2


def test_webhook_without_configured_secret_is_refused(tmp_path: Path) -> None:
    config = hook_site(tmp_path)
    write_env(tmp_path / "manifests", "demo", {"python": "3.11.*"})
    body = json.dumps({"repository": {"full_name": "NSLS-II/demo-pkg"}}).encode()
    with HookServer(config, secret=None) as hook, httpx.Client(base_url=hook.url) as raw:
        # Even a body signed with an empty secret must not pass.
        response = raw.post(
            "/api/webhook", content=body, headers={"X-Hub-Signature-256": sign(body, "")}
        )
        assert response.status_code == 403
        assert "NSLS2_TEST_HOOK_SECRET" in response.json()["error"]
        assert builds(hook) == []


def test_forms_need_session_andcsrf_of(server: HookServer) -> None:
    with httpx.Client(base_url=server.url, follow_redirects=False) as browser:
        # No session at all
        assert browser.post("/envs/demo/build", data={"csrf": "x"}).status_code == 403
        # Sign in: wrong token, then a form without its nonce, then the real thing
        page = browser.get("/signin")
        assert "HttpOnly" in page.headers["set-cookie"]
        nonce = csrf_of(page.text)
        wrong = browser.post("/signin", data={"csrf": nonce, "token": "wrong"})
        assert wrong.status_code == 403 and "nsls2_hook_session" not in browser.cookies
        nonce = csrf_of(wrong.text)
        assert browser.post("/signin", data={"token": TOKEN}).status_code == 403
        response = browser.post("/signin", data={"csrf": nonce, "token": TOKEN, "next": "/"})
        assert response.status_code == 303
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        home = browser.get("/")
        assert "Build a new latest environment!" in home.text
        csrf = csrf_of(home.text)
        # Replayed form without / with a wrong CSRF token: refused, nothing queued
        assert browser.post("/envs/demo/build").status_code == 403
        assert browser.post("/envs/demo/build", data={"csrf": csrf + "x"}).status_code == 403
        assert builds(server) == []
        # The real form: queued, and the page shows it
        response = browser.post("/envs/demo/build", data={"csrf": csrf})
        assert response.status_code == 303
        build_page = browser.get(response.headers["location"])
        assert "queued" in build_page.text
        assert browser.post("/envs/nope/build", data={"csrf": csrf}).status_code == 404
        # Cancel through the form
        (record,) = builds(server)
        response = browser.post(f"/builds/{record['id']}/cancel", data={"csrf": csrf})
        assert response.status_code == 303
        assert builds(server)[0]["state"] == "cancelled"
        # A session cookie from another hook's key is worthless
        session_cookie = browser.cookies["nsls2_hook_session"]
        browser.cookies.set("nsls2_hook_session", "e30.AAAA")
        assert browser.post("/envs/demo/build", data={"csrf": csrf}).status_code == 403
    assert len(builds(server)) == 1
    # Sign out ends the session on the server: a copy of its cookie is refused afterwards
    with httpx.Client(base_url=server.url, follow_redirects=False) as thief:
        thief.cookies.set("nsls2_hook_session", session_cookie)
        assert "Sign out" in thief.get("/").text
        with httpx.Client(base_url=server.url, follow_redirects=False) as browser:
            browser.cookies.set("nsls2_hook_session", session_cookie)
            assert browser.post("/signout", data={"csrf": csrf}).status_code == 303
        assert "Sign out" not in thief.get("/").text
        assert thief.post("/envs/demo/build", data={"csrf": csrf}).status_code == 403
    assert len(builds(server)) == 1


def test_nightly_schedule_queues_opted_in_envs(tmp_path: Path) -> None:
    """The schedule fires on an injected clock (no waiting for a real cron minute): at
    02:00 it queues a nightly build of every env that opts in, then waits for the next."""
    config = hook_site(tmp_path, hook={"nightly": "02:00"})
    write_env(tmp_path / "manifests", "demo", {"python": "3.11.*"})
    write_env(tmp_path / "manifests", "quiet", {"python": "3.11.*"}, nightly=False)
    site = load_config(config)
    queue = BuildQueue(tmp_path / "hook.sqlite")
    clock = FakeClock(datetime(2026, 12, 1, 1, 58, 10).astimezone())

    async def first_night() -> None:
        fired = asyncio.Event()
        task = asyncio.create_task(
            run_nightly(site, site_schedule(site), queue, fired.set, clock.now, clock.sleep)
        )
        await asyncio.wait_for(fired.wait(), timeout=60)
        task.cancel()

    asyncio.run(first_night())
    records = queue.history()
    assert [(r.env, r.source) for r in records] == [("demo", "nightly")]
    two_am = datetime(2026, 12, 1, 2, 0).astimezone()
    assert queue.get_meta("nightly_last") == two_am.isoformat(timespec="seconds")
    assert queue.get_meta("nightly_next") == (two_am + timedelta(days=1)).isoformat(
        timespec="minutes"
    )


def test_nightly_schedule_runs_in_the_server(tmp_path: Path) -> None:
    """The served hook starts the schedule and shows it with its next time."""
    config = hook_site(tmp_path, hook={"nightly": "02:00"})
    write_env(tmp_path / "manifests", "demo", {"python": "3.11.*"})
    with HookServer(config) as hook, hook.client() as client:
        client.post("/api/queue", json={"paused": True})

        def front_page_with_next() -> str | None:
            page = client.get("/").text
            return page if "next at" in page else None

        page = wait_for(front_page_with_next, 60, "the next nightly on the page", interval=0.2)
        assert "Nightly builds: <code>02:00</code>" in page
        assert re.search(r"next at \d{4}-\d{2}-\d{2}T02:00", page)


def test_pages_health_and_metrics(server: HookServer) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        home = anonymous.get("/")
        assert home.status_code == 200 and 'data-env="demo"' in home.text
        assert "Sign in to build" in home.text
        assert anonymous.get("/envs/demo").status_code == 200
        assert anonymous.get("/envs/nope").status_code == 404
        assert anonymous.get("/builds/12345").status_code == 404
        assert anonymous.get("/healthz").json()["ok"] is True
        metrics = anonymous.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "# TYPE nsls2_hook_queue_length gauge" in metrics.text
    with server.client() as client:
        envs = client.get("/api/envs").json()
        assert [e["env"] for e in envs] == ["demo", "other"]
        assert envs[0]["latest"] is None


def test_documented_ci_workflow_step_triggers_a_build(server: HookServer) -> None:
    """Run the GitHub Actions step from docs/hook.md (jq + openssl + curl) as written."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "hook.md").read_text()
    block = re.search(r"```yaml\n(# \.github/workflows/.*?)```", doc, re.S)
    assert block, "docs/hook.md lost its workflow example"
    workflow = yaml.safe_load(block.group(1))
    (step,) = workflow["jobs"]["rebuild"]["steps"]
    env = {
        **os.environ,
        "HOOK_URL": f"{server.url}/api/webhook",
        "HOOK_SECRET": WEBHOOK_SECRET,
        "GITHUB_REPOSITORY": "NSLS-II/demo-pkg",
        "GITHUB_REF": "refs/tags/v1.2.3",
        "GITHUB_RUN_ID": "7001",
        "GITHUB_RUN_ATTEMPT": "1",
    }
    result = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", step["run"]], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr + result.stdout
    answer = json.loads(result.stdout)
    (record,) = builds(server)
    assert answer["ids"] == [record["id"]] and record["source"] == "webhook"
    # The same step with the wrong secret is refused and queues nothing more.
    env["HOOK_SECRET"] = "wrong"
    result = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", step["run"]], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0 and "does not match" in result.stdout
    assert len(builds(server)) == 1


def test_second_hook_on_same_state_dir_refuses_to_start(server: HookServer) -> None:
    """Two hooks on one queue would both start the same builds: the second must refuse."""
    other_port = str(free_port())
    result = subprocess.run(
        [sys.executable, "-m", "nsls2_artifacts.cli", "hook", "serve",
         "--config", str(server.config), "--listen", f"127.0.0.1:{other_port}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "another hook is already running" in result.stdout + result.stderr
    assert httpx.get(f"{server.url}/healthz").json()["ok"] is True


def test_hook_token_prints_a_token_and_its_hash() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nsls2_artifacts.cli", "hook", "token"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    token = re.search(r"token:\s+(\S+)", result.stdout).group(1)
    digest = re.search(r"tokens_sha256: \[([0-9a-f]{64})\]", result.stdout).group(1)
    assert hashlib.sha256(token.encode()).hexdigest() == digest and len(token) >= 40


def test_wrong_tokens_are_limited_but_never_lock_out_the_right_one(tmp_path: Path) -> None:
    """After `max_failed_signins` wrong tokens within the window, further wrong tokens from
    that address get 429 with Retry-After (API and sign-in form alike), but the right
    token from the same address still works (everyone behind one proxy/NAT shares it);
    another address is not affected; after the window wrong tokens get 403 again."""
    config = hook_site(tmp_path, hook={"max_failed_signins": 3, "failed_signin_window_seconds": 4})
    write_env(tmp_path / "manifests", "demo", {"python": "3.11.*"})
    other_address = httpx.HTTPTransport(local_address="127.0.0.2")
    with HookServer(config) as hook, hook.client(token="wrong-" + TOKEN) as wrong:
        assert [wrong.get("/api/envs").status_code for _ in range(3)] == [403] * 3
        refused = wrong.get("/api/envs")
        assert refused.status_code == 429 and "too many wrong tokens" in refused.json()["error"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 5
        with hook.client() as right:
            assert right.get("/api/envs").status_code == 200
            assert right.post("/api/queue", json={"paused": True}).status_code == 200
        with httpx.Client(base_url=hook.url) as browser:
            nonce = re.search(r'name="csrf" value="([^"]+)"', browser.get("/signin").text)[1]
            page = browser.post("/signin", data={"csrf": nonce, "token": "wrong"})
            assert page.status_code == 429 and "Too many wrong tokens" in page.text
            assert int(page.headers["Retry-After"]) >= 1
            nonce = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
            signed_in = browser.post("/signin", data={"csrf": nonce, "token": TOKEN})
            assert signed_in.status_code == 303 and "Sign out" in browser.get("/").text
        with hook.client(token="wrong", transport=other_address) as elsewhere:
            assert elsewhere.get("/api/envs").status_code == 403
        time.sleep(int(refused.headers["Retry-After"]) + 1)
        assert wrong.get("/api/envs").status_code == 403


def test_old_history_and_logs_are_forgotten_at_startup(tmp_path: Path) -> None:
    """Finished requests older than `keep_history_days` and their logs go when the hook
    starts; recent ones stay, and so does each env's newest finished request however old
    (the front page shows its result)."""
    from nsls2_artifacts.hook.queue import BuildQueue

    config = hook_site(tmp_path, hook={"keep_history_days": 30})
    write_env(tmp_path / "manifests", "demo", {"python": "3.11.*"})
    write_env(tmp_path / "manifests", "other", {"python": "3.11.*"})
    state = tmp_path / "hook-state"
    (state / "logs").mkdir(parents=True)
    queue = BuildQueue(state / "hook.sqlite")
    ages = {"demo": [400, 40, 2], "other": [400]}  # days since each request finished
    made: dict[int, float] = {}
    for env, days in ages.items():
        for age in days:
            record, _ = queue.request(env, source="test", requested_by="test")
            assert [r.id for r in queue.claim(1)] == [record.id]
            queue.finish(record.id, "failed", reason="old")
            made[record.id] = age
            (state / "logs" / f"{record.id}.log").write_text(f"log of {record.id}\n")
    with queue._tx() as db:  # backdate them (the queue stamps finish times itself)
        for build, age in made.items():
            db.execute(
                "UPDATE builds SET finished = ? WHERE id = ?", (time.time() - age * 86400, build)
            )
    with HookServer(config) as hook, hook.client() as client:
        kept = {b: client.get(f"/api/builds/{b}").status_code == 200 for b in made}
    assert kept == {1: False, 2: False, 3: True, 4: True}
    assert sorted(p.name for p in (state / "logs").iterdir()) == ["3.log", "4.log"]


SITECUSTOMIZE = """
import json, os, sys
with open(os.path.join(os.environ["ENV_DUMP_DIR"], f"{os.getpid()}.json"), "w") as out:
    json.dump({"argv": sys.argv, "env": dict(os.environ)}, out)
"""


def test_builds_started_by_the_hook_do_not_inherit_its_credentials(
    tmp_path: Path, monkeypatch
) -> None:
    """Every python the hook starts records its environment (a sitecustomize on PYTHONPATH):
    the publish subprocess has the store's settings but not the webhook secret, nor any
    `NSLS2_HOOK_*` credential, nor a copy of the secret under another name."""
    config = hook_site(tmp_path / "site")
    write_env(tmp_path / "site" / "manifests", "demo", {"python": "3.11.*"})
    inject, dumps = tmp_path / "inject", tmp_path / "dumps"
    inject.mkdir()
    dumps.mkdir()
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", str(inject))
    monkeypatch.setenv("ENV_DUMP_DIR", str(dumps))
    monkeypatch.setenv("NSLS2_HOOK_ADMIN_TOKEN", "a-hook-credential")
    monkeypatch.setenv("CI_WEBHOOK_SECRET", WEBHOOK_SECRET)  # the secret under another name
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "store-credential")
    with HookServer(config) as hook, hook.client() as client:
        build = client.post("/api/builds", json={"env": "demo"}).json()["id"]
        wait_for_build(client, build, FINISHED, timeout=120)
    seen = [json.loads(p.read_text()) for p in dumps.glob("*.json")]
    server = [d["env"] for d in seen if "serve" in d["argv"]]
    publish = [d["env"] for d in seen if "publish" in d["argv"]]
    assert server and publish, [d["argv"] for d in seen]
    assert server[0]["NSLS2_TEST_HOOK_SECRET"] == WEBHOOK_SECRET  # the hook itself has it
    for env in publish:
        assert WEBHOOK_SECRET not in env.values()
        assert not [name for name in env if name.startswith("NSLS2_HOOK_")]
        assert env["AWS_ACCESS_KEY_ID"] == "store-credential"


def test_promote_form_refuses_labels_that_would_clash(server: HookServer) -> None:
    """`latest` is the rolling kernel's name and Jupyter lowercases kernel names: the hook
    refuses such labels before it looks at the store or runs anything."""
    with httpx.Client(base_url=server.url, follow_redirects=False) as browser:
        nonce = csrf_of(browser.get("/signin").text)
        browser.post("/signin", data={"csrf": nonce, "token": TOKEN, "next": "/"})
        csrf = csrf_of(browser.get("/").text)
        for label, why in (("latest", "reserved"), ("Beta", "lowercase")):
            form = {"csrf": csrf, "build_id": "2026.01.01T000000Z-deadbeef", "label": label}
            response = browser.post("/envs/demo/promote", data=form)
            assert response.status_code == 422 and why in response.text, response.text
        form["label"] = "2026-1"  # a good label reaches the store check (no such build)
        assert browser.post("/envs/demo/promote", data=form).status_code == 404
