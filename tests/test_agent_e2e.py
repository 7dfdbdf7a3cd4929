"""End to end with real parts: publish demo builds from the offline conda channel, deploy
them with the agent (real conda-pack archives, real conda-unpack, real smoke imports),
start the kernels through jupyter_client by kernelspec name, and read data from a real
tiled server through the beamline profile the agent wrote."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.agent import events, start_agent, write_site
from support.cli import run_cli
from support.jupyter import PREFIX_CELL, execute
from support.ports import free_port
from support.processes import stop, wait_for
from support.publish import publish_build

from nsls2_artifacts import layout

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def e2e(offline_channel: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("e2e")
    shutil.copytree(REPO / "manifests", root / "manifests")
    port = free_port()
    config, cfg = write_site(
        root,
        manifests="./manifests",
        channel_mirrors={"conda-forge": str(offline_channel)},
        beamlines={"csx": {"uri": f"http://127.0.0.1:{port}/api", "path": ["csx"]}},
        agent={"smoke_timeout_seconds": 300},
    )
    first = publish_build(config, "demo")
    assert run_cli(config, "promote", "demo", first, "--lts", "2026-1", check=False).returncode == 0
    out = run_cli(config, "agent", "--once", timeout=900, check=False)
    assert out.returncode == 0, out.stderr
    return root, config, cfg, port, first


def test_latest_kernel_follows_publish_lts_stays(e2e, monkeypatch) -> None:
    from jupyter_client.manager import KernelManager

    root, config, cfg, _port, first = e2e
    monkeypatch.setenv("JUPYTER_PATH", str(cfg.deploy_root / "share" / "jupyter"))
    first_dir = layout.build_dir(cfg.deploy_root, "demo", first)
    latest = KernelManager(kernel_name="nsls2-demo-latest")
    lts = KernelManager(kernel_name="nsls2-demo-2026-1")
    log = root / "daemon.log"
    daemon = start_agent(config, log=log)
    try:
        latest.start_kernel()
        assert execute(latest, PREFIX_CELL) == str(first_dir)

        # a changed manifest (one more package from the channel) -> a different lock
        pixi = root / "manifests" / "demo" / "pixi.toml"
        pixi.write_text(pixi.read_text() + 'six = "*"\n')
        second = publish_build(config, "demo")
        assert second != first
        link = layout.latest_link(cfg.deploy_root, "demo")
        wait_for(lambda: os.readlink(link) == second, timeout=600, what="the daemon's flip")
        second_dir = layout.build_dir(cfg.deploy_root, "demo", second)

        # the running kernel stays on its build until restarted; the same manager restarts
        # into the new build
        assert execute(latest, PREFIX_CELL) == str(first_dir)
        latest.restart_kernel(now=True)
        assert execute(latest, PREFIX_CELL + "; import six") == str(second_dir)

        # nsls2.yaml's logo travelled in manifest.json to both kernels' launcher cards
        logo = (root / "manifests" / "demo" / "logo.svg").read_bytes()
        for name in ("nsls2-demo-latest", "nsls2-demo-2026-1"):
            spec_dir = cfg.deploy_root / "share" / "jupyter" / "kernels" / name
            assert (spec_dir / "logo-svg.svg").read_bytes() == logo

        lts.start_kernel()
        assert execute(lts, PREFIX_CELL) == str(first_dir)
        lts.restart_kernel(now=True)
        assert execute(lts, PREFIX_CELL) == str(first_dir)
    finally:
        for manager in (latest, lts):
            if manager.has_kernel:
                manager.shutdown_kernel(now=True)
        stop(daemon, 120)
    assert daemon.returncode == 0  # SIGTERM: the daemon finishes its pass and exits cleanly
    text = log.read_text()
    assert [e["build"] for e in events(text, "deploy")] == [second]
    status = run_cli(config, "status", check=False).stdout
    assert first in status and second in status and "lts=2026-1" in status


TREE = """
from tiled.adapters.mapping import MapAdapter

tree = MapAdapter(
    {
        "csx": MapAdapter(
            {"scan1": MapAdapter({}, metadata={"sample": "LaB6", "energy_keV": 7.1})},
            metadata={"beamline": "csx"},
        )
    }
)
"""


def test_kernel_reads_tiled_through_beamline_profile(e2e, tmp_path: Path, monkeypatch) -> None:
    from jupyter_client.manager import KernelManager

    _root, _config, cfg, port, _first = e2e
    (tmp_path / "nsls2_test_tree.py").write_text(TREE)
    tiled = Path(sys.executable).parent / "tiled"
    server = subprocess.Popen(
        [
            str(tiled),
            "serve",
            "pyobject",
            "--public",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "nsls2_test_tree:tree",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "tiled.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    try:

        def listening() -> bool:
            assert server.poll() is None, (tmp_path / "tiled.log").read_text()
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, timeout=120, what="tiled server")
        monkeypatch.setenv("JUPYTER_PATH", str(cfg.deploy_root / "share" / "jupyter"))
        manager = KernelManager(kernel_name="nsls2-demo-latest")
        manager.start_kernel()
        try:
            out = execute(
                manager,
                "import databroker\n"
                "from tiled.client import from_profile\n"
                "c = from_profile('csx')\n"
                "print(sorted(c))\n"
                "print(c['scan1'].metadata['sample'], c['scan1'].metadata['energy_keV'])",
            )
        finally:
            manager.shutdown_kernel(now=True)
        assert out.splitlines() == ["['scan1']", "LaB6 7.1"]
    finally:
        stop(server)


def test_demo_kernel_prints_dated_display_name(e2e) -> None:
    """What `just demo` ends with: the latest kernel's display name with the build's date
    and python, then a real cell in it (databroker, the build's prefix, hygiene)."""
    import re

    _root, config, cfg, _port, _first = e2e
    out = run_cli(config, "demo-kernel", "--env", "demo", timeout=300, check=False).stdout
    name = re.search(r"kernel nsls2-demo-latest: (.*)", out)
    assert name, out
    assert re.fullmatch(r"NSLS-II demo \(latest, Python 3\.\d+, \d{4}-\d{2}-\d{2}\)", name[1])
    build = os.readlink(layout.latest_link(cfg.deploy_root, "demo"))
    assert name[1].endswith(f"{build[:4]}-{build[5:7]}-{build[8:10]})")  # the build's date
    assert str(layout.build_dir(cfg.deploy_root, "demo", build)) in out
    assert "user site-packages: False" in out and "databroker" in out
    # how to open JupyterLab with the extension: a JUPYTER_PATH that holds the prebuilt one
    lab = re.search(r"JUPYTER_PATH=(\S+) \.venv/bin/jupyter lab.* --ServerApp\.jpserver_ext", out)
    assert lab, out
    found = [Path(p) / "labextensions" / "nsls2-artifacts-lab" for p in lab[1].split(":")]
    assert any((path / "package.json").is_file() for path in found), lab[1]
