"""The lab extension on a real JupyterHub (deploy/jupyterhub_demo_config.py, PyPI jupyterhub,
npm configurable-http-proxy, 127.0.0.1): a user signs in through the login form in Debian's
chromium and their JupyterLab shows the NSLS-II launcher section for the deployed demo env;
on a facility-sized site (30 envs x 5 LTS labels, support/bigsite.py around the real demo
build) File -> New -> Notebook and the first card start the site's default kernel, the
server's own python is not offered, and beamline cards start their beamline's env.

Nothing is installed for the user: the demo config adds this checkout's prebuilt extension
to the spawned servers' JUPYTER_PATH (an editable install has no wheel data-files), so this
is what `just hub-demo` shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support.bigsite import generate_site
from support.hub import USER, start_hub, stop_hub
from support.jupyter import wait_until
from support.lab import chromium, menu, screenshot

from nsls2_artifacts import layout

pytestmark = pytest.mark.slow
pytest.importorskip("jupyterhub")


@contextmanager
def signed_in_lab(
    tmp_path: Path, deploy_root: Path, default_kernel: str = "nsls2-demo-latest"
) -> Iterator[tuple[Any, str]]:
    """A hub on `deploy_root`, a chromium page signed in and on the user's /lab."""
    hub, url, log = start_hub(tmp_path, deploy_root, default_kernel)
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
            page.wait_for_function(
                "() => document.querySelector('.jp-Launcher-sectionTitle')", timeout=120_000
            )
            yield page, f"{url}/user/{USER}"
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- hub log ---\n{log.read_text()[-6000:]}") from None
    finally:
        stop_hub(hub)


def section(page: Any, title: str) -> Any:
    heading = page.get_by_role("heading", name=title, exact=True)
    return page.locator(".jp-Launcher:visible .jp-Launcher-section").filter(has=heading).first


def cards(page: Any, title: str) -> list[str]:
    return section(page, title).locator(".jp-LauncherCard-label").all_inner_texts()


def new_launcher(page: Any) -> None:
    """File -> New Launcher (the hub's lab does not expose the app to scripts)."""
    menu(page, "File", "New Launcher")
    section(page, "NSLS-II").locator(".jp-nsls2-card-tracks").first.wait_for()


def session_kernel(page: Any, base: str, path: str) -> str | None:
    """The kernel name of `path`'s session once its kernel is idle (the server's view)."""
    for session in page.request.get(f"{base}/api/sessions").json():
        kernel = session.get("kernel") or {}
        if session["path"] == path and kernel.get("execution_state") == "idle":
            return kernel["name"]
    return None


def test_hub_user_sees_the_nsls2_launcher_section(deployed_demo, tmp_path: Path) -> None:
    cfg, _build_id = deployed_demo
    with signed_in_lab(tmp_path, cfg.deploy_root) as (page, _base):
        title = page.locator(".jp-Launcher-sectionTitle", has_text="NSLS-II").first
        title.wait_for(timeout=120_000)
        spec = cfg.deploy_root / "share" / "jupyter" / "kernels" / "nsls2-demo-latest"
        assert spec.exists()
        assert cards(page, "NSLS-II") == ["NSLS-II demo"]
        assert not any(text.startswith("NSLS-II") for text in cards(page, "Notebook"))
        # the demo env names a beamline, but this site configures no beamline profiles
        titles = page.locator(".jp-Launcher-sectionTitle").all_inner_texts()
        assert "NSLS-II beamlines" not in titles, titles
        screenshot(page, "hub-launcher")


def test_hub_facility_site_default_kernel_and_beamlines(deployed_demo, tmp_path: Path) -> None:
    """30 envs x 5 LTS labels; the hub's default is nsls2-base-latest (the shipped config)."""
    cfg, build_id = deployed_demo
    real = layout.build_dir(cfg.deploy_root, "demo", build_id)
    site = generate_site(tmp_path / "facility", real)
    with signed_in_lab(tmp_path, site.deploy_root, "nsls2-base-latest") as (page, base):
        specs = page.request.get(f"{base}/api/kernelspecs").json()
        assert specs["default"] == "nsls2-base-latest"
        assert len(specs["kernelspecs"]) == 180 and "python3" not in specs["kernelspecs"]
        section(page, "NSLS-II").locator(".jp-nsls2-card-tracks").first.wait_for()
        envs = cards(page, "NSLS-II")
        assert len(envs) == 30 and envs[0] == "NSLS-II base", envs
        # no stock "Python 3 (ipykernel)" card anywhere
        every = page.locator(".jp-Launcher:visible .jp-LauncherCard-label").all_inner_texts()
        assert not any("Python 3" in label for label in every), every
        screenshot(page, "hub-facility-launcher")
        # File -> New -> Notebook: the dialog pre-selects the site default; Enter starts it
        menu(page, "File", "New", "Notebook")
        dialog = page.locator(".jp-Dialog")
        dialog.wait_for(timeout=60_000)
        selected = dialog.locator(".jp-nsls2-picker-entry.jp-mod-selected")
        assert selected.get_attribute("data-kernel") == "nsls2-base-latest"
        assert dialog.locator(".jp-nsls2-picker-entry").count() <= 10
        screenshot(page, "hub-facility-new-notebook")
        page.keyboard.press("Enter")
        kernel = wait_until(
            lambda: session_kernel(page, base, "Untitled.ipynb"), 180, "the new notebook's kernel"
        )
        assert kernel == "nsls2-base-latest"
        # the first launcher card starts the default kernel too
        new_launcher(page)
        section(page, "NSLS-II").locator(".jp-LauncherCard").first.click()
        kernel = wait_until(
            lambda: session_kernel(page, base, "Untitled1.ipynb"), 180, "the first card's kernel"
        )
        assert kernel == "nsls2-base-latest"
        # the CSX beamline card says and starts the CSX env, not "base"
        new_launcher(page)
        csx = section(page, "NSLS-II beamlines").locator(".jp-LauncherCard", has_text="CSX")
        assert csx.first.locator(".jp-nsls2-card-env").inner_text() == "on NSLS-II CSX"
        screenshot(page, "hub-facility-beamlines")
        csx.first.click()
        kernel = wait_until(lambda: session_kernel(page, base, "csx.ipynb"), 180, "csx kernel")
        assert kernel == "nsls2-csx-latest"
