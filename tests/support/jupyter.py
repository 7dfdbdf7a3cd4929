"""Helpers for the Jupyter tests: a real jupyter_server (subprocess on 127.0.0.1) with the
nsls2 server extension, its REST API through httpx, and kernel code run over its websocket."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from support.ports import free_port
from support.processes import stop, wait_for


def isolated_jupyter_env(home: Path, jupyter_path: Path | None) -> dict[str, str]:
    """The test's environment with Jupyter's config/data/runtime dirs of its own."""
    env = {**os.environ}
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        path = home / name.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    env.pop("JUPYTER_PATH", None)
    if jupyter_path is not None:
        env["JUPYTER_PATH"] = str(jupyter_path)
    return env


class Server:
    """A running jupyter_server: `api()` sends authenticated REST calls."""

    def __init__(self, url: str, token: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.token = token
        self.proc = proc
        self.log = log
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"token {token}"}, timeout=60
        )

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.http.request(method, path, **kw)

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        response = self.api(method, path, **kw)
        assert response.status_code < 300, (response.status_code, response.text, self.tail())
        return response.json() if response.content else None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def jupyter_argv(module: str, port: int, token: str, root_dir: Path, *extra: str) -> list[str]:
    """`python -m MODULE` on 127.0.0.1:PORT with token auth and the server extension enabled
    explicitly (an editable install does not install the `jupyter_server_config.d` file a
    wheel ships)."""
    return [
        sys.executable,
        "-m",
        module,
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        f"--IdentityProvider.token={token}",
        "--ServerApp.jpserver_extensions=nsls2_artifacts.jupyter=True",
        *(["--allow-root"] if os.geteuid() == 0 else []),  # CI runs as root
        *extra,
    ]


@contextmanager
def running_jupyter(
    module: str, home: Path, root_dir: Path, env: dict[str, str], *extra: str, timeout: float
) -> Iterator[Server]:
    """Run `python -m MODULE` (log in HOME/MODULE.log) until it answers; stop it after."""
    port, token = free_port(), uuid.uuid4().hex
    log = home / f"{module}.log"
    home.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            jupyter_argv(module, port, token, root_dir, *extra),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = Server(f"http://127.0.0.1:{port}", token, proc, log)
    try:
        wait_until(lambda: _answers(server), timeout, f"{module} on port {port}", server)
        yield server
    finally:
        server.http.close()
        stop(proc)


@contextmanager
def jupyter_server(
    home: Path, root_dir: Path, jupyter_path: Path | None, *extra: str
) -> Iterator[Server]:
    """A real jupyter_server with the NSLS-II server extension, kernels from JUPYTER_PATH."""
    env = isolated_jupyter_env(home, jupyter_path)
    with running_jupyter(
        "jupyter_server",
        home,
        root_dir,
        env,
        "--KernelSpecManager.ensure_native_kernel=False",
        *extra,
        timeout=60,
    ) as server:
        yield server


def _answers(server: Server) -> bool:
    if server.proc.poll() is not None:
        raise AssertionError(f"jupyter_server exited:\n{server.tail()}")
    try:
        return server.api("GET", "/api/status").status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(predicate: Any, timeout: float, what: str, server: Server | None = None) -> Any:
    """`processes.wait_for`, with the server's log tail when it times out."""
    return wait_for(predicate, timeout, what, interval=0.1, detail=server.tail if server else None)


def notebook_json(kernel_name: str, display_name: str, source: str = "1 + 1") -> dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": kernel_name, "display_name": display_name, "language": "python"}
        },
        "cells": [
            {
                "cell_type": "code",
                "id": "c1",
                "source": source,
                "metadata": {},
                "outputs": [],
                "execution_count": None,
            }
        ],
    }


def save_notebook(server: Server, path: str, content: dict[str, Any]) -> None:
    server.ok("PUT", f"/api/contents/{path}", json={"type": "notebook", "content": content})


def read_notebook(server: Server, path: str) -> dict[str, Any]:
    return server.ok("GET", f"/api/contents/{path}", params={"content": 1})["content"]


def start_session(server: Server, path: str, kernel_name: str) -> str:
    """POST /api/sessions like JupyterLab opening a notebook; returns the kernel id."""
    model = server.ok(
        "POST",
        "/api/sessions",
        json={"path": path, "name": path, "type": "notebook", "kernel": {"name": kernel_name}},
    )
    return model["kernel"]["id"]


def notebook_cli(config: Path, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`nsls2-artifacts notebook COMMAND --config CONFIG ARGS...` as a subprocess."""
    env = {**os.environ}
    env.pop("NSLS2_ARTIFACTS_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "nsls2_artifacts.cli", "notebook", command, "--config", str(config)]
        + list(args),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def run_cell(client: Any, code: str, timeout: float = 60) -> tuple[str, str, dict[str, Any]]:
    """(stdout, stderr, reply content) of one cell run by a kernel client; an error in
    the cell does not fail the helper (the reply says it)."""
    out: list[str] = []
    err: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            (out if msg["content"]["name"] == "stdout" else err).append(msg["content"]["text"])

    reply = client.execute_interactive(code, timeout=timeout, output_hook=hook)
    return "".join(out), "".join(err), reply["content"]


# a cell that prints which build's python runs it
PREFIX_CELL = "import sys, databroker; print(sys.prefix)"


def execute(manager: Any, code: str) -> str:
    """The stdout of `code` run in the kernel of a KernelManager (its error's traceback
    if it fails, then an AssertionError)."""
    client = manager.blocking_client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        chunks: list[str] = []

        def hook(msg):  # stdout only: stderr may carry the restart notice after a flip
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                chunks.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                chunks.append("\n".join(msg["content"]["traceback"]))

        reply = client.execute_interactive(code, timeout=120, output_hook=hook)
        assert reply["content"]["status"] == "ok", "".join(chunks)
        return "".join(chunks).strip()
    finally:
        client.stop_channels()
