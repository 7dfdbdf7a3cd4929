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


SMALL = (["packaging"], ["six==1.16.0"])  # a channel quick to build: python + 2 wheels

BUILDER = """
import json, sys, time
from pathlib import Path
from nsls2_artifacts.cli import exit_process
from nsls2_artifacts.devchannel import build_channel
dest, cache, go = sys.argv[1:4]
while not Path(go).exists():  # start together with the other builder
    time.sleep(0.01)
build_channel(dest, json.loads(sys.argv[4]), json.loads(sys.argv[5]), cache_dir=cache)
exit_process(0)  # as the CLI ends: no finalization racing py-rattler's threads
"""


def _names(channel: Path) -> set[str]:
    repodata = json.loads((channel / "linux-64" / "repodata.json").read_text())
    records = {**repodata.get("packages", {}), **repodata.get("packages.conda", {})}
    return {r["name"] for r in records.values()}


def test_two_builders_at_once_both_get_a_complete_channel(tmp_path: Path) -> None:
    """Two `dev-channel` runs on one cache used to delete each other's resolve folder and
    save a wheel list holding only `six`, trusted forever after: now one waits and reuses."""
    import sys

    dest, cache, go = tmp_path / "channel", tmp_path / "cache", tmp_path / "go"
    args = [str(dest), str(cache), str(go), json.dumps(SMALL[0]), json.dumps(SMALL[1])]
    builders = [
        subprocess.Popen([sys.executable, "-c", BUILDER, *args], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    go.touch()
    for builder in builders:
        _, err = builder.communicate(timeout=600)
        assert builder.returncode == 0, err.decode()
    assert {"python", "packaging", "six"} <= _names(dest)
    stamp = json.loads((dest / ".nsls2-devchannel.json").read_text())
    assert [w.split("-")[0] for w in stamp["wheels"]] == ["packaging", "six"]
    (listing,) = (cache / "wheels").glob("set-*.json")
    assert len(json.loads(listing.read_text())) == 2
    assert not list((cache / "wheels").glob("resolve-*"))  # per-builder folders cleaned


def test_a_wheel_list_or_channel_missing_a_package_is_not_trusted(tmp_path: Path) -> None:
    from nsls2_artifacts.devchannel import build_channel

    cache = tmp_path / "cache"
    first = build_channel(tmp_path / "first", *SMALL, cache_dir=cache)
    (listing,) = (cache / "wheels").glob("set-*.json")
    names = json.loads(listing.read_text())
    listing.write_text(json.dumps([n for n in names if n.startswith("six-")]))  # the race's
    second = build_channel(tmp_path / "second", *SMALL, cache_dir=cache)
    assert {"packaging", "six"} <= _names(second)
    # a channel whose stamp matches but which lost a package is rebuilt, not reused
    repodata_path = first / "linux-64" / "repodata.json"
    repodata = json.loads(repodata_path.read_text())
    for key in ("packages", "packages.conda"):
        repodata[key] = {k: v for k, v in repodata.get(key, {}).items() if v["name"] != "packaging"}
    repodata_path.write_text(json.dumps(repodata))
    assert "packaging" not in _names(first)
    build_channel(first, *SMALL, cache_dir=cache)
    assert "packaging" in _names(first)
