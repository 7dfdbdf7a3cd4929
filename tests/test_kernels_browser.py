"""Stock JupyterLab in Debian's chromium shows the NSLS-II kernels with their logos.

The agent deploys two fake builds (latest + an LTS label, one env with a PNG logo of its
own); a real JupyterLab on 127.0.0.1 with only JUPYTER_PATH pointing at the deploy root
lists them; the launcher's cards carry the dated display names and show the logo
resources the agent wrote (`logo-svg.svg`), which the server serves byte for byte.
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

import pytest
from support.agent import commit_fake, write_site
from support.browser import ARTIFACTS, CHROMIUM, chromium
from support.jupyter import jupyter_server

from nsls2_artifacts.agent import logos
from nsls2_artifacts.agent.log import setup_logging
from nsls2_artifacts.agent.reconcile import run_pass
from nsls2_artifacts.records import KernelExtras, KernelLogo
from nsls2_artifacts.store import FilesystemStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_stock_launcher_shows_logos_and_dated_names(tmp_path: Path) -> None:
    pytest.importorskip("jupyterlab")
    _, cfg = write_site(tmp_path / "site")
    own = KernelExtras(logo=KernelLogo("png", base64.b64encode(logos.default_png("zz")).decode()))
    commit_fake(cfg, "base", tag="one", hours=1, lts="2026-1", display_name="NSLS-II base")
    commit_fake(cfg, "other", tag="x", hours=1, display_name="NSLS-II other", kernel=own)
    latest = commit_fake(cfg, "base", tag="two", hours=2, display_name="NSLS-II base")
    log = setup_logging(logging.INFO, io.StringIO())
    assert run_pass(cfg, FilesystemStore(cfg.store), log).ok
    jupyter_path = cfg.deploy_root / "share" / "jupyter"
    (tmp_path / "work").mkdir()
    ARTIFACTS.mkdir(exist_ok=True)
    with jupyter_server(tmp_path / "home", tmp_path / "work", jupyter_path) as server:
        specs = server.ok("GET", "/api/kernelspecs")["kernelspecs"]
        for name in ("nsls2-base-latest", "nsls2-base-2026-1", "nsls2-other-latest"):
            assert set(specs[name]["resources"]) >= {"logo-svg", "logo-64x64"}, specs[name]
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server.url}/lab?token={server.token}")
            title = f"NSLS-II base (latest, Python 3.11, {latest.created[:10]})"
            card = page.locator(".jp-LauncherCard", has_text=title).first
            card.wait_for(timeout=120_000)
            page.screenshot(path=str(ARTIFACTS / "kernels-launcher.png"))
            for name in ("nsls2-base-latest", "nsls2-base-2026-1", "nsls2-other-latest"):
                image = page.locator(f'.jp-LauncherCard img[src*="/kernelspecs/{name}/"]')
                image.first.wait_for(timeout=30_000)
                src = image.first.get_attribute("src")
                assert src and "logo-svg.svg" in src, src
                # the browser really loaded and decoded it
                assert image.first.evaluate("img => img.complete && img.naturalWidth > 0")
            lts_card = page.locator(".jp-LauncherCard", has_text="NSLS-II base 2026-1 (")
            assert lts_card.count() >= 1
        served = server.api("GET", "/kernelspecs/nsls2-other-latest/logo-svg.svg")
        written = jupyter_path / "kernels" / "nsls2-other-latest" / "logo-svg.svg"
        assert served.status_code == 200 and served.content == written.read_bytes()
        assert base64.b64encode(logos.default_png("zz")) in served.content
