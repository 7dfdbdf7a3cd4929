"""Kernelspecs written by the agent, started for real through jupyter_client by name:
the latest kernel follows a flip on restart of the same KernelManager, LTS kernels stay
on their build, and `remove_kernelspecs_for` removes exactly the specs naming a build."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import sysconfig
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.agent import (
    T0,
    agent_pass,
    commit_build,
    commit_fake,
    fake_env_members,
    member,
    promote_fake,
    tar_bytes,
    write_site,
)
from support.cli import run_cli
from support.jupyter import run_cell
from support.sites import rewrite_config

from nsls2_artifacts import layout
from nsls2_artifacts.agent import kernel_ceiling, kernels, logos
from nsls2_artifacts.agent.log import setup_logging
from nsls2_artifacts.agent.reconcile import run_pass
from nsls2_artifacts.records import KernelExtras, KernelLogo, PackageRef
from nsls2_artifacts.store import FilesystemStore

CELL = "import os; print(os.environ['CONDA_PREFIX']); print(os.environ['PATH'].split(':')[0])"


def stdout_of(client, code: str) -> str:
    out: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
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
    extras = KernelExtras(beamlines=("csx", "hxn"))
    first = commit_fake(
        cfg, tag="one", hours=1, lts="2026-1", display_name="NSLS-II base", kernel=extras
    )
    second = commit_fake(cfg, tag="two", hours=2, display_name="NSLS-II base", kernel=extras)
    assert agent_pass(cfg).ok
    jupyter_path(cfg.deploy_root)
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().get_all_specs()
    latest, lts = specs["nsls2-demo-latest"]["spec"], specs["nsls2-demo-2026-1"]["spec"]
    day = second.created[:10]
    assert latest["display_name"] == f"NSLS-II base (latest, Python 3.11, {day})"
    expires = (T0 + timedelta(hours=1) + timedelta(days=365.25 * 3)).date()
    assert lts["display_name"] == f"NSLS-II base 2026-1 (Python 3.11, until {expires:%Y-%m})"
    assert latest["metadata"]["nsls2"] == {
        "env": "demo",
        "build_id": second.build_id,
        "channel": "latest",
        "label": "latest",
        "labels": [],
        "env_display_name": "NSLS-II base",
        "created": second.created,
        "python": "3.11.7",
        "expires": None,
        "promoted": None,
        "listed": True,
        "beamlines": ["csx", "hxn"],
        "memory_limit": None,
    }
    meta = lts["metadata"]["nsls2"]
    assert (meta["build_id"], meta["channel"], meta["created"]) == (
        first.build_id,
        "lts",
        first.created,
    )
    assert (meta["expires"], meta["listed"], meta["labels"]) == (str(expires), True, ["2026-1"])
    profiles = str(cfg.deploy_root / "etc" / "tiled" / "profiles")
    assert latest["env"]["TILED_SITE_PROFILES"] == profiles == lts["env"]["TILED_SITE_PROFILES"]
    prefix = layout.build_dir(cfg.deploy_root, "demo", first.build_id)
    assert lts["argv"][0] == "/bin/sh" and str(prefix / "bin" / "python") in lts["argv"][2]
    assert lts["env"]["CONDA_PREFIX"] == str(prefix)
    assert "latest" in latest["argv"][2] and latest["argv"][0] == "/bin/sh"
    # the link is relative, so the deploy root can be mounted anywhere
    assert os.readlink(layout.latest_link(cfg.deploy_root, "demo")) == second.build_id
    # stock Jupyter finds the generated logos as kernel resources
    for name in ("nsls2-demo-latest", "nsls2-demo-2026-1"):
        resources = set(os.listdir(specs[name]["resource_dir"]))
        assert {"logo-svg.svg", "logo-64x64.png"} <= resources


def test_listed_lts_merged_labels_and_own_logo(tmp_path: Path, jupyter_path) -> None:
    """The newest `listed_lts` LTS builds are listed; two labels on one build make one
    listed kernel naming both, the other label's spec stays unlisted; an env's PNG logo
    becomes the spec's PNG (and is wrapped in its SVG)."""
    config, cfg = write_site(tmp_path / "site", kernels={"listed_lts": 2, "memory_limit": "2GiB"})
    png = logos.default_png("zz-custom")
    extras = KernelExtras(logo=KernelLogo("png", base64.b64encode(png).decode()), memory_limit=None)
    old = commit_fake(cfg, tag="a", hours=1, lts="2025-1")
    mid = commit_fake(cfg, tag="b", hours=2, lts="2025-2")
    new = commit_fake(cfg, tag="c", hours=3, lts="2026-1", kernel=extras)
    promote_fake(cfg, "demo", "2026-1b", new.build_id, hours=5)  # a second label, later
    commit_fake(cfg, tag="d", hours=4)  # latest, no label
    assert agent_pass(cfg).ok
    found = {n: kernels.spec_target(d) for n, d in kernels.installed(cfg.deploy_root).items()}
    listed = {n for n, meta in found.items() if meta["listed"]}
    assert listed == {"nsls2-demo-latest", "nsls2-demo-2026-1b", "nsls2-demo-2025-2"}
    assert set(found) == listed | {"nsls2-demo-2025-1", "nsls2-demo-2026-1"}
    assert found["nsls2-demo-2026-1b"]["labels"] == ["2026-1", "2026-1b"]
    assert found["nsls2-demo-2026-1"]["labels"] == ["2026-1"]
    assert (
        found["nsls2-demo-2026-1"]["build_id"]
        == new.build_id
        == found["nsls2-demo-2026-1b"]["build_id"]
    )
    # support of a build lasts as long as its newest label's
    expires = (T0 + timedelta(hours=5) + timedelta(days=365.25 * 3)).date().isoformat()
    assert (
        found["nsls2-demo-2026-1"]["expires"] == expires == found["nsls2-demo-2026-1b"]["expires"]
    )
    specs = cfg.deploy_root / "share" / "jupyter" / "kernels"
    merged = json.loads((specs / "nsls2-demo-2026-1b" / "kernel.json").read_text())
    assert merged["display_name"].startswith("NSLS-II test 2026-1 / 2026-1b (Python 3.11, until ")
    # the per-env override (memory_limit: null in nsls2.yaml) beats the site's 2GiB
    assert found["nsls2-demo-2026-1b"]["memory_limit"] is None
    assert " none " in merged["argv"][2] and "kernel_memory.py" not in merged["argv"][2]
    assert found["nsls2-demo-2025-2"]["memory_limit"] == 2 * 1024**3
    assert (specs / "nsls2-demo-2026-1b" / "logo-64x64.png").read_bytes() == png
    svg = (specs / "nsls2-demo-2026-1b" / "logo-svg.svg").read_bytes()
    assert base64.b64encode(png) in svg
    default = (specs / "nsls2-demo-2025-2" / "logo-64x64.png").read_bytes()
    assert default == logos.default_png("demo") != png
    assert old.build_id == found["nsls2-demo-2025-1"]["build_id"]
    status = run_cli(config, "status", check=False).stdout
    assert f"demo/{old.build_id}  (unlisted)" in status
    assert f"demo/{mid.build_id}  (unlisted)" not in status
    assert mid.build_id == found["nsls2-demo-2025-2"]["build_id"]


