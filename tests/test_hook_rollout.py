"""Staff see the rollout: a real hook, a real publish, two real agent daemons (two nodes on
one deploy root and one store) and Debian's chromium on the build page.

node-b's users need a module the build lacks (`agent.node_imports`), so the new build
fails its import check there. The build page (updating live, no reload) and
`GET /api/builds/{id}` show the partial rollout with node-b's reason; once node-b is gone
and retired, "Users can restart NSLS-II base (latest) now" with a message for users.
Before any node has deployed the build, the front page's "Latest build" column does not
claim it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.agent import start_agent
from support.browser import ARTIFACTS, CHROMIUM, chromium
from support.cli import CLI
from support.hook import HookServer, hook_site, wait_for_build, write_env
from support.processes import stop, wait_for
from support.sites import node_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

DEPS = {"python": "3.11.*", "ipykernel": "*", "six": "1.16.0"}


def agent_config(config: Path, node: str, **agent: Any) -> Path:
    """Another node's site file: the same store and deploy root, its own node name."""
    return node_config(config, node, poll_seconds=1, smoke_timeout_seconds=300, **agent)


def rollout_of(client: Any, build: int) -> dict[str, Any] | None:
    return client.get(f"/api/builds/{build}").raise_for_status().json()["rollout"]


def wait_rollout(client: Any, build: int, predicate: Any, what: str, timeout: float = 600):
    last: list[Any] = [None]

    def reached() -> Any:
        last[0] = rollout = rollout_of(client, build)
        return rollout if rollout and predicate(rollout) else None

    return wait_for(reached, timeout, f"rollout {what}", interval=0.5, detail=lambda: str(last[0]))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_partial_rollout_then_users_can_restart(tmp_path: Path, offline_channel: Path) -> None:
    from playwright.sync_api import expect

    config = hook_site(tmp_path, channel=offline_channel)
    write_env(tmp_path / "manifests", "base", DEPS, display_name="NSLS-II base", smoke=["six"])
    node_a = agent_config(config, "node-a")
    node_b = agent_config(config, "node-b", node_imports=["cupy_for_tests"])
    ARTIFACTS.mkdir(exist_ok=True)
    agents: list[subprocess.Popen[bytes]] = []
    with HookServer(config) as hook, hook.client() as client:
        build = client.post("/api/builds", json={"env": "base"}).json()["id"]
        record = wait_for_build(client, build, ("published", "failed"))
        assert record["state"] == "published", record
        build_id = record["build_id"]
        # published, but no node serves it yet: nobody may be told to restart
        (env,) = client.get("/api/envs").json()
        assert env["latest"] == build_id and env["serving"] is None
        rollout = rollout_of(client, build)
        assert rollout["complete"] is False and rollout["message"] is None
        assert "no live node has reported" in rollout["summary"]
        home = client.get("/").text
        assert 'data-serving=""' in home and "not on every live node yet" in home

        with chromium() as browser:
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(f"{hook.url}/builds/{build}")
                expect(page.locator("#rollout-headline")).to_contain_text("Rolling out")
                page.evaluate("window.loadedOnce = true")  # gone if the page reloads

                for node in (node_a, node_b):
                    agents.append(start_agent(node, log=tmp_path / f"{node.stem}.log"))
                partial = wait_rollout(
                    client,
                    build,
                    lambda r: r["live"] == 2 and r["serving"] == 1 and r["failed"],
                    "partial with node-b failed",
                )
                assert partial["summary"].startswith(
                    "deployed on 1 of 2 live nodes (node-b failed: smoke import failed on this node"
                )
                assert "No module named 'cupy_for_tests'" in partial["summary"]
                assert [n["node"] for n in partial["failed"]] == ["node-b"]
                assert partial["complete"] is False and partial["message"] is None
                summary = page.locator("#rollout-summary")
                expect(summary).to_contain_text("deployed on 1 of 2 live nodes", timeout=90_000)
                expect(summary).to_contain_text("No module named 'cupy_for_tests'")
                expect(page.locator('tr[data-node="node-b"]')).to_have_attribute(
                    "data-status", "failed"
                )
                page.screenshot(path=str(ARTIFACTS / "hook-rollout-partial.png"), full_page=True)
                assert "node-b failed: smoke import" in client.get(f"/builds/{build}").text

                # node-b is gone for good: stop its agent, retire it
                stop(agents[1], 120)
                assert agents[1].returncode == 0  # SIGTERM: a clean exit, not the SIGKILL
                retired = subprocess.run(
                    [*CLI, "nodes", "retire", "node-b", "--config", str(node_a)],
                    capture_output=True, text=True, timeout=60,
                )  # fmt: skip
                assert retired.returncode == 0, retired.stdout + retired.stderr
                done = wait_rollout(client, build, lambda r: r["complete"], "complete")
                assert done["headline"] == "Users can restart NSLS-II base (latest) now"
                assert "not counted: node-b retired" in done["summary"]
                assert "restart your kernel" in done["message"]
                assert "NSLS-II base (latest)" in done["message"]
                expect(page.locator("#rollout-headline")).to_have_text(
                    "Users can restart NSLS-II base (latest) now", timeout=90_000
                )
                expect(page.locator("#user-message")).to_contain_text("restart your kernel")
                assert page.evaluate("window.loadedOnce") is True  # updated in place
                page.screenshot(path=str(ARTIFACTS / "hook-rollout-done.png"), full_page=True)
            finally:
                for agent in agents:
                    stop(agent, 60)
        (env,) = client.get("/api/envs").json()
        assert env["serving"] == build_id
        home = client.get("/").text
        assert f'data-serving="{build_id}"' in home and "not on every live node yet" not in home
