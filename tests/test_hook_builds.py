"""Real builds through the hook: `publish` subprocesses against the offline conda channel.

A failing build (unsolvable manifest) shows the solver's message and the next build
works; "nothing changed" is shown as such; a hook SIGKILLed mid-build marks the build
failed after restart, leaves no publish behind and no half build in the store, and the
queue goes on.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from support.hook import HookServer, hook_site, wait_for_build, write_env
from support.processes import wait_for

from nsls2_artifacts.config import load_config
from nsls2_artifacts.store import FilesystemStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

DEMO = {"python": "3.11.*", "ipykernel": "*"}


def request_build(client: httpx.Client, env: str) -> int:
    response = client.post("/api/builds", json={"env": env})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_failed_build_shows_solver_message_and_next_build_works(
    tmp_path: Path, offline_channel: Path
) -> None:
    config = hook_site(tmp_path, channel=offline_channel)
    manifests = tmp_path / "manifests"
    write_env(manifests, "demo", {**DEMO, "nonexistent-package-xyz": "*"})
    store = FilesystemStore(load_config(config).store)
    with HookServer(config) as hook, hook.client() as client:
        failed = wait_for_build(client, request_build(client, "demo"), ("failed", "published"))
        assert failed["state"] == "failed", failed
        assert "nonexistent-package-xyz" in failed["reason"]
        log = client.get(f"/builds/{failed['id']}/log").json()
        assert "nonexistent-package-xyz" in log["text"] and log["done"]
        page = client.get(f"/builds/{failed['id']}").text
        assert "nonexistent-package-xyz" in page and 'data-state="failed"' in page
        assert store.builds("demo") == []

        write_env(manifests, "demo", DEMO)  # the fix is merged
        build = request_build(client, "demo")
        # Follow the log as the page does: chunks from an offset until the build is done.
        log = {"text": "", "offset": 0, "polls": 0}

        def log_done() -> bool:
            chunk = client.get(f"/builds/{build}/log", params={"offset": log["offset"]}).json()
            log["text"] += chunk["text"]
            log["offset"] = chunk["offset"]
            log["polls"] += 1
            return chunk["done"]

        wait_for(log_done, 600, f"build request #{build}'s log to end", interval=0.2)
        streamed, polls = log["text"], log["polls"]
        good = client.get(f"/api/builds/{build}").json()
        assert good["state"] == "published", good
        whole = client.get(f"/builds/{build}/log").json()["text"]
        assert streamed == whole and polls > 1
        assert f"published {good['build_id']}" in whole
        (built,) = store.builds("demo")
        assert good["build_id"] == built.build_id
        page = client.get(f"/builds/{good['id']}").text
        assert built.build_id in page and 'id="diff"' in page

        # Same manifest again: same lock, nothing published, and that is not a failure.
        same = wait_for_build(
            client, request_build(client, "demo"), ("failed", "unchanged", "published")
        )
        assert same["state"] == "unchanged", same
        assert "no change" in client.get(f"/builds/{same['id']}").text
        assert len(store.builds("demo")) == 1
        home = client.get("/").text
        assert built.build_id in home
        metrics = client.get("/metrics").text
        assert 'nsls2_hook_builds_total{env="demo",result="unchanged"} 1' in metrics
        assert 'nsls2_hook_builds_total{env="demo",result="failed"} 1' in metrics


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_hook_killed_mid_build_marks_it_failed_and_queue_continues(
    tmp_path: Path, offline_channel: Path
) -> None:
    config = hook_site(tmp_path, channel=offline_channel)
    write_env(tmp_path / "manifests", "demo", DEMO)
    store = FilesystemStore(load_config(config).store)
    hook = HookServer(config).start()
    try:
        with hook.client() as client:
            build = request_build(client, "demo")
            record = wait_for_build(client, build, ("running", "published", "failed"))
            assert record["state"] == "running", record
            record = wait_for(
                lambda: (r := client.get(f"/api/builds/{build}").json())["pid"] and r,
                60,
                f"build request #{build}'s publish to start",
            )
        publish_pid = record["pid"]
        assert publish_pid and _alive(publish_pid)
        hook.kill()
        # The publish dies with its hook (parent-death signal), it does not run on unseen.
        wait_for(lambda: not _alive(publish_pid), 30, f"the publish (pid {publish_pid}) to die")

        hook = HookServer(config).start()
        with hook.client() as client:
            after = client.get(f"/api/builds/{build}").json()
            assert after["state"] == "failed", after
            assert "hook stopped" in after["reason"]
            assert "hook stopped" in client.get(f"/builds/{build}").text
            assert store.builds("demo") == [] and store.invalid_builds("demo") == []
            # The queue continues: the next request builds, and cleans up the leftovers.
            good = wait_for_build(client, request_build(client, "demo"), ("failed", "published"))
            assert good["state"] == "published", good
        (built,) = store.builds("demo")
        assert built.build_id == good["build_id"]
        leftovers = [p for p in os.listdir(store.root / "demo") if p.startswith(".staging-")]
        assert leftovers == []
    finally:
        hook.stop()


def test_timeout_and_cancel_stop_the_publish(tmp_path: Path, offline_channel: Path) -> None:
    # A publish of this env takes several seconds here; a 1 s limit must kill it.
    config = hook_site(tmp_path / "a", channel=offline_channel, hook={"build_timeout_seconds": 1})
    write_env(tmp_path / "a" / "manifests", "demo", DEMO)
    with HookServer(config) as hook, hook.client() as client:
        timed_out = wait_for_build(client, request_build(client, "demo"), ("failed", "published"))
        assert timed_out["state"] == "failed", timed_out
        assert "timed out" in timed_out["reason"]
        assert not _alive(timed_out["pid"])
    assert FilesystemStore(load_config(config).store).builds("demo") == []

    config = hook_site(tmp_path / "b", channel=offline_channel)
    write_env(tmp_path / "b" / "manifests", "demo", DEMO)
    with HookServer(config) as hook, hook.client() as client:
        build = request_build(client, "demo")
        record = wait_for_build(client, build, ("running", "published", "failed"))
        while record["state"] == "running" and record["pid"] is None:
            record = client.get(f"/api/builds/{build}").json()
        assert record["state"] == "running", record
        response = client.post(f"/api/builds/{build}/cancel")
        assert response.status_code == 200 and response.json()["cancelled"] is True
        cancelled = wait_for_build(client, build, ("cancelled", "failed", "published"))
        assert cancelled["state"] == "cancelled" and "cancelled by token:" in cancelled["reason"]
        assert not _alive(record["pid"])
        # cancelling a finished build changes nothing
        assert client.post(f"/api/builds/{build}/cancel").json()["cancelled"] is False
    assert FilesystemStore(load_config(config).store).builds("demo") == []
