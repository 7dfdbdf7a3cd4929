"""The tail of `just demo`: start the deployed `nsls2-ENV-latest` kernel the way Jupyter
does (by kernelspec name, found through JUPYTER_PATH), print its display name (with the
build's date and python), run one cell that imports databroker and prints sys.prefix, the
memory ceiling and whether user site-packages are on, and say how to point JupyterLab at
the kernels.

Called by the hidden `nsls2-artifacts demo-kernel` command.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import layout
from .agent.kernels import kernel_name
from .config import SiteConfig
from .errors import DeployError

CELL = """\
import os, site, sys, databroker
print('databroker', databroker.__version__)
print(sys.prefix)
limit = int(os.environ.get('NSLS2_MEMORY_LIMIT') or 0)
how = os.environ.get('NSLS2_MEMORY_MECHANISM')
ceiling = f'{limit / 2**30:g} GiB ({how})' if limit else 'none'
print(f'memory ceiling: {ceiling}; user site-packages: {site.ENABLE_USER_SITE}')
"""


def run_cell(kernel: str, jupyter_path: Path, code: str, timeout: float = 120) -> str:
    """Start `kernel` by name with `jupyter_path` on JUPYTER_PATH, run `code`, return stdout."""
    from jupyter_client.manager import start_new_kernel

    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(jupyter_path), *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep))]
    )
    manager, client = start_new_kernel(kernel_name=kernel, startup_timeout=timeout)
    chunks: list[str] = []

    def on_output(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            chunks.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            chunks.append("\n".join(msg["content"]["traceback"]))

    try:
        reply = client.execute_interactive(code, timeout=timeout, output_hook=on_output)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    if reply["content"]["status"] != "ok":
        raise DeployError(kernel, f"the demo cell failed in kernel {kernel}:\n{''.join(chunks)}")
    return "".join(chunks)


def run_demo_kernel(site: SiteConfig, env: str, jupyter_path: Path | None = None) -> None:
    jupyter_path = jupyter_path or layout.jupyter_dir(site.deploy_root)
    name = kernel_name(env)
    spec_path = jupyter_path / "kernels" / name / "kernel.json"
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, ValueError):
        raise DeployError(
            name, f"no readable kernelspec {name} under {jupyter_path}: run `agent --once`"
        ) from None
    print(f"kernel {name}: {spec.get('display_name')}")
    print(f"starting kernel {name} (JUPYTER_PATH={jupyter_path}) ...")
    print(run_cell(name, jupyter_path, CELL).rstrip())
    lab_ext = Path(__file__).resolve().parent / "jupyter"  # holds labextensions/nsls2-artifacts-lab
    root_flag = " --allow-root" if os.geteuid() == 0 else ""
    print(
        "\nOpen JupyterLab on these kernels with the NSLS-II lab extension (launcher section,\n"
        "build in the status bar) and server extension (notebooks record their build):\n"
        f"  JUPYTER_PATH={jupyter_path}:{lab_ext} .venv/bin/jupyter lab{root_flag} "
        "--ServerApp.jpserver_extensions=nsls2_artifacts.jupyter=True\n"
        f"Stock JupyterLab: JUPYTER_PATH={jupyter_path} .venv/bin/jupyter lab{root_flag}\n"
        "JupyterHub: `just hub-demo` (127.0.0.1:8000, any name), or add "
        f"{jupyter_path} to JUPYTER_PATH of the spawned servers.\n"
        f'To see the restart notice: add e.g. `numpy = "*"` to manifests/{env}/pixi.toml '
        "(an unchanged manifest publishes nothing),\n"
        f"`just publish {env}`, `just agent --once`: a running {name} kernel says a newer "
        "build exists on its next cell; a restart gets it."
    )
