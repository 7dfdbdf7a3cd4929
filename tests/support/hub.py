"""A real JupyterHub (PyPI) with configurable-http-proxy (npm) on 127.0.0.1, from the
example config operators copy (deploy/jupyterhub_config.py, through the one-machine demo
config: dummy login, local spawner)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from support import processes
from support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
HUB_DEMO_CONFIG = REPO / "deploy" / "jupyterhub_demo_config.py"
USER = "alice"  # the dummy login's user


def start_hub(
    tmp_path: Path, deploy_root: Path, default_kernel: str = "nsls2-demo-latest"
) -> tuple[subprocess.Popen[bytes], str, Path]:
    assert shutil.which("configurable-http-proxy"), "npm install -g configurable-http-proxy"
    state = tmp_path / "hub"
    port = free_port()
    env = {
        **os.environ,
        "NSLS2_DEPLOY_ROOT": str(deploy_root),
        "NSLS2_DEFAULT_KERNEL": default_kernel,
        "NSLS2_HUB_PORT": str(port),
        "NSLS2_HUB_STATE": str(state),
        "NSLS2_HUB_API_PORT": str(free_port()),
        "NSLS2_PROXY_API_PORT": str(free_port()),
        # the venv's scripts (jupyterhub-singleuser's deps) first, as an installed hub has
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    env.pop("JUPYTER_PATH", None)  # only the hub config may put the deploy root there
    env.pop("NSLS2_SHOW_SERVER_PYTHON", None)  # the default: the server's python is hidden
    state.mkdir()
    log = state / "hub.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(HUB_DEMO_CONFIG)],
            cwd=state,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return proc, f"http://127.0.0.1:{port}", log


def stop_hub(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the hub stops the user servers and the proxy it started, then exits (its
    whole group is killed if it does not)."""
    processes.stop(proc, timeout=60, group=True)
