"""Try `jupyterhub_config.py` on one machine: any user name and password, every user's server
runs as the account that starts the hub, state under NSLS2_HUB_STATE. Not for production.

    just demo && just hub-demo      # then open http://127.0.0.1:8000, sign in as anyone

Used by tests/test_jupyterhub.py (with its own ports and state directory). Extra settings
read from the environment (defaults in brackets):
  NSLS2_HUB_STATE        database, cookie secret, proxy pid, users' homes [./var/hub]
  NSLS2_HUB_API_PORT     the hub's internal API port [8081]
  NSLS2_PROXY_API_PORT   configurable-http-proxy's API port [8001]
"""

import os
import sys

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file
load_subconfig(os.path.join(os.path.dirname(__file__), "jupyterhub_config.py"))  # noqa: F821

state = os.path.abspath(os.environ.get("NSLS2_HUB_STATE", os.path.join("var", "hub")))
os.makedirs(state, exist_ok=True)

c.JupyterHub.authenticator_class = "dummy"  # any password
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"  # servers run as this account, homes under state
c.SimpleLocalProcessSpawner.home_dir_template = os.path.join(state, "homes", "{username}")
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]  # this environment's
if os.geteuid() == 0:
    c.Spawner.args.append("--allow-root")  # containers and CI run as root
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180

# The lab extension: a wheel installs it under sys.prefix/share/jupyter/labextensions, an
# editable install (this checkout's .venv) does not, so spawned servers also look in the
# checkout; otherwise the demo hub would show stock launcher lists without the NSLS-II section.
checkout_lab = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "nsls2_artifacts")
checkout_lab = os.path.join(os.path.normpath(checkout_lab), "jupyter")
wheel_lab = os.path.join(sys.prefix, "share", "jupyter", "labextensions", "nsls2-artifacts-lab")
if not os.path.isdir(wheel_lab) and os.path.isdir(os.path.join(checkout_lab, "labextensions")):
    c.Spawner.environment["JUPYTER_PATH"] += os.pathsep + checkout_lab

c.JupyterHub.hub_port = int(os.environ.get("NSLS2_HUB_API_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{}".format(
    int(os.environ.get("NSLS2_PROXY_API_PORT", "8001"))
)
c.ConfigurableHTTPProxy.pid_file = os.path.join(state, "proxy.pid")
c.JupyterHub.db_url = "sqlite:///" + os.path.join(state, "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.path.join(state, "cookie_secret")
