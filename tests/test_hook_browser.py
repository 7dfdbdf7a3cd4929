"""The staff page in a real browser: Debian's chromium driven by Playwright, headless.

Signs in, clicks "Build a new latest environment!" for the demo env (real publish from
the offline channel), waits for the build, and checks the new build id and its package
diff against the previous build; then promotes it to LTS. Saves screenshots to
test-artifacts/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.browser import ARTIFACTS, CHROMIUM, chromium
from support.hook import TOKEN, HookServer, hook_site, wait_for_build, write_env

from nsls2_artifacts.config import load_config
from nsls2_artifacts.store import FilesystemStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

BEFORE = {"python": "3.11.*", "ipykernel": "*", "six": "1.16.0"}
AFTER = {"python": "3.11.*", "ipykernel": "*", "six": "1.17.0", "numpy": "*"}


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_sign_in_click_build_see_diff_and_promote(tmp_path: Path, offline_channel: Path) -> None:
    from playwright.sync_api import expect

    config = hook_site(tmp_path, channel=offline_channel)
    manifests = tmp_path / "manifests"
    write_env(manifests, "demo", BEFORE)
    store = FilesystemStore(load_config(config).store)
    ARTIFACTS.mkdir(exist_ok=True)
    with HookServer(config) as hook:
        # The previous build, through the API (a real publish too).
        with hook.client() as client:
            first = client.post("/api/builds", json={"env": "demo"}).json()["id"]
            assert wait_for_build(client, first, ("published", "failed"))["state"] == "published"
        (previous,) = store.builds("demo")
        write_env(manifests, "demo", AFTER)  # staff merged: six 1.17.0, and numpy added

        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{hook.url}/")
            page.get_by_role("link", name="Staff sign in").click()
            page.get_by_label("Token").fill(TOKEN)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_text("signed in")).to_be_visible()

            row = page.locator('tr[data-env="demo"]')
            expect(row).to_contain_text(previous.build_id)
            row.get_by_role("button", name="Build a new latest environment!").click()
            expect(page).to_have_url(re.compile(r"/builds/\d+$"))
            # The page polls the log while the build runs and reloads when it ends.
            expect(page.locator("#log")).to_contain_text("publish demo")
            page.wait_for_selector(
                '[data-state="published"], [data-state="failed"]', timeout=900_000
            )
            expect(page.locator("h1 .state")).to_have_text("published")

            builds = store.builds("demo")
            assert len(builds) == 2
            new = builds[-1]
            expect(page.locator("#build-id")).to_have_text(new.build_id)
            diff = page.locator("#diff")
            expect(diff).to_contain_text(previous.build_id)
            expect(diff.locator("tr.diff-added", has_text="numpy")).to_have_count(1)
            expect(diff.locator("tr.diff-changed", has_text="six")).to_contain_text("1.16.0")
            expect(diff.locator("tr.diff-changed", has_text="six")).to_contain_text("1.17.0")
            expect(diff.locator("tr.diff-removed")).to_have_count(0)
            page.screenshot(path=str(ARTIFACTS / "hook-build.png"), full_page=True)

            # Promote the new build to an LTS label from its page.
            page.get_by_placeholder("LTS label, e.g. 2026-3").fill("2026-3")
            page.get_by_role("button", name="Promote to LTS").click()
            expect(page.get_by_text("Promoted to LTS label")).to_be_visible()
            assert [(r.label, r.build_id) for r in store.lts("demo")] == [("2026-3", new.build_id)]

            page.goto(f"{hook.url}/")
            row = page.locator('tr[data-env="demo"]')
            expect(row).to_contain_text(new.build_id)
            expect(row).to_contain_text("2026-3")
            expect(row.locator(".state")).to_have_text("published")
            page.screenshot(path=str(ARTIFACTS / "hook-home.png"), full_page=True)
