"""The lab extension on a real JupyterHub (deploy/jupyterhub_demo_config.py, PyPI jupyterhub,
npm configurable-http-proxy, 127.0.0.1): a user signs in through the login form in Debian's
chromium and their JupyterLab shows the NSLS-II launcher section for the deployed demo env.

Nothing is installed for the user: the demo config adds this checkout's prebuilt extension
to the spawned servers' JUPYTER_PATH (an editable install has no wheel data-files), so this
is what `just hub-demo` shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import test_jupyterhub
from helpers_jupyter import wait_until
from helpers_lab import chromium, screenshot
from test_jupyterhub import USER, start_hub, stop

pytestmark = pytest.mark.slow
pytest.importorskip("jupyterhub")
deployed_demo = test_jupyterhub.deployed_demo  # its module-scoped fixture: one real build


def test_hub_user_sees_the_nsls2_launcher_section(deployed_demo, tmp_path: Path) -> None:
    cfg, _build_id = deployed_demo
    # nothing installed for the user: the demo config finds this checkout's prebuilt
    # extension (the editable install has no share/jupyter/labextensions), as `just hub-demo`
    hub, url, log = start_hub(tmp_path, cfg.deploy_root)
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 860})

            def hub_up() -> bool:
                assert hub.poll() is None, log.read_text(errors="replace")[-6000:]
                try:
                    return page.request.get(f"{url}/hub/health").ok
                except Exception:  # not listening yet
                    return False

            wait_until(hub_up, 120, "jupyterhub")
            page.goto(f"{url}/hub/login")
            page.fill("input[name=username]", USER)
            page.fill("input[name=password]", "any")
            page.click("input[type=submit], button[type=submit]")
            page.wait_for_url(f"{url}/user/{USER}/**", timeout=240_000)
            page.goto(f"{url}/user/{USER}/lab")
            title = page.locator(".jp-Launcher-sectionTitle", has_text="NSLS-II").first
            title.wait_for(timeout=120_000)
            section = page.locator(".jp-Launcher-section").filter(has=title)
            labels = section.first.locator(".jp-LauncherCard-label").all_inner_texts()
            spec = cfg.deploy_root / "share" / "jupyter" / "kernels" / "nsls2-demo-latest"
            assert spec.exists()
            assert len(labels) == 1 and labels[0].startswith("NSLS-II demo (latest"), labels
            notebook = page.locator(".jp-Launcher-section").filter(
                has=page.get_by_role("heading", name="Notebook", exact=True)
            )
            assert not any(
                text.startswith("NSLS-II")
                for text in notebook.locator(".jp-LauncherCard-label").all_inner_texts()
            )
            # the demo env names a beamline, but this site configures no beamline profiles
            titles = page.locator(".jp-Launcher-sectionTitle").all_inner_texts()
            assert "NSLS-II beamlines" not in titles, titles
            screenshot(page, "hub-launcher")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- hub log ---\n{log.read_text()[-6000:]}") from None
    finally:
        stop(hub)
