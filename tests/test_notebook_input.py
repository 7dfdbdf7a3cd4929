"""`notebook info|pin` on hostile or careless input (issue 17, item 7): a notebook that is a
FIFO, too large, nested 200,000 deep, or carries terminal escape codes in its metadata
gets a clear one-line error or escaped output, never a hang, a traceback or raw control
characters on the user's terminal; the file is left untouched.

Real CLI subprocesses against a real (fake-env) deploy root, as in test_jupyter_extension.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
from pathlib import Path

from support.agent import commit_fake, write_site
from support.jupyter import notebook_cli, notebook_json

from nsls2_artifacts.agent.log import setup_logging
from nsls2_artifacts.agent.reconcile import run_pass
from nsls2_artifacts.jupyter.notebook import NOTEBOOK_LIMIT
from nsls2_artifacts.store import FilesystemStore


def _site(tmp_path: Path) -> Path:
    """A deploy root with one LTS kernel (nsls2-demo-2026-1), made by one agent pass."""
    config, cfg = write_site(tmp_path / "site")
    commit_fake(cfg, tag="one", hours=1, lts="2026-1")
    log = setup_logging(logging.INFO, io.StringIO())
    assert run_pass(cfg, FilesystemStore(cfg.store), log).ok
    return config


def _refused(config: Path, path: Path, reason: str) -> None:
    for command in ("info", "pin"):
        result = notebook_cli(config, command, str(path))
        assert result.returncode == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert str(path) in result.stderr and reason in result.stderr, result.stderr


def test_deep_large_and_special_notebooks_get_clear_errors(tmp_path: Path) -> None:
    config = _site(tmp_path)
    deep = tmp_path / "deep.ipynb"
    deep.write_bytes(b"[" * 200_000 + b"]" * 200_000)
    _refused(config, deep, "nested too deeply")
    assert deep.read_bytes()[:3] == b"[[["

    # deep enough to load, maybe too deep to write back in the notebook's own layout
    nb = notebook_json("nsls2-demo-latest", "x")
    nb["metadata"]["nsls2"] = {"env": "demo", "build_id": "b", "track": "latest"}
    nb["metadata"]["deep"] = "@"
    text = json.dumps(nb).replace('"@"', "[" * 950 + "]" * 950)
    half = tmp_path / "half-deep.ipynb"
    half.write_text(text)
    result = notebook_cli(config, "pin", str(half), "2026-1")
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode:
        assert "nested too deeply" in result.stderr and half.read_text() == text

    big = tmp_path / "big.ipynb"
    with open(big, "wb") as handle:  # sparse: the size is what counts, nothing is read
        handle.truncate(NOTEBOOK_LIMIT + 1)
    _refused(config, big, "over the")


def test_control_characters_from_a_notebook_are_escaped(tmp_path: Path) -> None:
    config = _site(tmp_path)
    path = tmp_path / "nb.ipynb"
    nb = notebook_json("nsls2-\x1b]0;owned\x07demo", "x")
    nb["metadata"]["nsls2"] = {
        "env": "demo\x1b[2J\x1b[31m",
        "build_id": "2026.01.01T000000Z-0badc0de\r",
        "track": "latest\u202e",
    }
    path.write_text(json.dumps(nb))
    result = notebook_cli(config, "info", str(path))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "\r" not in result.stdout and "\u202e" not in result.stdout
    assert "demo\\x1b[2J\\x1b[31m" in result.stdout
    assert "nsls2-\\x1b]0;owned\\x07demo" in result.stdout
    as_json = json.loads(notebook_cli(config, "info", str(path), "--json").stdout)
    assert as_json["env"] == "demo\x1b[2J\x1b[31m"  # JSON keeps the value (escaped by JSON)
    pinned = notebook_cli(config, "pin", str(path))
    assert "\x1b" not in pinned.stdout + pinned.stderr


def test_notebook_cli_never_hangs_on_a_fifo_given_by_path(tmp_path: Path) -> None:
    """The FIFO check without the helper thread, under a hard timeout: a hang fails."""
    config = _site(tmp_path)
    fifo = tmp_path / "pipe.ipynb"
    os.mkfifo(fifo)
    try:
        result = notebook_cli(config, "info", str(fifo))
    except subprocess.TimeoutExpired:
        raise AssertionError("notebook info hung on a FIFO") from None
    assert result.returncode == 1 and "a FIFO" in result.stderr
