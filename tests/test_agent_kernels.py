"""Kernelspecs written by the agent, started for real through jupyter_client by name:
the latest kernel follows a flip on restart of the same KernelManager, LTS kernels stay
on their build, and `remove_kernelspecs_for` removes exactly the specs naming a build."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers_agent import commit_fake, write_site

from nsls2_artifacts.agent import kernels, layout
from nsls2_artifacts.agent.log import setup_logging
from nsls2_artifacts.agent.reconcile import run_pass
from nsls2_artifacts.config import load_config
from nsls2_artifacts.store import FilesystemStore

CELL = "import os; print(os.environ['CONDA_PREFIX']); print(os.environ['PATH'].split(':')[0])"


def run(cfg):
    return run_pass(cfg, FilesystemStore(cfg.store), setup_logging(logging.INFO, io.StringIO()))


def execute(client, code: str) -> str:
    out: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    reply = client.execute_interactive(code, timeout=60, output_hook=hook)
    assert reply["content"]["status"] == "ok", out
    return "".join(out)


@pytest.fixture
def jupyter_path(monkeypatch):
    def set_path(deploy_root: Path) -> None:
        monkeypatch.setenv("JUPYTER_PATH", str(deploy_root / "share" / "jupyter"))

    return set_path


def test_specs_metadata_and_listing(tmp_path: Path, jupyter_path) -> None:
    _, cfg = write_site(tmp_path / "site")
    first = commit_fake(cfg, tag="one", hours=1, lts="2026-1", display_name="NSLS-II base")
    second = commit_fake(cfg, tag="two", hours=2, display_name="NSLS-II base")
    assert run(cfg).ok
    jupyter_path(cfg.deploy_root)
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().get_all_specs()
    latest, lts = specs["nsls2-demo-latest"]["spec"], specs["nsls2-demo-2026-1"]["spec"]
    assert latest["display_name"] == "NSLS-II base (latest)"
    assert lts["display_name"] == "NSLS-II base 2026-1"
    assert latest["metadata"]["nsls2"] == {
        "env": "demo",
        "build_id": second.build_id,
        "channel": "latest",
        "label": "latest",
    }
    assert lts["metadata"]["nsls2"]["build_id"] == first.build_id
    assert lts["metadata"]["nsls2"]["channel"] == "lts"
    profiles = str(cfg.deploy_root / "etc" / "tiled" / "profiles")
    assert latest["env"]["TILED_SITE_PROFILES"] == profiles == lts["env"]["TILED_SITE_PROFILES"]
    prefix = layout.build_dir(cfg.deploy_root, "demo", first.build_id)
    assert lts["argv"][0] == str(prefix / "bin" / "python")
    assert lts["env"]["CONDA_PREFIX"] == str(prefix)
    assert "latest" in latest["argv"][2] and latest["argv"][0] == "/bin/sh"
    # the link is relative, so the deploy root can be mounted anywhere
    assert os.readlink(layout.latest_link(cfg.deploy_root, "demo")) == second.build_id


def test_latest_kernel_restart_follows_flip_lts_stays(tmp_path: Path, jupyter_path) -> None:
    from jupyter_client.manager import KernelManager

    _, cfg = write_site(tmp_path / "site")
    first = commit_fake(cfg, tag="one", hours=1, lts="2026-1")
    assert run(cfg).ok
    jupyter_path(cfg.deploy_root)
    first_dir = layout.build_dir(cfg.deploy_root, "demo", first.build_id)

    manager = KernelManager(kernel_name="nsls2-demo-latest")
    lts_manager = KernelManager(kernel_name="nsls2-demo-2026-1")
    manager.start_kernel()
    lts_manager.start_kernel()
    try:
        client = manager.blocking_client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        assert execute(client, CELL).split() == [str(first_dir), str(first_dir / "bin")]

        second = commit_fake(cfg, tag="two", hours=2)
        assert run(cfg).ok
        second_dir = layout.build_dir(cfg.deploy_root, "demo", second.build_id)
        # the running kernel keeps its build; a restart of the SAME manager gets the new one
        assert execute(client, CELL).split()[0] == str(first_dir)
        client.stop_channels()
        manager.restart_kernel(now=True)
        client = manager.blocking_client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        assert execute(client, CELL).split() == [str(second_dir), str(second_dir / "bin")]
        client.stop_channels()

        lts_manager.restart_kernel(now=True)
        lts_client = lts_manager.blocking_client()
        lts_client.start_channels()
        lts_client.wait_for_ready(timeout=60)
        assert execute(lts_client, CELL).split() == [str(first_dir), str(first_dir / "bin")]
        lts_client.stop_channels()
    finally:
        manager.shutdown_kernel(now=True)
        lts_manager.shutdown_kernel(now=True)


def test_remove_kernelspecs_for(tmp_path: Path) -> None:
    _, cfg = write_site(tmp_path / "site")
    first = commit_fake(cfg, tag="one", hours=1, lts="2026-1")
    second = commit_fake(cfg, tag="two", hours=2, lts="2026-2")
    assert run(cfg).ok
    names = set(kernels.installed(cfg.deploy_root))
    assert names == {"nsls2-demo-latest", "nsls2-demo-2026-1", "nsls2-demo-2026-2"}
    # the first build is not latest: only its LTS spec goes
    assert kernels.remove_kernelspecs_for(cfg.deploy_root, "demo", first.build_id) == [
        "nsls2-demo-2026-1"
    ]
    assert kernels.remove_kernelspecs_for(cfg.deploy_root, "demo", second.build_id) == [
        "nsls2-demo-2026-2",
        "nsls2-demo-latest",
    ]
    assert kernels.installed(cfg.deploy_root) == {}
    assert kernels.remove_kernelspecs_for(cfg.deploy_root, "demo", second.build_id) == []


def test_rewrites_are_idempotent_and_foreign_specs_untouched(tmp_path: Path) -> None:
    _, cfg = write_site(tmp_path / "site")
    commit_fake(cfg)
    assert run(cfg).ok
    foreign = cfg.deploy_root / "share" / "jupyter" / "kernels" / "python3" / "kernel.json"
    foreign.parent.mkdir(parents=True)
    foreign.write_text(json.dumps({"argv": ["python"], "display_name": "x", "language": "python"}))
    spec = cfg.deploy_root / "share" / "jupyter" / "kernels" / "nsls2-demo-latest" / "kernel.json"
    before = spec.stat().st_mtime_ns
    assert run(cfg).ok
    assert spec.stat().st_mtime_ns == before
    assert foreign.exists()


def test_tiled_profiles_load(tmp_path: Path) -> None:
    _, cfg = write_site(tmp_path / "site")
    assert run(cfg).ok
    profiles = cfg.deploy_root / "etc" / "tiled" / "profiles"
    code = (
        "from tiled.profiles import load_profiles; import json; "
        "print(json.dumps({k: v[1] for k, v in load_profiles().items()}))"
    )
    env = {**os.environ, "TILED_SITE_PROFILES": str(profiles)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["csx"] == {"uri": "http://127.0.0.1:9/api/v1/metadata/csx/raw"}


def test_profile_uri_forms_and_stale_profiles_removed(tmp_path: Path) -> None:
    from nsls2_artifacts.agent.profiles import profile_uri
    from nsls2_artifacts.config import Beamline

    assert profile_uri(Beamline("a", "https://t.example/api/")) == "https://t.example/api"
    assert profile_uri(Beamline("a", "https://t.example/api", ("csx", "raw"))) == (
        "https://t.example/api/v1/metadata/csx/raw"
    )
    assert profile_uri(Beamline("a", "https://t.example", ("csx",))) == (
        "https://t.example/api/v1/metadata/csx"
    )
    assert profile_uri(Beamline("a", "https://t.example/api/v1/metadata/x", ("y",))) == (
        "https://t.example/api/v1/metadata/x/y"
    )
    config, cfg = write_site(tmp_path / "site")
    assert run(cfg).ok
    profiles = cfg.deploy_root / "etc" / "tiled" / "profiles"
    (profiles / "mine.yml").write_text("mine: {uri: http://x}\n")  # an operator's own file
    data = yaml.safe_load(config.read_text())
    data["beamlines"] = {"hxn": {"uri": "http://h/api"}}  # csx leaves the config
    config.write_text(yaml.safe_dump(data))
    assert run(load_config(config)).ok
    assert sorted(p.name for p in profiles.iterdir()) == ["hxn.yml", "mine.yml"]
