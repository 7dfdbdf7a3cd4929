"""Example JupyterHub config for serving NSLS-II kernels (tested by tests/test_jupyterhub.py).

What it does for NSLS-II, on top of a site's own authenticator and spawner:
- spawned single-user servers get `JUPYTER_PATH=DEPLOY_ROOT/share/jupyter`, so stock Jupyter
  lists and starts every deployed kernel (JupyterHub does not do this by itself);
- the NSLS-II base latest kernel is the default kernel (`MappingKernelManager.
  default_kernel_name`; the lab extension pre-selects it and puts it first), and the
  server's own python ("Python 3 (ipykernel)", no NSLS-II packages) is not listed
  (`nsls2_artifacts.jupyter.kernelspecs.SiteKernelSpecManager`; opt out with
  NSLS2_SHOW_SERVER_PYTHON=1);
- the nsls2-artifacts server extension is enabled in every single-user server, so saved
  notebooks record the build they ran on. Install it once into the single-user environment:
  `pip install 'nsls2-artifacts[jupyter]'` (the wheel also enables it on its own; the
  argument below makes that explicit and covers editable installs).

The hub and its proxy (configurable-http-proxy, `npm install -g configurable-http-proxy`)
listen on 127.0.0.1 here; put the site's TLS front end before them. Settings read from the
environment (defaults in brackets):
  NSLS2_DEPLOY_ROOT     the agent's deploy root, same absolute path on every node [/nsls2/deploy]
  NSLS2_DEFAULT_KERNEL  default kernel name [nsls2-base-latest]
  NSLS2_HUB_PORT        public port of the proxy [8000]
  NSLS2_SHOW_SERVER_PYTHON  1: also list the server's own "Python 3 (ipykernel)" [0]
"""

import os

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

deploy_root = os.environ.get("NSLS2_DEPLOY_ROOT", "/nsls2/deploy")
default_kernel = os.environ.get("NSLS2_DEFAULT_KERNEL", "nsls2-base-latest")
show_server_python = os.environ.get("NSLS2_SHOW_SERVER_PYTHON", "0") == "1"

# --- network: hub and proxy on loopback -------------------------------------------------
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = int(os.environ.get("NSLS2_HUB_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"

# --- what every single-user server gets -------------------------------------------------
c.Spawner.environment = {
    # the kernels: not automatic, the operator must set this
    "JUPYTER_PATH": os.path.join(deploy_root, "share", "jupyter"),
}
c.Spawner.args = [
    # no "Python 3 (ipykernel)" from the server's own env as default or first card
    "--KernelSpecManager.ensure_native_kernel=False",
    f"--MappingKernelManager.default_kernel_name={default_kernel}",
    "--ServerApp.jpserver_extensions=nsls2_artifacts.jupyter=True",
]
if not show_server_python:
    # ensure_native_kernel only stops the server adding its python when no spec names it;
    # ipykernel's wheel installs one into the server's env, which this leaves out
    c.Spawner.args.append(
        "--ServerApp.kernel_spec_manager_class="
        "nsls2_artifacts.jupyter.kernelspecs.SiteKernelSpecManager"
    )
c.Spawner.default_url = "/lab"

# --- site-specific: authentication and spawning ------------------------------------------
# Each site sets its own authenticator and spawner; for example:
#   c.JupyterHub.authenticator_class = "generic-oauth"
#   c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"
# Kernels run on whichever node the single-user server runs on, so the sync agent
# (`nsls2-artifacts agent`) must run on every such node, and the deploy root must be
# mounted at the same absolute path everywhere (kernelspecs name absolute paths).
