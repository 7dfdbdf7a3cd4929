"""Test helpers for the staff build hook: a site config and a real uvicorn server process.

`hook_site` writes a site config whose hook listens on a free loopback port;
`HookServer` starts `nsls2-artifacts hook serve` as a subprocess (so tests can SIGKILL
it), waits for /healthz, and gives an httpx client. Used by tests/test_hook_*.py and
benchmarks/bench_hook.py.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from support.manifests import write_env  # noqa: F401 - the hook tests import it here
from support.ports import free_port
from support.processes import kill9, stop, wait_for
from support.sites import write_site_yaml

TOKEN = "staff-token-for-tests-0123456789"
WEBHOOK_SECRET = "webhook-secret-for-tests"
SECRET_ENV = "NSLS2_TEST_HOOK_SECRET"


def hook_site(
    root: Path, *, channel: Path | None = None, hook: dict[str, Any] | None = None
) -> Path:
    """A site config under `root` with a hook on a free port; returns the config path."""
    settings = {
        "listen": f"127.0.0.1:{free_port()}",
        "tokens_sha256": [hashlib.sha256(TOKEN.encode()).hexdigest()],
        "webhook_secret_env": SECRET_ENV,
        "webhook_repos": {"NSLS-II/demo-pkg": ["demo"]},
        "nightly": None,
        "state_dir": "./hook-state",
        "concurrency": 2,
        "build_timeout_seconds": 900,
    }
    settings.update(hook or {})
    data: dict[str, Any] = {
        "manifests": "./manifests",
        "store": "./store",
        "deploy_root": "./deploy",
        # Without a channel, builds fail at the solve: fine for tests that never run one.
        "channel_mirrors": {"conda-forge": str(channel or root / "no-channel")},
        "hook": settings,
    }
    return write_site_yaml(root, data, dirs=("store", "manifests"))


def csrf_of(html: str) -> str:
    """The CSRF nonce of the form in a hook page."""
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def healthy(url: str) -> bool:
    """The hook at `url` answers /healthz with 200 (not yet listening: False)."""
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class HookServer:
    """`nsls2-artifacts hook serve --config CONFIG` in a subprocess of its own."""

    def __init__(
        self, config: Path, *, secret: str | None = WEBHOOK_SECRET, python: str | None = None
    ) -> None:
        self.config = config
        self.python = python or sys.executable  # builds run with the hook's interpreter
        data = yaml.safe_load(config.read_text())
        self.url = f"http://{data['hook']['listen']}"
        self.secret = secret
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.parent / "hook-serve.log"

    def start(self, timeout: float = 60) -> HookServer:
        env = {k: v for k, v in os.environ.items() if k != "NSLS2_ARTIFACTS_CONFIG"}
        if self.secret is not None:
            env[SECRET_ENV] = self.secret
        else:
            env.pop(SECRET_ENV, None)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "nsls2_artifacts.cli", "hook", "serve",
                 "--config", str(self.config), "--log-level", "warning"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )  # fmt: skip
        wait_for(self._healthy, timeout, "hook serve to answer /healthz", detail=self.logs)
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"hook serve exited {self.proc.returncode}:\n{self.logs()}")
        return healthy(self.url)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def client(self, token: str | None = TOKEN, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    def kill(self) -> None:
        """SIGKILL: the hook gets no chance to clean up (what a crash or OOM kill does)."""
        assert self.proc is not None
        kill9(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def __enter__(self) -> HookServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_build(
    client: httpx.Client, request_id: int, states: tuple[str, ...], timeout: float = 600
) -> dict[str, Any]:
    """Poll GET /api/builds/ID (a build request) until its state is one of `states`."""
    last: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        last.update(client.get(f"/api/builds/{request_id}").raise_for_status().json())
        return dict(last) if last["state"] in states else None

    return wait_for(
        reached,
        timeout,
        f"build request #{request_id} to reach {states}",
        interval=0.2,
        detail=lambda: str(last),
    )
