"""Builds run as `hook.build_user` and cannot read the hook's token hashes (issue #17 item 6).

A real `hook serve` runs as root (as the systemd unit does) with a throwaway system user
as `build_user` and the token hashes in a 0600 `hook.tokens_file`. A real publish runs
from the offline channel; a `sitecustomize` on the hook's PYTHONPATH stands in for the
package scripts a build runs: inside the publish process it tries to read the tokens
file, the hook's queue database and the hook's memory. Every one must be refused while
the build still publishes. Also the startup refusals. Needs root and useradd.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.hook import TOKEN, HookServer, hook_site, wait_for_build, write_env

from nsls2_artifacts.hook.auth import token_hash

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("useradd") is None,
        reason="needs root and useradd to make a throwaway build user",
    ),
]

# What a hostile package script in a build would try, from inside the publish process.
_SITECUSTOMIZE = textwrap.dedent(
    """
    import json, os, sys
    if "publish" in sys.argv:
        seen = {"uid": os.getuid(), "home": os.environ.get("HOME")}
        for name in ("tokens", "sqlite", "mem", "config"):
            path = os.environ["PROBE_" + name.upper()].replace("PPID", str(os.getppid()))
            try:
                open(path, "rb").read(16)
                seen[name] = "read"
            except OSError as exc:
                seen[name] = type(exc).__name__
        with open(os.environ["PROBE_OUT"], "w") as out:
            json.dump(seen, out)
    """
)


@pytest.fixture
def build_user() -> Iterator[str]:
    name = f"nsls2t{secrets.token_hex(3)}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        yield name
    finally:
        subprocess.run(["userdel", "--force", name], check=False, capture_output=True)


@pytest.fixture
def public_root() -> Iterator[Path]:
    """A directory other users can enter (pytest's tmp_path is under a 0700 directory)."""
    root = Path(tempfile.mkdtemp(prefix="nsls2-build-user-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _runs_as(python: str, user: str) -> bool:
    try:
        return (
            subprocess.run(
                [python, "-c", "import nsls2_artifacts"],
                user=user,
                extra_groups=[],
                cwd="/",
                capture_output=True,
                timeout=60,
            ).returncode
            == 0
        )
    except OSError:
        return False


def _python_for(user: str, root: Path) -> str:
    """An interpreter with this project that `user` can run: this one, or (when it lives
    under a private home, as pyenv's does here) a venv of the system's same-version python
    that sees this environment's site-packages."""
    if _runs_as(sys.executable, user):
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = next((p for p in (f"/usr/bin/{version}", f"/usr/local/bin/{version}")
                   if os.access(p, os.X_OK)), None)  # fmt: skip
    if system is None:
        pytest.skip(f"{sys.executable} is not readable by other users and no system {version}")
    venv = root / "venv"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    ours = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "_nsls2_test.pth").write_text(f"import site; site.addsitedir({str(ours)!r})\n")
    python = str(venv / "bin" / "python")
    if not _runs_as(python, user):
        pytest.skip(f"{user} can run neither {sys.executable} nor a {version} venv")
    return python


def _site(root: Path, user: str, channel: Path | None = None, **hook: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tokens = root / "hook-tokens.yaml"
    tokens.write_text(yaml.safe_dump([{"name": "Dana", "sha256": token_hash(TOKEN)}]))
    tokens.chmod(0o600)
    settings = {"tokens_sha256": None, "tokens_file": str(tokens), "build_user": user, **hook}
    return hook_site(root, channel=channel, hook=settings)


def _serve_fails(config: Path, python: str = sys.executable, **kwargs: object) -> str:
    env = {k: v for k, v in os.environ.items() if k != "NSLS2_ARTIFACTS_CONFIG"}
    result = subprocess.run(
        [python, "-m", "nsls2_artifacts.cli", "hook", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=120, env=env, **kwargs,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    return " ".join((result.stdout + result.stderr).split())


def test_a_build_runs_as_build_user_and_cannot_read_the_token_hashes(
    public_root: Path, build_user: str, offline_channel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = _python_for(build_user, public_root)
    channel = public_root / "channel"
    shutil.copytree(offline_channel, channel, copy_function=os.link)  # files are 0644
    for folder, _dirs, _files in os.walk(channel):
        os.chmod(folder, 0o755)  # copytree copied the cache's 0700
    config = _site(public_root, build_user, channel)
    write_env(public_root / "manifests", "demo", {"python": "3.11.*"})
    shutil.chown(public_root / "store", build_user)
    probe_dir, out = public_root / "probe", public_root / "probe-out"
    probe_dir.mkdir()
    (probe_dir / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    out.mkdir()
    shutil.chown(out, build_user)
    monkeypatch.delenv("NSLS2_ARTIFACTS_CACHE", raising=False)  # the site's own cache
    monkeypatch.setenv("PYTHONPATH", str(probe_dir))
    monkeypatch.setenv("PROBE_TOKENS", str(public_root / "hook-tokens.yaml"))
    monkeypatch.setenv("PROBE_SQLITE", str(public_root / "hook-state" / "hook.sqlite"))
    monkeypatch.setenv("PROBE_MEM", "/proc/PPID/environ")
    monkeypatch.setenv("PROBE_CONFIG", str(config))
    monkeypatch.setenv("PROBE_OUT", str(out / "seen.json"))
    with HookServer(config, python=python) as hook, hook.client() as client:
        assert "builds-run-as-root" not in hook.logs()
        response = client.post("/api/builds", json={"env": "demo"})
        assert response.status_code == 202, response.text  # the token from the file works
        record = wait_for_build(client, response.json()["request_id"], ("published", "failed"))
        log = client.get(f"/builds/{record['request_id']}/log")
        assert record["state"] == "published", (record.get("reason"), log.text)
        assert client.get("/api/builds", headers={"Authorization": "Bearer wrong"}).is_error
        # promote runs as the build user too, and may write the store it owns
        promoted = client.post(
            "/api/envs/demo/promote", json={"build_id": record["build_id"], "label": "2026-3"}
        )
        assert promoted.status_code == 200, promoted.text
    lts = public_root / "store" / "demo" / "lts" / "2026-3.json"
    assert lts.stat().st_uid == int(subprocess.check_output(["id", "-u", build_user]))
    seen = json.loads((out / "seen.json").read_text())
    assert seen["uid"] == int(subprocess.check_output(["id", "-u", build_user]))
    assert seen["home"] == str(public_root / "build-home")
    assert seen["tokens"] == "PermissionError", seen
    assert seen["sqlite"] == "PermissionError", seen
    assert seen["mem"] == "PermissionError", seen  # the root hook's environment
    assert seen["config"] == "read", seen  # builds need the site config
    assert stat.S_IMODE((public_root / "hook-state").stat().st_mode) == 0o700


def test_hook_refuses_secrets_builds_could_read(public_root: Path, build_user: str) -> None:
    config = _site(public_root, build_user)
    tokens = public_root / "hook-tokens.yaml"
    tokens.chmod(0o644)
    said = _serve_fails(config)
    assert f"{tokens}: the hook's tokens file is open to group or others" in said
    assert f"chmod 600 {tokens}" in said
    tokens.chmod(0o600)
    shutil.chown(tokens, build_user)
    assert "belongs to the build user" in _serve_fails(config)
    # the old place: hashes in the site config, which builds read
    inline = hook_site(public_root / "inline", hook={"build_user": build_user})
    said = _serve_fails(inline)
    assert "hook.tokens_sha256 is in the site config" in said and "hook.tokens_file" in said
    # no such user
    gone = _site(public_root / "gone", "nsls2-no-such-user")
    assert "no such user 'nsls2-no-such-user'" in _serve_fails(gone)


def test_hook_not_root_with_build_user_refuses(public_root: Path, build_user: str) -> None:
    python = _python_for(build_user, public_root)
    config = _site(public_root, build_user)
    config.chmod(0o644)
    said = _serve_fails(config, python=python, user=build_user, extra_groups=[], cwd="/")
    assert "only root can start builds as another user" in said


def test_root_hook_without_build_user_warns(tmp_path: Path) -> None:
    with HookServer(hook_site(tmp_path)) as hook:
        logs = hook.logs()
    assert "warning: the hook runs as root and hook.build_user is not set" in " ".join(logs.split())
    assert "level=warning event=builds-run-as-root" in logs