def test_protocol_version_read_from_the_builds_ipykernel(tmp_path: Path) -> None:
    _, cfg = write_site(tmp_path / "site")
    version = b"kernel_protocol_version_info = (5, 9)\n"
    path = "lib/python3.11/site-packages/ipykernel/_version.py"
    commit_fake(cfg, extra=[member(path, version)])
    assert agent_pass(cfg).ok
    spec = kernels.installed(cfg.deploy_root)["nsls2-demo-latest"]
    assert spec["kernel_protocol_version"] == "5.9"
    assert kernels.protocol_version(str(tmp_path / "none"), "6.29.5") == "5.3"


def test_retired_record_when_an_lts_kernel_goes(tmp_path: Path) -> None:
    _, cfg = write_site(tmp_path / "site")
    first = commit_fake(cfg, tag="one", hours=1, lts="2026-1")
    commit_fake(cfg, tag="two", hours=2)
    assert agent_pass(cfg).ok
    display = kernels.installed(cfg.deploy_root)["nsls2-demo-2026-1"]["display_name"]
    assert kernels.read_retired(cfg.deploy_root) == {}
    (cfg.store / "demo" / "lts" / "2026-1.json").unlink()  # the label is withdrawn
    assert agent_pass(cfg).ok
    assert "nsls2-demo-2026-1" not in kernels.installed(cfg.deploy_root)
    record = json.loads(kernels.retired_path(cfg.deploy_root).read_text())
    assert record["kernels"]["nsls2-demo-2026-1"] == {
        "env": "demo",
        "label": "2026-1",
        "build_id": first.build_id,
        "display_name": display,
        "retired": datetime.now(UTC).date().isoformat(),
    }
    promote_fake(cfg, "demo", "2026-1", first.build_id, hours=3)  # back again
    assert agent_pass(cfg).ok
    assert kernels.read_retired(cfg.deploy_root) == {}


