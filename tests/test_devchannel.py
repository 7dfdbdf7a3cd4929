"""The offline channel is a real conda channel: rattler solves and installs from it."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import rattler


def test_channel_has_indexed_python_and_wheel_packages(offline_channel: Path) -> None:
    repodata = json.loads((offline_channel / "linux-64" / "repodata.json").read_text())
    records = {**repodata.get("packages", {}), **repodata.get("packages.conda", {})}
    names = {r["name"] for r in records.values()}
    assert {"python", "ipykernel", "databroker", "tiled", "six"} <= names
    sixes = sorted(r["version"] for r in records.values() if r["name"] == "six")
    assert sixes == ["1.16.0", "1.17.0"]
    ipykernel = next(r for r in records.values() if r["name"] == "ipykernel")
    assert any(dep.startswith("python ") for dep in ipykernel["depends"])
    assert any(dep.split()[0] == "jupyter-client" for dep in ipykernel["depends"])
    assert (offline_channel / "noarch" / "repodata.json").exists()


def test_rattler_installs_a_working_env(offline_channel: Path, tmp_path: Path) -> None:
    async def solve_and_install() -> None:
        records = await rattler.solve(
            sources=[rattler.Channel(offline_channel.as_uri())],
            specs=["python 3.11.*", "databroker", "ipykernel", "six ==1.16.0"],
            platforms=["linux-64"],
        )
        await rattler.install(records, target_prefix=tmp_path / "env", cache_dir=tmp_path / "pkgs")

    asyncio.run(solve_and_install())
    python = tmp_path / "env" / "bin" / "python"
    out = subprocess.run(
        [
            python,
            "-c",
            "import sys, databroker, ipykernel, six; print(sys.prefix, six.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(tmp_path / "env"), "1.16.0"]
    # console scripts got a real shebang pointing into the new prefix
    assert (
        (tmp_path / "env" / "bin" / "jupyter-kernel")
        .read_text()
        .startswith(f"#!{tmp_path / 'env'}/bin/python")
    )
