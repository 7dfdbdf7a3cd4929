"""deploy/jupyterhub_config.py (through deploy/jupyterhub_demo_config.py, which adds a dummy
login and a local spawner) in a real JupyterHub (PyPI) with configurable-http-proxy (npm) on
127.0.0.1: a user logs in through the login form, their server starts with the deploy
root on JUPYTER_PATH, the default kernel is the NSLS-II demo latest kernel (a real build
published from the offline channel and deployed by the agent), a cell imports databroker over
the kernel websocket, and a saved notebook records the concrete build."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest
from support.hub import USER, start_hub, stop_hub
from support.jupyter import notebook_json, wait_until

from nsls2_artifacts import layout

pytestmark = pytest.mark.slow
pytest.importorskip("jupyterhub")  # the [hub] extra (in [test]); `just venv` installs it
REPO = Path(__file__).resolve().parents[1]
CELL = "import sys, databroker; print(sys.prefix); print(databroker.__name__)"


def cookie(client: httpx.Client, name: str, path_prefix: str) -> str:
    for item in client.cookies.jar:
        if item.name == name and item.path.startswith(path_prefix):
            return item.value
    raise AssertionError(f"no {name} cookie for {path_prefix}: {list(client.cookies.jar)}")


def log_in(client: httpx.Client, user: str) -> str:
    """The login form, as a browser submits it; returns an API token for the user."""
    form = client.get("/hub/login")
    assert form.status_code == 200, form.text
    xsrf = cookie(client, "_xsrf", "/hub")
    client.post("/hub/login", data={"username": user, "password": "any", "_xsrf": xsrf})
    # the hub sets a new xsrf cookie for the signed-in user
    token = client.post(
        f"/hub/api/users/{user}/tokens",
        json={"note": "test"},
        headers={"X-XSRFToken": cookie(client, "_xsrf", "/hub")},
    )
    assert token.status_code == 201, token.text
    return token.json()["token"]


async def run_cell_over_websocket(url: str, token: str, code: str) -> tuple[dict, str]:
    """Send one execute_request over the hub's kernel websocket (support.jupyter.run_cell
    uses a kernel client); (execute_reply content, output)."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}))
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "username": USER,
        "session": uuid.uuid4().hex,
        "msg_type": "execute_request",
        "version": "5.3",
    }
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}}
    await conn.write_message(
        json.dumps(
            {
                "header": header,
                "parent_header": {},
                "metadata": {},
                "content": {**content, "allow_stdin": False, "stop_on_error": True},
                "channel": "shell",
            }
        )
    )
    output: list[str] = []
    reply, idle = None, False
    try:
        while reply is None or not idle:
            raw = await asyncio.wait_for(conn.read_message(), 180)
            assert raw is not None, "kernel websocket closed"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                output.append(msg["content"]["text"])
            elif kind == "error":
                output.append("\n".join(msg["content"]["traceback"]))
            elif kind == "execute_reply":
                reply = msg["content"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
    finally:
        conn.close()
    return reply, "".join(output)


def test_hub_user_gets_nsls2_default_kernel_with_databroker(deployed_demo, tmp_path: Path):
    cfg, build_id = deployed_demo
    hub, url, log = start_hub(tmp_path, cfg.deploy_root)
    tail = lambda: log.read_text(errors="replace")[-6000:]  # noqa: E731
    client = httpx.Client(base_url=url, follow_redirects=True, timeout=60)
    try:

        def hub_up() -> bool:
            assert hub.poll() is None, f"jupyterhub exited:\n{tail()}"
            try:
                return client.get("/hub/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(hub_up, 120, "jupyterhub")
        token = log_in(client, USER)
        api = httpx.Client(
            base_url=f"{url}/user/{USER}", headers={"Authorization": f"token {token}"}, timeout=60
        )

        def server_ready() -> bool:
            model = client.get(
                f"/hub/api/users/{USER}", headers={"Authorization": f"token {token}"}
            ).json()
            return bool(model.get("servers", {}).get("", {}).get("ready"))

        if not server_ready():  # the login redirect started it; make sure it is requested
            client.post(
                f"/hub/api/users/{USER}/server", headers={"Authorization": f"token {token}"}
            )
        wait_until(server_ready, 240, "the user's server")

        specs = api.get("/api/kernelspecs").json()
        assert specs["default"] == "nsls2-demo-latest", specs["default"]
        # the server's own python (no NSLS-II packages) is not offered on the hub
        assert "python3" not in specs["kernelspecs"], sorted(specs["kernelspecs"])
        assert specs["kernelspecs"]["nsls2-demo-latest"]["spec"]["metadata"]["nsls2"]["env"] == (
            "demo"
        )
        # a notebook opened with no kernel choice gets the default kernel
        nb = notebook_json("", "")
        del nb["metadata"]["kernelspec"]
        assert api.put(
            "/api/contents/hub.ipynb", json={"type": "notebook", "content": nb}
        ).is_success
        session = api.post(
            "/api/sessions", json={"path": "hub.ipynb", "name": "hub.ipynb", "type": "notebook"}
        )
        assert session.is_success, session.text
        kernel = session.json()["kernel"]
        assert kernel["name"] == "nsls2-demo-latest"

        ws_url = f"{url.replace('http', 'ws')}/user/{USER}/api/kernels/{kernel['id']}/channels"
        reply, output = asyncio.run(run_cell_over_websocket(ws_url, token, CELL))
        assert reply["status"] == "ok", output
        build_dir = layout.build_dir(cfg.deploy_root, "demo", build_id)
        assert output.split() == [str(build_dir), "databroker"]

        # the server extension is on: the saved notebook names the concrete build
        current = api.get("/api/contents/hub.ipynb").json()["content"]
        assert api.put(
            "/api/contents/hub.ipynb", json={"type": "notebook", "content": current}
        ).is_success
        saved = api.get("/api/contents/hub.ipynb").json()["content"]["metadata"]
        assert saved["nsls2"] == {"env": "demo", "build_id": build_id, "track": "latest"}
        # and its API answers under the user's base URL (/user/NAME/), as the lab extension asks
        running = api.get("/nsls2/api/kernels").json()["running"]
        assert running[kernel["id"]] == {
            "kernel_name": "nsls2-demo-latest",
            "env": "demo",
            "build_id": build_id,
        }
        api.close()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- hub log ---\n{tail()}") from None
    finally:
        client.close()
        stop_hub(hub)
