"""The hook never calls SQLite on its event loop: every route a page, a script or CI can
reach is requested from a real uvicorn server on 127.0.0.1 (in this process, so the
queue's connection can be watched), and each database use must come from a worker
thread. A blocking call on the loop would stall every other request (and the runner)
for as long as SQLite waits for its lock.
"""

from __future__ import annotations

import asyncio
import json
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml
from support.hook import (
    SECRET_ENV,
    TOKEN,
    WEBHOOK_SECRET,
    csrf_of,
    healthy,
    hook_site,
    sign,
    write_env,
)
from support.processes import wait_for

from nsls2_artifacts.config import load_config
from nsls2_artifacts.hook.app import create_app
from nsls2_artifacts.hook.queue import BuildQueue

pytestmark = pytest.mark.timeout(300)


@contextmanager
def served(config: Path) -> Iterator[str]:
    """`create_app` on a real uvicorn server in a thread of this process; yields its URL."""
    listen = yaml.safe_load(config.read_text())["hook"]["listen"]
    host, _, port = listen.rpartition(":")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(load_config(config)), host=host, port=int(port), log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{listen}"
    wait_for(lambda: healthy(url), 60, f"the hook at {url} to answer /healthz")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _runs_an_event_loop() -> bool:
    """Whether the calling thread is running an asyncio event loop (public API only)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_no_sqlite_call_runs_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_loop: list[str] = []
    connect = BuildQueue._conn

    def watched(self: BuildQueue):  # noqa: ANN202 - wraps a private method
        if _runs_an_event_loop():
            on_loop.append("".join(traceback.format_stack(limit=6)))
        return connect(self)

    monkeypatch.setattr(BuildQueue, "_conn", watched)
    monkeypatch.setenv(SECRET_ENV, WEBHOOK_SECRET)
    config = hook_site(tmp_path)
    write_env(tmp_path / "manifests", "demo", {"python": "3.11.*"})
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with served(config) as url, httpx.Client(base_url=url, timeout=60) as http:
        api = {"headers": bearer}
        # scripts: hold the queue (no publish runs), queue, read, cancel
        assert http.post("/api/queue", json={"paused": True}, **api).status_code == 200
        assert http.get("/api/queue", **api).status_code == 200
        first = http.post("/api/builds", json={"env": "demo"}, **api).json()
        assert first["request_id"] == first["id"]
        assert http.post("/api/builds", json={"env": "nope"}, **api).status_code == 404
        assert http.get(f"/api/builds/{first['id']}", **api).status_code == 200
        assert http.get("/api/builds", **api).status_code == 200
        assert http.get("/api/envs", **api).status_code == 200
        assert http.get("/api/builds/999", **api).status_code == 404
        assert http.post(f"/api/builds/{first['id']}/cancel", **api).status_code == 200
        assert http.get("/api/envs", headers={"Authorization": "Bearer wrong"}).status_code == 403
        # CI
        body = json.dumps({"repository": {"full_name": "NSLS-II/demo-pkg"}}).encode()
        headers = {"X-Hub-Signature-256": sign(body), "X-GitHub-Delivery": "d-1"}
        answer = http.post("/api/webhook", content=body, headers=headers)
        assert answer.status_code == 202 and answer.json()["request_ids"] == answer.json()["ids"]
        assert http.post("/api/webhook", content=body, headers=headers).status_code == 409
        # staff in a browser
        for path in (
            "/",
            "/envs/demo",
            "/envs/nope",
            "/signin",
            f"/builds/{first['id']}",
            f"/builds/{first['id']}/log",
            f"/builds/{first['id']}/rollout",
            "/envs/demo/builds/2026.01.01T000000Z-deadbeef",
            "/healthz",
            "/metrics",
        ):
            assert http.get(path).status_code in (200, 404), path
        nonce = csrf_of(http.get("/signin").text)
        wrong = http.post("/signin", data={"csrf": nonce, "token": "wrong"})
        assert wrong.status_code == 403
        nonce = csrf_of(wrong.text)  # the form comes back with a fresh nonce
        signed = http.post("/signin", data={"csrf": nonce, "token": TOKEN, "next": "/"})
        assert signed.status_code == 303
        csrf = csrf_of(http.get("/").text)
        assert http.post("/envs/demo/build", data={"csrf": "no"}).status_code == 403
        queued = http.post("/envs/demo/build", data={"csrf": csrf})
        assert queued.status_code == 303
        assert (
            http.post(f"{queued.headers['location']}/cancel", data={"csrf": csrf}).status_code
            == 303
        )
        assert http.post("/builds/999/cancel", data={"csrf": csrf}).status_code == 404
        promote = {"csrf": csrf, "build_id": "2026.01.01T000000Z-deadbeef", "label": "x y"}
        assert http.post("/envs/demo/promote", data=promote).status_code == 422
        promote["label"] = "2026-3"
        assert http.post("/envs/demo/promote", data=promote).status_code == 404
        assert http.post("/signout", data={"csrf": csrf}).status_code == 303
    assert on_loop == [], "SQLite called on the event loop:\n" + "\n".join(on_loop)