def test_an_unreadable_retired_record_is_never_overwritten(tmp_path: Path) -> None:
    """retired.json that cannot be parsed keeps its bytes (an operator can recover the
    records it holds); the LTS kernel still goes, and the agent says why nothing was
    recorded."""
    _, cfg = write_site(tmp_path / "site")
    commit_fake(cfg, tag="one", hours=1, lts="2026-1")
    commit_fake(cfg, tag="two", hours=2)
    assert agent_pass(cfg).ok
    path = kernels.retired_path(cfg.deploy_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    garbage = b'{"kernels": {"nsls2-demo-2025-1": {"env": "demo", "label": "2025-1"'  # cut off
    path.write_bytes(garbage)
    (cfg.store / "demo" / "lts" / "2026-1.json").unlink()
    lines = io.StringIO()
    assert run_pass(cfg, FilesystemStore(cfg.store), setup_logging(stream=lines)).ok
    assert "nsls2-demo-2026-1" not in kernels.installed(cfg.deploy_root)
    assert path.read_bytes() == garbage
    assert kernels.read_retired(cfg.deploy_root) == {}  # readers see none, write nothing
    assert "event=retired-unreadable kernel=nsls2-demo-2026-1" in lines.getvalue()


def test_latest_kernel_restart_follows_flip_lts_stays(tmp_path: Path, jupyter_path) -> None:
    from jupyter_client.manager import KernelManager

    _, cfg = write_site(tmp_path / "site")
    first = commit_fake(cfg, tag="one", hours=1, lts="2026-1")
    assert agent_pass(cfg).ok
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
        assert stdout_of(client, CELL).split() == [str(first_dir), str(first_dir / "bin")]

        second = commit_fake(cfg, tag="two", hours=2)
        assert agent_pass(cfg).ok
        second_dir = layout.build_dir(cfg.deploy_root, "demo", second.build_id)
        # the running kernel keeps its build; a restart of the SAME manager gets the new one
        assert stdout_of(client, CELL).split()[0] == str(first_dir)
        client.stop_channels()
        manager.restart_kernel(now=True)
        client = manager.blocking_client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        assert stdout_of(client, CELL).split() == [str(second_dir), str(second_dir / "bin")]
        client.stop_channels()

        lts_manager.restart_kernel(now=True)
        lts_client = lts_manager.blocking_client()
        lts_client.start_channels()
        lts_client.wait_for_ready(timeout=60)
        assert stdout_of(lts_client, CELL).split() == [str(first_dir), str(first_dir / "bin")]
        lts_client.stop_channels()
    finally:
        manager.shutdown_kernel(now=True)
        lts_manager.shutdown_kernel(now=True)


def test_remove_kernelspecs_for(tmp_path: Path) -> None:
    _, cfg = write_site(tmp_path / "site")
    first = commit_fake(cfg, tag="one", hours=1, lts="2026-1")
    second = commit_fake(cfg, tag="two", hours=2, lts="2026-2")
    assert agent_pass(cfg).ok
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
    assert agent_pass(cfg).ok
    foreign = cfg.deploy_root / "share" / "jupyter" / "kernels" / "python3" / "kernel.json"
    foreign.parent.mkdir(parents=True)
    foreign.write_text(json.dumps({"argv": ["python"], "display_name": "x", "language": "python"}))
    spec = cfg.deploy_root / "share" / "jupyter" / "kernels" / "nsls2-demo-latest" / "kernel.json"
    before = spec.stat().st_mtime_ns
    assert agent_pass(cfg).ok
    assert spec.stat().st_mtime_ns == before
    assert foreign.exists()


def test_tiled_profiles_load(tmp_path: Path) -> None:
    _, cfg = write_site(tmp_path / "site")
    assert agent_pass(cfg).ok
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
    assert agent_pass(cfg).ok
    profiles = cfg.deploy_root / "etc" / "tiled" / "profiles"
    (profiles / "mine.yml").write_text("mine: {uri: http://x}\n")  # an operator's own file
    # csx leaves the config
    assert agent_pass(rewrite_config(config, beamlines={"hxn": {"uri": "http://h/api"}})).ok
    assert sorted(p.name for p in profiles.iterdir()) == ["hxn.yml", "mine.yml"]
    envs_file = layout.beamline_envs_file(cfg.deploy_root)
    assert json.loads(envs_file.read_text()) == {}
    # beamlines.NAME.env (the env its launcher card starts) goes beside, not into, tiled's file
    assert agent_pass(
        rewrite_config(config, beamlines={"hxn": {"uri": "http://h/api", "env": "demo"}})
    ).ok
    assert json.loads(envs_file.read_text()) == {"hxn": "demo"}
    assert "demo" not in (profiles / "hxn.yml").read_text()


def started(manager):
    client = manager.blocking_client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return client


NOTICE_MIME = "application/vnd.nsls2.notice+json"


def run_cell_notices(client, code: str) -> tuple[str, str, list[dict], dict]:
    """(stdout, stderr, restart notices, reply content): the notices are display outputs
    carrying both text/plain and the lab extension's notice bundle."""
    out: list[str] = []
    err: list[str] = []
    notices: list[dict] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            (out if msg["content"]["name"] == "stdout" else err).append(msg["content"]["text"])
        elif msg["msg_type"] == "display_data" and NOTICE_MIME in msg["content"]["data"]:
            data = msg["content"]["data"]
            assert data[NOTICE_MIME]["text"] == data["text/plain"]
            notices.append(data[NOTICE_MIME])

    reply = client.execute_interactive(code, timeout=60, output_hook=hook)
    return "".join(out), "".join(err), notices, reply["content"]


HYGIENE_CELL = """\
import importlib.util, json, os, site, sys
print(json.dumps({
    "user_site": site.ENABLE_USER_SITE,
    "leaked": importlib.util.find_spec("leaked_module") is not None,
    "user_module": importlib.util.find_spec("user_module") is not None,
    "env": {k: os.environ.get(k) for k in ("PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV",
            "CONDA_DEFAULT_ENV", "PYTHONNOUSERSITE", "LD_PRELOAD", "MALLOC_ARENA_MAX",
            "NSLS2_MEMORY_MECHANISM")},
    "startup_ran": "STARTUP_RAN" in globals(),
}))
"""


@pytest.mark.parametrize("kernel", ["nsls2-demo-latest", "nsls2-demo-2026-1"])
def test_hygiene_and_memory_ceiling(tmp_path: Path, jupyter_path, monkeypatch, kernel) -> None:
    """What the server's environment says about python does not reach the kernel; a
    too-big allocation is a MemoryError in the notebook and the kernel carries on."""
    from jupyter_client.manager import KernelManager

    _, cfg = write_site(tmp_path / "site", kernels={"memory_limit": "2GiB"})
    # the env's python is the base interpreter (a venv's python never reads the user site
    # anyway), finding ipykernel through the build's own PYTHONPATH
    purelib = sysconfig.get_paths()["purelib"]
    wrapper = f'#!/bin/sh\nPYTHONPATH={purelib} exec {sys._base_executable} "$@"\n'
    members = [m for m in fake_env_members() if m[0].name != "bin/python"]
    members.append(member("bin/python", wrapper.encode(), mode=0o755))
    commit_build(cfg.store, "demo", tar_bytes(members), lts="2026-1")
    assert agent_pass(cfg).ok
    jupyter_path(cfg.deploy_root)
    leaks = tmp_path / "leaks"
    leaks.mkdir()
    (leaks / "leaked_module.py").write_text("")
    user_site = (
        tmp_path / "home" / ".local" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    )
    (user_site / "site-packages").mkdir(parents=True)
    (user_site / "site-packages" / "user_module.py").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (leaks / "startup.py").write_text("STARTUP_RAN = True\n")
    monkeypatch.setenv("PYTHONPATH", str(leaks))
    monkeypatch.setenv("PYTHONSTARTUP", str(leaks / "startup.py"))
    monkeypatch.setenv("VIRTUAL_ENV", str(leaks))
    monkeypatch.setenv("CONDA_DEFAULT_ENV", "server-env")
    monkeypatch.setenv("PYTHONNOUSERSITE", "")  # the server's own choice does not matter
    monkeypatch.setenv("NSLS2_MEMORY_CEILING", "rlimit")  # the MemoryError path, even as root
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    manager = KernelManager(kernel_name=kernel)
    manager.start_kernel()
    try:
        client = started(manager)
        out, _, reply = run_cell(client, HYGIENE_CELL)
        assert reply["status"] == "ok", reply
        seen = json.loads(out)
        cpus = kernel_ceiling.cpu_allowance()
        assert seen["user_site"] is False and seen["user_module"] is False
        assert seen["leaked"] is False and seen["startup_ran"] is False
        assert seen["env"] == {
            "PYTHONPATH": purelib,  # the build's own, set by its bin/python
            "PYTHONSTARTUP": None,
            "VIRTUAL_ENV": None,
            "CONDA_DEFAULT_ENV": None,
            "PYTHONNOUSERSITE": "1",
            "LD_PRELOAD": None,
            # arenas for the kernel's CPUs (glibc would make up to 8 per core)
            "MALLOC_ARENA_MAX": str(max(2, kernel_ceiling.thread_count(cpus, 2 << 30, "rlimit"))),
            "NSLS2_MEMORY_MECHANISM": "rlimit",
        }
        out, err, reply = run_cell(client, "big = bytearray(3 * 1024**3)")
        assert reply["status"] == "error" and reply["ename"] == "MemoryError", reply
        assert "may use at most 2.0 GiB" in err and "kernels.memory_limit" in err, err
        out, _, reply = run_cell(client, "small = bytearray(50 * 1024**2); print(len(small))")
        assert reply["status"] == "ok" and out.strip() == str(50 * 1024**2)
        assert manager.is_alive()
        client.stop_channels()
    finally:
        manager.shutdown_kernel(now=True)


def test_restart_notice_once_after_a_flip_never_on_lts(tmp_path: Path, jupyter_path) -> None:
    from jupyter_client.manager import KernelManager

    config, cfg = write_site(tmp_path / "site")
    python = PackageRef("python", "3.11.7", "0", "conda-forge")
    old_pkgs = (python, PackageRef("numpy", "1.26.4", "0", "c"), PackageRef("gone", "1", "0", "c"))
    new_pkgs = (
        python,
        PackageRef("numpy", "2.1.0", "0", "c"),
        PackageRef("lmfit", "1.3.2", "0", "c"),
    )
    commit_fake(cfg, tag="one", hours=1, lts="2026-1", packages=old_pkgs)
    assert agent_pass(cfg).ok
    jupyter_path(cfg.deploy_root)
    latest_manager = KernelManager(kernel_name="nsls2-demo-latest")
    lts_manager = KernelManager(kernel_name="nsls2-demo-2026-1")
    latest_manager.start_kernel()
    lts_manager.start_kernel()
    try:
        latest, lts = started(latest_manager), started(lts_manager)
        out, err, notices, _ = run_cell_notices(latest, "print('before')")
        assert (out, err, notices) == ("before\n", "", [])  # nothing to say yet
        namespace, _, _ = run_cell(latest, "print(sorted(k for k in dir() if 'nsls2' in k))")
        assert namespace == "[]\n"  # the startup file leaves the user's namespace alone
        second = commit_fake(cfg, tag="two", hours=2, packages=new_pkgs)
        assert agent_pass(cfg).ok
        out, err, notices, reply = run_cell_notices(latest, "print(1 + 1)")
        assert reply["status"] == "ok" and out == "2\n"  # the cell's own output is unchanged
        assert err == ""  # a notice, not a red stderr box
        assert len(notices) == 1 and notices[0]["build_id"] == second.build_id
        text = notices[0]["text"]
        assert text.startswith("[NSLS-II] NSLS-II test latest changed to a newer build")
        assert second.created[:10] in text and "Restart the kernel" in text
        assert "numpy 1.26.4\u21922.1.0" in text and "+lmfit 1.3.2" in text and "\u2212gone" in text
        assert "(older)" not in text and notices[0]["direction"] == "newer"
        assert run_cell_notices(latest, "print(3)")[:3] == ("3\n", "", [])  # once per build
        for code in ("print(1)", "print(2)"):
            assert run_cell_notices(lts, code)[1:3] == ("", [])  # LTS kernels never get it
        downgraded = (python, PackageRef("numpy", "1.25.0", "0", "c"), new_pkgs[2])
        third = commit_fake(cfg, tag="three", hours=3, packages=downgraded)
        assert agent_pass(cfg).ok
        _, _, notices, _ = run_cell_notices(latest, "pass")
        text = notices[0]["text"]
        # a newer build that downgrades a package says so (it is not "a newer numpy")
        assert third.build_id in text and "numpy 1.26.4\u21921.25.0 (older)" in text
        assert run_cell_notices(latest, "pass")[2] == []
        # a restart binds the newest build: nothing to announce
        latest.stop_channels()
        latest_manager.restart_kernel(now=True)
        latest = started(latest_manager)
        assert run_cell_notices(latest, "print(4)")[:3] == ("4\n", "", [])
        # a rollback to an earlier build is announced as one
        assert run_cli(config, "rollback", "demo", second.build_id, check=False).returncode == 0
        _, _, notices, _ = run_cell_notices(latest, "pass")
        text = notices[0]["text"]
        assert "latest changed to an older build (rolled back)" in text
        assert second.build_id in text and "newer" not in text
        latest.stop_channels()
        lts.stop_channels()
    finally:
        latest_manager.shutdown_kernel(now=True)
        lts_manager.shutdown_kernel(now=True)


def test_expires_follows_the_envs_lts_years(tmp_path: Path) -> None:
    _, cfg = write_site(tmp_path / "site")
    (cfg.manifests / "demo").mkdir(parents=True)
    (cfg.manifests / "demo" / "nsls2.yaml").write_text("retention: {lts_years: 1}\n")
    commit_fake(cfg, hours=1, lts="2026-1")
    assert agent_pass(cfg).ok
    meta = kernels.spec_target(kernels.installed(cfg.deploy_root)["nsls2-demo-2026-1"])
    assert meta["expires"] == (T0 + timedelta(hours=1, days=365.25)).date().isoformat()
