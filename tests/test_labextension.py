"""The prebuilt JupyterLab extension: the committed build is the build of the committed
sources (same recipe as labextension_src/stamp.mjs), it is installed where JupyterLab
looks by the package's data-files, and its own unit tests (node's test runner on
src/logic.ts) pass."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "nsls2_artifacts" / "jupyter" / "labextension_src"
BUILT = REPO / "nsls2_artifacts" / "jupyter" / "labextensions" / "nsls2-artifacts-lab"
# every input of the build: a dependency bumped in package-lock.json is a stale build too
SOURCES = ("package.json", "package-lock.json", "rspack.config.js", "tsconfig.json", "src", "style")


def sources_sha256() -> str:
    """sha256 over (relative path, content) of every source file, sorted by path."""
    files: list[str] = []
    for name in SOURCES:
        path = SRC / name
        if path.is_dir():
            files += [p.relative_to(SRC).as_posix() for p in path.rglob("*") if p.is_file()]
        else:
            files.append(name)
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + (SRC / name).read_bytes() + b"\0")
    return digest.hexdigest()


def test_committed_build_matches_sources() -> None:
    stamp = json.loads((BUILT / "build-sources.json").read_text())
    source_package = json.loads((SRC / "package.json").read_text())
    built_package = json.loads((BUILT / "package.json").read_text())
    assert stamp["version"] == source_package["version"] == built_package["version"]
    assert stamp["sources_sha256"] == sources_sha256(), (
        "the committed lab extension is older than its sources: run `just labextension`"
    )
    entry = BUILT / built_package["jupyterlab"]["_build"]["load"]
    assert entry.is_file(), entry


def test_wheel_data_files_cover_the_build() -> None:
    """pyproject's data-files put every built file under share/jupyter/labextensions."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    data_files = config["tool"]["setuptools"]["data-files"]
    installed = set()
    for target, patterns in data_files.items():
        if not target.startswith("share/jupyter/labextensions/nsls2-artifacts-lab"):
            continue
        for pattern in patterns:
            installed |= {f"{target}/{p.name}" for p in REPO.glob(pattern) if p.is_file()}
    built = {
        "share/jupyter/labextensions/nsls2-artifacts-lab/" + p.relative_to(BUILT).as_posix()
        for p in BUILT.rglob("*")
        if p.is_file()
    }
    assert installed == built


def test_extension_unit_tests() -> None:
    """`npm test`: tsc + node's test runner on the extension's pure logic (.ci/run installs
    Debian's nodejs and npm; `npm ci` fetches typescript from the npm registry once)."""
    assert shutil.which("npm"), "npm is needed for the lab extension's unit tests"
    if not (SRC / "node_modules" / "typescript").is_dir():
        install = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=SRC,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert install.returncode == 0, install.stderr[-4000:]
    result = subprocess.run(["npm", "test"], cwd=SRC, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout and "# pass 0" not in result.stdout


def test_beamline_profiles_read_for_the_lab_extension(tmp_path: Path) -> None:
    from nsls2_artifacts.jupyter.beamlines import profile_names

    profiles = tmp_path / "deploy" / "etc" / "tiled" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "csx.yml").write_text("csx: {uri: http://127.0.0.1:9/api}\n")
    (profiles / "site.yml").write_text("hxn: {uri: http://h}\niss: {uri: http://i}\n")
    (profiles / "broken.yml").write_text("csx: [unclosed\n")
    (profiles / "notes.txt").write_text("srx: {uri: http://s}\n")
    assert profile_names([tmp_path / "deploy", tmp_path / "absent"]) == ["csx", "hxn", "iss"]


def test_installed_jupyterlab_accepts_the_build(tmp_path: Path) -> None:
    """JupyterLab refuses (silently, in the browser) a prebuilt extension whose declared
    range of a singleton package misses the one it ships: apputils moved to 4.7 inside
    JupyterLab 4.6.x, and `~4.6.0` kept the extension out of every browser test."""
    env = dict(os.environ, JUPYTER_PATH=str(BUILT.parents[1]), JUPYTER_CONFIG_DIR=str(tmp_path))
    listing = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list", "--verbose"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    output = listing.stdout + listing.stderr
    assert "is not compatible" not in output, output
    line = next(line for line in output.splitlines() if "nsls2-artifacts-lab v" in line)
    assert "enabled" in line and "OK" in line, line


def test_beamline_envs_file_is_typed(tmp_path: Path, caplog) -> None:
    """beamline-envs.json (beamline -> env, written by the agent) is decoded as such: a
    malformed one counts as none and the log names the file and the beamline."""
    from nsls2_artifacts import layout
    from nsls2_artifacts.jupyter.beamlines import configured_envs

    good, bad = tmp_path / "good", tmp_path / "bad"
    for root, data in ((good, {"csx": "base"}), (bad, {"hxn": 3})):
        path = layout.beamline_envs_file(root)
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(data))
    assert configured_envs([good, tmp_path / "none"]) == {"csx": "base"}
    assert configured_envs([bad, good]) == {"csx": "base"}
    assert "beamline-envs.json" in caplog.text and "'hxn'" in caplog.text
