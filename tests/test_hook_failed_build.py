"""Staff cannot miss a build that failed on the nodes (issue #19 item 7): a real hook
(`hook serve` on 127.0.0.1), real publishes from the offline channel, a real agent daemon
whose reports the page reads, and Debian's chromium.

The first build deploys. Then staff merge a smoke list naming a module the build lacks:
the agent quarantines the new build. The build page says "Failed on 1 node — users stay
on GOOD" with the missing module and the `smoke:` line of nsls2.yaml; no page calls the
failed build "latest"; promoting it to LTS is refused on the page, the API and the CLI
until the override is given; `status` does not call the smoke failure transient; a
rebuild with no change shows no rollout. Before the first agent pass the home page says
why no node serves the env.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.agent import start_agent
from support.browser import ARTIFACTS, CHROMIUM, chromium
from support.cli import CLI
from support.hook import TOKEN, HookServer, hook_site, wait_for_build, write_env
from support.jupyter import wait_until
from support.processes import stop
from support.sites import node_config

from nsls2_artifacts.config import load_config
from nsls2_artifacts.store import FilesystemStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

GOOD = {"python": "3.11.*", "ipykernel": "*", "six": "1.16.0"}
BROKEN = {"python": "3.11.*", "ipykernel": "*", "six": "1.17.0"}
MISSING = "nsls2_missing_module"


def _publish(client: Any) -> tuple[int, dict[str, Any]]:
    request = client.post("/api/builds", json={"env": "base"}).json()["request_id"]
    return request, wait_for_build(client, request, ("published", "unchanged", "failed"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_failed_build_is_never_latest_and_needs_an_override_to_promote(
    tmp_path: Path, offline_channel: Path
) -> None:
    from playwright.sync_api import expect

    config = hook_site(tmp_path, channel=offline_channel)
    manifests = tmp_path / "manifests"
    write_env(manifests, "base", GOOD, display_name="NSLS-II base", smoke=["six"])
    node = node_config(config, "node-a", poll_seconds=1, smoke_timeout_seconds=300)
    store = FilesystemStore(load_config(config).store)
    ARTIFACTS.mkdir(exist_ok=True)
    agent = None
    with HookServer(config) as hook, hook.client() as client, chromium() as browser:
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            _request, record = _publish(client)
            assert record["state"] == "published", record
            good = record["build_id"]
            # before the first agent pass the page says why no node serves it
            page.goto(f"{hook.url}/")
            latest = page.locator('tr[data-env="base"] td.latest')
            expect(latest).to_contain_text("no agent has reported to this store yet")
            expect(latest).to_contain_text("not on every live node yet")

            agent = start_agent(node, log=tmp_path / "agent.log")
            wait_until(
                lambda: client.get("/api/envs").json()[0]["serving"] == good, 600, "serving good"
            )

            # staff merge a smoke list naming a module no package provides
            write_env(
                manifests, "base", BROKEN, display_name="NSLS-II base", smoke=["six", MISSING]
            )
            bad_request, record = _publish(client)
            assert record["state"] == "published", record
            bad = record["build_id"]

            def failed_rollout() -> Any:
                rollout = client.get(f"/api/builds/{bad_request}").json()["rollout"]
                return rollout if rollout and rollout["failed"] else None

            rollout = wait_until(failed_rollout, 600, "failed on node-a")
            assert rollout["headline"] == f"Failed on 1 node — users stay on {good}"
            assert rollout["missing"] == [MISSING] and rollout["complete"] is False
            (fix,) = rollout["fix"]
            assert "manifests/base/nsls2.yaml:" in fix["where"] and MISSING in fix["where"]
            assert "smoke:" in fix["where"] and "pixi.toml" in fix["text"]

            # the build page, signed in
            page.goto(f"{hook.url}/signin?next=/builds/{bad_request}")
            page.get_by_label("Token").fill(TOKEN)
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#rollout-headline")).to_have_text(
                f"Failed on 1 node — users stay on {good}"
            )
            expect(page.locator("#rollout-summary")).to_contain_text(f"No module named '{MISSING}'")
            expect(page.locator("#rollout-fix")).to_contain_text("nsls2.yaml:")
            expect(page.locator(f'#rollout-fix li[data-module="{MISSING}"]')).to_contain_text(
                f"- {MISSING}"
            )
            page.screenshot(path=str(ARTIFACTS / "hook-failed-build.png"), full_page=True)

            # promote without the override: refused, nothing recorded
            page.locator("form.promote input[name=label]").fill("2026-3")
            page.get_by_role("button", name="Promote to LTS").click()
            expect(page.locator("pre.error")).to_contain_text(f"base/{bad} failed on 1 node")
            expect(page.locator("pre.error")).to_contain_text("Promote anyway")
            assert store.lts("base") == []
            # with it: promoted
            page.goto(f"{hook.url}/builds/{bad_request}")
            page.locator("form.promote input[name=label]").fill("2026-3")
            page.get_by_label("Promote anyway: it failed on 1 node").check()
            page.get_by_role("button", name="Promote to LTS").click()
            expect(page.locator(".banner.ok")).to_contain_text("2026-3")
            assert [(r.label, r.build_id) for r in store.lts("base")] == [("2026-3", bad)]

            # no page calls the failed build "latest"
            page.goto(f"{hook.url}/")
            row = page.locator('tr[data-env="base"]')
            expect(row.locator("td.latest")).to_have_attribute("data-serving", good)
            expect(row.locator(".newest")).to_contain_text("failed on 1 node")
            expect(row.locator(".newest")).not_to_contain_text("not on every live node yet")
            page.goto(f"{hook.url}/envs/base")
            marks = page.locator("#store-builds .latest-mark")
            expect(marks).to_have_count(1)
            latest_row = page.locator("#store-builds tr", has=page.locator(".latest-mark"))
            expect(latest_row).to_contain_text(good)
            expect(page.locator("#store-builds tr", has_text=bad)).to_contain_text(
                "failed on 1 node"
            )
            page.screenshot(path=str(ARTIFACTS / "hook-failed-env.png"), full_page=True)
            page.goto(f"{hook.url}/envs/base/builds/{bad}")
            expect(page.locator("h1")).to_contain_text("failed on 1 node")
            expect(page.locator("h1")).not_to_contain_text("newest published")

            # the API: refused with the reasons, then allowed
            body = {"build_id": bad, "label": "2026-4"}
            refused = client.post("/api/envs/base/promote", json=body)
            assert refused.status_code == 409 and list(refused.json()["failed"]) == ["node-a"]
            allowed = client.post("/api/envs/base/promote", json={**body, "allow_failed": True})
            assert allowed.status_code == 200, allowed.text
            # the CLI: refused, then --allow-failed
            cli = _cli("promote", "base", bad, "--lts", "2026-5", "--config", str(config))
            assert cli.returncode == 1 and "failed on 1 node" in cli.stderr, cli.stderr
            assert "--allow-failed" in cli.stderr and "Traceback" not in cli.stderr
            cli = _cli(
                "promote", "base", bad, "--lts", "2026-5", "--allow-failed", "--config", str(config)
            )
            assert cli.returncode == 0, cli.stderr
            assert {r.label for r in store.lts("base")} == {"2026-3", "2026-4", "2026-5"}

            # status on the node: a smoke failure is the build's, not transient
            status = _cli("status", "--config", str(node))
            assert f"base/{bad} [smoke]" in status.stdout, status.stdout
            assert "transient" not in status.stdout
            assert "Fix manifests/base" in status.stdout

            # a rebuild with no change publishes nothing and shows no rollout
            same_request, record = _publish(client)
            assert record["state"] == "unchanged" and record["rollout"] is None
            page.goto(f"{hook.url}/builds/{same_request}")
            expect(page.locator("#no-change")).to_contain_text("nothing rolls out")
            expect(page.locator("#rollout")).to_have_count(0)
            expect(page.locator("body")).not_to_contain_text("Rolling out")
        finally:
            if agent is not None:
                stop(agent, 60)
