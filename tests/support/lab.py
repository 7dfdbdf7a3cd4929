"""Helpers for the JupyterLab browser tests: a real `jupyter lab` on 127.0.0.1 (token auth)
with the nsls2 server extension and the prebuilt lab extension from this checkout,
Debian's chromium through Playwright, a real `tiled serve`, screenshots in test-artifacts/."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.browser import ARTIFACTS as ARTIFACTS_ROOT
from support.browser import chromium  # noqa: F401  (the lab tests import it from here)
from support.jupyter import Server, isolated_jupyter_env, running_jupyter, wait_until
from support.processes import stop

REPO = Path(__file__).resolve().parents[2]  # tests/support/lab.py -> the checkout
# holds labextensions/nsls2-artifacts-lab: an editable install does not install the
# data-files a wheel puts in share/jupyter/labextensions, so JupyterLab looks here
LAB_EXTENSION_ROOT = REPO / "nsls2_artifacts" / "jupyter"
ARTIFACTS = ARTIFACTS_ROOT / "lab"


@contextmanager
def jupyter_lab(
    home: Path, root_dir: Path, deploy_share: Path, with_extension: bool = True
) -> Iterator[Server]:
    """`python -m jupyterlab` with the deployed kernels and this checkout's lab extension
    (`with_extension=False`: stock JupyterLab, as on a hub where nothing can be installed)."""
    built = LAB_EXTENSION_ROOT / "labextensions" / "nsls2-artifacts-lab" / "package.json"
    # a wrong path here loads stock JupyterLab silently and every test fails as a timeout
    assert built.is_file(), f"no prebuilt lab extension at {built}"
    roots = [deploy_share, LAB_EXTENSION_ROOT] if with_extension else [deploy_share]
    jupyter_path = os.pathsep.join(str(root) for root in roots)
    env = isolated_jupyter_env(home, Path(jupyter_path))
    # no "get notified about Jupyter news?" toast over the screenshots
    labconfig = Path(env["JUPYTER_CONFIG_DIR"]) / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    with running_jupyter(
        "jupyterlab",
        home,
        root_dir,
        env,
        "--LabApp.expose_app_in_browser=True",  # lets a test run lab commands
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        timeout=120,
    ) as server:
        yield server


def open_lab(browser: Any, server: Server, path: str = "") -> Any:
    """A new page on /lab (or /lab/tree/PATH) with a fresh workspace, once the app is up."""
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    target = f"/tree/{path}" if path else ""
    page.goto(f"{server.url}/lab{target}?reset&token={server.token}")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started", timeout=120_000)
    page.evaluate("() => window.jupyterapp.started")
    return page


def menu(page: Any, top: str, *path: str) -> None:
    """Click through the menu bar, e.g. `menu(page, "File", "New", "Notebook")` (a
    submenu opens on hover; Lumino gives submenu entries no menuitem role)."""
    page.get_by_role("menuitem", name=top, exact=True).click()
    for index, name in enumerate(path):
        label = page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(name)}$"))
        item = page.locator(".lm-Menu:visible .lm-Menu-item").filter(has=label).first
        if index < len(path) - 1:
            item.hover()
        else:
            item.click()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def session_for(server: Server, path: str) -> dict[str, Any] | None:
    for session in server.ok("GET", "/api/sessions"):
        if session["path"] == path and session.get("kernel"):
            return session
    return None


def idle_kernel(server: Server, path: str, timeout: float = 120) -> dict[str, Any]:
    """The session of `path` once its kernel is idle (started and ready)."""

    def ready() -> dict[str, Any] | None:
        session = session_for(server, path)
        if session and session["kernel"]["execution_state"] == "idle":
            return session
        return None

    return wait_until(ready, timeout, f"an idle kernel for {path}", server)


def run_all_and_read(page: Any, timeout: float = 120_000) -> str:
    """Run every cell of the current notebook and return the first cell's output text."""
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    output = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output").first
    output.wait_for(timeout=timeout)
    return output.inner_text().strip()


@contextmanager
def tiled_server(tmp: Path, port: int, tree_source: str) -> Iterator[subprocess.Popen[bytes]]:
    """`tiled serve pyobject` of `tree_source` (defines `tree`) on 127.0.0.1:PORT."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "nsls2_lab_tree.py").write_text(tree_source)
    tiled = Path(sys.executable).parent / "tiled"
    log = tmp / "tiled.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [str(tiled), "serve", "pyobject", "--public", "--host", "127.0.0.1"]
            + ["--port", str(port), "nsls2_lab_tree:tree"],
            cwd=tmp,
            env={**os.environ, "PYTHONPATH": str(tmp)},
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )

    def listening() -> bool:
        assert proc.poll() is None, log.read_text()
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, 120, "tiled server")
        yield proc
    finally:
        stop(proc)
