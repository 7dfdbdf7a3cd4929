"""Helpers for the JupyterLab browser tests: a real `jupyter lab` on 127.0.0.1 (token auth)
with the nsls2 server extension and the prebuilt lab extension from this checkout,
Debian's chromium through Playwright, a real `tiled serve`, screenshots in test-artifacts/."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from helpers_jupyter import Server, _answers, isolated_jupyter_env, wait_until
from support.ports import free_port

REPO = Path(__file__).resolve().parents[1]
# holds labextensions/nsls2-artifacts-lab: an editable install does not install the
# data-files a wheel puts in share/jupyter/labextensions, so JupyterLab looks here
LAB_EXTENSION_ROOT = REPO / "nsls2_artifacts" / "jupyter"
ARTIFACTS = REPO / "test-artifacts" / "lab"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@contextmanager
def jupyter_lab(
    home: Path, root_dir: Path, deploy_share: Path, with_extension: bool = True
) -> Iterator[Server]:
    """`python -m jupyterlab` with the deployed kernels and this checkout's lab extension
    (`with_extension=False`: stock JupyterLab, as on a hub where nothing can be installed)."""
    port, token = free_port(), uuid.uuid4().hex
    log = home / "jupyter-lab.log"
    home.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        f"--IdentityProvider.token={token}",
        "--ServerApp.jpserver_extensions=nsls2_artifacts.jupyter=True",
        "--LabApp.expose_app_in_browser=True",  # lets a test run lab commands
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        *(["--allow-root"] if os.geteuid() == 0 else []),  # CI runs as root
    ]
    roots = [deploy_share, LAB_EXTENSION_ROOT] if with_extension else [deploy_share]
    jupyter_path = os.pathsep.join(str(root) for root in roots)
    env = isolated_jupyter_env(home, Path(jupyter_path))
    # no "get notified about Jupyter news?" toast over the screenshots
    labconfig = Path(env["JUPYTER_CONFIG_DIR"]) / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    with open(log, "wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", token, proc, log)
    try:
        wait_until(lambda: _answers(server), 120, f"jupyter lab on port {port}", server)
        yield server
    finally:
        server.http.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian chromium (never `playwright install`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def open_lab(browser: Any, server: Server, path: str = "") -> Any:
    """A new page on /lab (or /lab/tree/PATH) with a fresh workspace, once the app is up."""
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    target = f"/tree/{path}" if path else ""
    page.goto(f"{server.url}/lab{target}?reset&token={server.token}")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started", timeout=120_000)
    page.evaluate("() => window.jupyterapp.started")
    return page


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
        proc.terminate()
        proc.wait(timeout=30)
