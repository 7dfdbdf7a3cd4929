"""Staff set-up of the hook: named tokens in the history, `hook serve` refusing to start
when nobody could use it, and `hook demo` (`just hook-demo`) in one step. Real CLI and a
real uvicorn server on 127.0.0.1; the queue stays paused (no builds run).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from support.hook import TOKEN, HookServer, free_port, healthy, hook_site, write_env
from support.processes import stop, wait_for

from nsls2_artifacts.config import load_config
from nsls2_artifacts.errors import ConfigError

pytestmark = pytest.mark.timeout(300)
CLI = [sys.executable, "-m", "nsls2_artifacts.cli"]
OTHER = "second-staff-token-0123456789abcdef"


def _sign_in(browser: httpx.Client, token: str) -> str:
    nonce = re.search(r'name="csrf" value="([^"]+)"', browser.get("/signin").text).group(1)
    response = browser.post("/signin", data={"csrf": nonce, "token": token, "next": "/"})
    assert response.status_code == 303
    return re.search(r'name="csrf" value="([^"]+)"', browser.get("/").text).group(1)


def test_token_names_show_in_history_and_plain_hashes_still_work(tmp_path: Path) -> None:
    out = subprocess.run(
        [*CLI, "hook", "token", "--name", "Dana Scully"], capture_output=True, text=True, check=True
    ).stdout
    token = re.search(r"token:\s+(\S+)", out).group(1)
    entry = yaml.safe_load(re.search(r"config: (.*)", out).group(1))["hook"]["tokens_sha256"][0]
    assert entry == {"name": "Dana Scully", "sha256": hashlib.sha256(token.encode()).hexdigest()}
    plain = hashlib.sha256(OTHER.encode()).hexdigest()
    config = hook_site(tmp_path, hook={"tokens_sha256": [entry, plain]})
    write_env(tmp_path / "manifests", "demo", {"python": "3.11.*"})
    with HookServer(config) as hook:
        with hook.client(token=OTHER) as client:
            assert client.post("/api/queue", json={"paused": True}).status_code == 200
        with hook.client(token=token) as client:
            assert client.post("/api/builds", json={"env": "demo"}).status_code == 202
        with httpx.Client(base_url=hook.url) as browser:
            csrf = _sign_in(browser, token)
            assert "signed in (Dana Scully)" in browser.get("/").text
            cancelled = browser.post("/builds/1/cancel", data={"csrf": csrf})
            assert cancelled.status_code in (200, 303)
            page = browser.get("/").text
        with hook.client(token=OTHER) as client:
            record = client.get("/api/builds/1").json()
    assert record["requested_by"] == "Dana Scully"
    assert "cancelled by Dana Scully" in record["reason"]
    assert "<td>Dana Scully <span" in page  # the history's "By" column


def test_bad_token_entry_names_the_config_key(tmp_path: Path) -> None:
    config = hook_site(tmp_path, hook={"tokens_sha256": [{"name": "x", "sha256": "abc"}]})
    with pytest.raises(ConfigError, match=r"hook\.tokens_sha256\[0\]\.sha256"):
        load_config(config)


def test_serve_refuses_to_start_when_nobody_could_sign_in(tmp_path: Path) -> None:
    config = hook_site(tmp_path, hook={"tokens_sha256": []})
    env = {k: v for k, v in os.environ.items() if k != "NSLS2_TEST_HOOK_SECRET"}
    result = subprocess.run(
        [*CLI, "hook", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no hook.tokens_sha256" in result.stdout + result.stderr
    assert "hook token --name" in result.stdout + result.stderr
    # a webhook secret alone is enough (CI can still trigger builds)
    HookServer(config).start().stop()


def test_embedded_default_has_no_nightly_schedule(tmp_path: Path) -> None:
    os.environ.pop("NSLS2_ARTIFACTS_CONFIG", None)
    assert load_config(None).hook.nightly is None


def test_hook_demo_writes_a_site_prints_url_and_token_and_serves(tmp_path: Path) -> None:
    (tmp_path / "manifests" / "demo").mkdir(parents=True)
    (tmp_path / "manifests" / "demo" / "pixi.toml").write_text("[workspace]\nname='demo'\n")
    listen = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "NSLS2_ARTIFACTS_CONFIG"}
    proc = subprocess.Popen(
        [*CLI, "hook", "demo", "--listen", listen],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        text = "".join(lines)
        token = re.search(r"token:\s+(\S+)", text).group(1)
        assert f"url:    http://{listen}/" in text
        site = load_config(tmp_path / "var" / "hook-demo" / "site.yaml")
        assert site.store == tmp_path / "var" / "store" and site.hook.nightly is None
        assert (tmp_path / "var" / "hook-demo" / "site.yaml").stat().st_mode & 0o077 == 0

        def up() -> bool:
            assert proc.poll() is None, text  # the demo exited instead of serving
            return healthy(f"http://{listen}")

        wait_for(up, 60, "hook demo to answer /healthz", interval=0.1, detail=lambda: text)
        with httpx.Client(base_url=f"http://{listen}") as browser:
            _sign_in(browser, token)
            home = browser.get("/").text
        assert "signed in (demo staff)" in home and 'data-env="demo"' in home
        assert token != TOKEN
    finally:
        stop(proc)


def test_env_without_builds_says_so_once_on_the_front_page(tmp_path: Path) -> None:
    config = hook_site(tmp_path)
    write_env(tmp_path / "manifests", "demo", {"python": "3.11.*"})
    with HookServer(config) as hook, httpx.Client(base_url=hook.url) as browser:
        page = browser.get("/").text
    cell = re.search(r'<td class="latest"[^>]*>(.*?)</td>', page, re.S).group(1)
    text = " ".join(re.sub(r"<[^>]+>", " ", cell).split())
    assert text == "no build published yet"


# the venv's just (rust-just, a binary): a pyenv shim would need bash and pyenv on PATH
_VENV_JUST = Path(sys.executable).parent / "just"
JUST = str(_VENV_JUST) if _VENV_JUST.exists() else shutil.which("just")


@pytest.mark.skipif(JUST is None, reason="just is not installed")
def test_hub_demo_finds_installs_or_names_the_proxy(tmp_path: Path) -> None:
    """`just hub-proxy` (run by `just hub-demo`): without npm it says exactly what to
    install; with npm it installs configurable-http-proxy into ./var/node; once there (or
    on PATH) it does nothing. npm is a stand-in script: the registry is not reachable here."""
    shutil.copy(Path(__file__).resolve().parents[1] / "Justfile", tmp_path / "Justfile")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sh").symlink_to(shutil.which("sh"))

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [JUST, "--justfile", str(tmp_path / "Justfile"), "hub-proxy"],
            cwd=tmp_path, env={"PATH": str(bin_dir)}, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    missing = run()
    assert missing.returncode == 1
    assert "needs configurable-http-proxy" in missing.stderr
    assert "apt-get install nodejs npm" in missing.stderr
    assert "npm install -g configurable-http-proxy" in missing.stderr
    npm = bin_dir / "npm"
    npm.write_text(
        '#!/bin/sh\necho "$@" > npm-args\n/bin/mkdir -p var/node/node_modules/.bin\n'
        "/usr/bin/touch var/node/node_modules/.bin/configurable-http-proxy\n"
        "/bin/chmod +x var/node/node_modules/.bin/configurable-http-proxy\n"
    )
    npm.chmod(0o755)
    installed = run()
    assert installed.returncode == 0, installed.stderr
    assert "installing configurable-http-proxy into ./var/node" in installed.stderr
    assert (tmp_path / "npm-args").read_text().split() == [
        "install", "--prefix", "var/node", "--no-audit", "--no-fund", "configurable-http-proxy"
    ]  # fmt: skip
    (tmp_path / "npm-args").unlink()
    assert run().returncode == 0 and not (tmp_path / "npm-args").exists()  # found: no npm


def test_tokens_file_entries_are_checked_and_hook_token_prints_its_line(tmp_path: Path) -> None:
    from nsls2_artifacts.config import read_tokens_file

    out = subprocess.run(
        [*CLI, "hook", "token", "--name", "Dana"], capture_output=True, text=True, check=True
    ).stdout
    line = re.search(r"or, in hook.tokens_file: (.*)", out).group(1)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(line + "\n- 1234\n")
    with pytest.raises(ConfigError, match=rf"{tokens}: \[1\]: expected a sha256 hex digest"):
        read_tokens_file(tokens)
    tokens.write_text(line + "\n")
    hashes, names = read_tokens_file(tokens)
    assert list(names.values()) == ["Dana"] and len(hashes) == 1
    bad = hook_site(tmp_path / "bad", hook={"build_user": ["x"]})
    with pytest.raises(ConfigError, match=r"hook\.build_user: expected a user name"):
        load_config(bad)
