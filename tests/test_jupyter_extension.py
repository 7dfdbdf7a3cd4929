"""The server extension in a real jupyter_server: notebooks saved through the contents API
while a session runs an NSLS-II kernel record the concrete build (also for the latest kernel
after a flip, and after a restart), `GET /nsls2/api/kernels` reports specs, retired kernels
and running builds; then `notebook info|pin` on the saved notebook, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support.agent import agent_pass, commit_fake, promote_fake, write_site
from support.jupyter import (
    jupyter_server,
    notebook_cli,
    notebook_json,
    read_notebook,
    save_notebook,
    start_session,
    wait_until,
)
from support.processes import kill9

from nsls2_artifacts.fsutil import atomic_write_json
from nsls2_artifacts.jupyter.deployed import (
    build_catalogue,
    build_of_process,
    kernel_dirs_in,
)
from nsls2_artifacts.jupyter.notebook import duration_words

pytest.importorskip("jupyter_server")


def running_build(server, kernel_id: str):
    """The extension's answer for a running kernel, once its /bin/sh has exec'd python."""
    entry = server.ok("GET", "/nsls2/api/kernels")["running"].get(kernel_id)
    return entry if entry and entry["build_id"] else None


def test_saved_notebook_records_build_info_and_pin(tmp_path: Path) -> None:
    config, cfg = write_site(tmp_path / "site")
    first = commit_fake(cfg, tag="one", hours=1, lts="2026-1")
    second = commit_fake(cfg, tag="two", hours=2)
    assert agent_pass(cfg).ok
    work = tmp_path / "work"
    work.mkdir()
    jupyter_path = cfg.deploy_root / "share" / "jupyter"
    with jupyter_server(tmp_path / "jhome", work, jupyter_path) as server:
        model = server.ok("GET", "/nsls2/api/kernels")
        specs = model["kernelspecs"]
        assert set(specs) == {"nsls2-demo-latest", "nsls2-demo-2026-1"}
        assert specs["nsls2-demo-2026-1"]["metadata"]["nsls2"]["build_id"] == first.build_id
        assert model["retired"] == {} and model["running"] == {}
        latest_name = specs["nsls2-demo-latest"]["display_name"]

        # a notebook on the latest kernel: saved through the contents API, read back
        save_notebook(server, "nb.ipynb", notebook_json("nsls2-demo-latest", latest_name))
        assert "nsls2" not in read_notebook(server, "nb.ipynb")["metadata"]  # no session yet
        kernel_id = start_session(server, "nb.ipynb", "nsls2-demo-latest")
        running = wait_until(lambda: running_build(server, kernel_id), 60, "kernel build", server)
        assert running == {
            "kernel_name": "nsls2-demo-latest",
            "env": "demo",
            "build_id": second.build_id,
        }
        content = read_notebook(server, "nb.ipynb")
        save_notebook(server, "nb.ipynb", content)
        saved = read_notebook(server, "nb.ipynb")["metadata"]["nsls2"]
        assert saved == {"env": "demo", "build_id": second.build_id, "track": "latest"}

        # latest flips: the running kernel keeps its build, and so does the record
        third = commit_fake(cfg, tag="three", hours=3)
        assert agent_pass(cfg).ok
        save_notebook(server, "nb.ipynb", content)
        assert read_notebook(server, "nb.ipynb")["metadata"]["nsls2"]["build_id"] == (
            second.build_id
        )
        # a restart binds the new build, and the next save records it
        server.ok("POST", f"/api/kernels/{kernel_id}/restart")
        wait_until(
            lambda: (running_build(server, kernel_id) or {}).get("build_id") == third.build_id,
            60,
            "restarted kernel on the new build",
            server,
        )
        save_notebook(server, "nb.ipynb", content)
        assert read_notebook(server, "nb.ipynb")["metadata"]["nsls2"]["build_id"] == (
            third.build_id
        )
        # an LTS kernel records its label as the track
        lts_name = specs["nsls2-demo-2026-1"]["display_name"]
        save_notebook(server, "lts.ipynb", notebook_json("nsls2-demo-2026-1", lts_name))
        lts_kernel = start_session(server, "lts.ipynb", "nsls2-demo-2026-1")
        save_notebook(server, "lts.ipynb", read_notebook(server, "lts.ipynb"))
        assert read_notebook(server, "lts.ipynb")["metadata"]["nsls2"] == {
            "env": "demo",
            "build_id": first.build_id,
            "track": "2026-1",
        }
        assert server.ok("GET", "/nsls2/api/kernels")["running"][lts_kernel]["build_id"] == (
            first.build_id
        )

        # retired kernels come from the agent's record; the API needs a token
        retired = {
            "env": "demo",
            "label": "2023-1",
            "build_id": "2023.01.01T000000Z-0badc0de",
            "display_name": "NSLS-II test 2023-1",
            "retired": "2026-06-01",
        }
        atomic_write_json(
            jupyter_path / "nsls2" / "retired.json", {"kernels": {"nsls2-demo-2023-1": retired}}
        )
        assert server.ok("GET", "/nsls2/api/kernels")["retired"] == {"nsls2-demo-2023-1": retired}
        # (a fresh client: the server's login cookie would authenticate `server.http`)
        anonymous = httpx.get(f"{server.url}/nsls2/api/kernels", timeout=30)
        assert anonymous.status_code == 403, anonymous.text

    # the notebook ran on `second` before the restart: check the CLI on that record
    old = work / "old.ipynb"
    data = json.loads((work / "nb.ipynb").read_text())
    data["metadata"]["nsls2"]["build_id"] = second.build_id
    old.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    info = json.loads(notebook_cli(config, "info", str(old), "--json").stdout)
    assert info["build_id"] == second.build_id and info["deployed"] is True
    assert info["recovery"]["kernel_name"] == "nsls2-demo-2026-1"  # nearest kept LTS
    assert info["recovery"]["exact"] is False
    assert info["recovery"]["reason"].endswith("built 1 hour before it")  # not "1 days"
    assert info["latest_runs_it"] is False

    # promote `second` to LTS (after every build): now its own LTS kernel gets it back,
    # and pin points at it
    promote_fake(cfg, "demo", "2026-2", second.build_id, hours=4)
    assert agent_pass(cfg).ok
    text = notebook_cli(config, "info", str(old)).stdout
    assert second.build_id in text and "nsls2-demo-2026-2" in text and "still deployed" in text
    before = old.read_bytes()
    result = notebook_cli(config, "pin", str(old))
    assert result.returncode == 0, result.stderr
    after = json.loads(old.read_bytes())
    assert after["metadata"]["kernelspec"]["name"] == "nsls2-demo-2026-2"
    spec = json.loads((jupyter_path / "kernels" / "nsls2-demo-2026-2" / "kernel.json").read_text())
    assert after["metadata"]["kernelspec"]["display_name"] == spec["display_name"]
    # byte-identical apart from the kernelspec lines
    expected = json.loads(before)
    expected["metadata"]["kernelspec"].update(
        name="nsls2-demo-2026-2", display_name=spec["display_name"]
    )
    assert (
        old.read_bytes()
        == (json.dumps(expected, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()
    )
    assert "already" in notebook_cli(config, "pin", str(old)).stdout
    # an explicit label; an unknown one fails and leaves the file alone
    assert notebook_cli(config, "pin", str(old), "2026-1").returncode == 0
    assert json.loads(old.read_text())["metadata"]["kernelspec"]["name"] == "nsls2-demo-2026-1"
    kept = old.read_bytes()
    bad = notebook_cli(config, "pin", str(old), "1999-1")
    assert bad.returncode != 0 and "1999-1" in bad.stderr and str(old) in bad.stderr
    assert old.read_bytes() == kept


def test_bad_notebooks_are_refused_untouched(tmp_path: Path) -> None:
    config, cfg = write_site(tmp_path / "site")
    commit_fake(cfg, tag="one", hours=1, lts="2026-1")
    assert agent_pass(cfg).ok
    cases = {
        "plain.txt": b"hello\n",
        "broken.ipynb": b'{"cells": [',
        "list.ipynb": b"[1, 2]\n",
        "binary.ipynb": b"\xff\xfe\x00",
        "nometa.ipynb": json.dumps(notebook_json("python3", "Python 3")).encode(),
        "badmeta.ipynb": json.dumps(
            {**notebook_json("x", "x"), "metadata": {"nsls2": {"env": 3}}}
        ).encode(),
    }
    reasons = {
        "plain.txt": "not valid JSON",
        "broken.ipynb": "not valid JSON",
        "list.ipynb": "not a Jupyter notebook",
        "binary.ipynb": "not UTF-8",
        "nometa.ipynb": "metadata.nsls2: missing",
        "badmeta.ipynb": "metadata.nsls2.env",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        for command in ("info", "pin"):
            result = notebook_cli(config, command, str(path))
            assert result.returncode != 0, (name, command)
            assert str(path) in result.stderr and reasons[name] in result.stderr, result.stderr
            assert path.read_bytes() == data
    for missing in (tmp_path / "absent.ipynb", tmp_path):
        result = notebook_cli(config, "info", str(missing))
        assert result.returncode != 0 and str(missing) in result.stderr


def test_info_for_a_build_that_is_gone_and_retired(tmp_path: Path) -> None:
    config, cfg = write_site(tmp_path / "site")
    older = commit_fake(cfg, tag="one", hours=1, lts="2026-1")
    newer = commit_fake(cfg, tag="two", hours=30, lts="2026-2")
    assert agent_pass(cfg).ok
    gone = "2026.01.01T000000Z-0badc0de"  # long before both
    atomic_write_json(
        cfg.deploy_root / "share" / "jupyter" / "nsls2" / "retired.json",
        {
            "kernels": {
                "nsls2-demo-2025-3": {
                    "env": "demo",
                    "label": "2025-3",
                    "build_id": gone,
                    "display_name": "NSLS-II test 2025-3",
                    "retired": "2026-05-01",
                }
            }
        },
    )
    path = tmp_path / "nb.ipynb"
    nb = notebook_json("nsls2-demo-2025-3", "NSLS-II test 2025-3")
    nb["metadata"]["nsls2"] = {"env": "demo", "build_id": gone, "track": "2025-3"}
    path.write_text(json.dumps(nb, indent=2))  # not nbformat's layout: kept anyway
    info = json.loads(notebook_cli(config, "info", str(path), "--json").stdout)
    assert info["deployed"] is False
    assert list(info["retired"]) == ["nsls2-demo-2025-3"]
    assert info["recovery"]["kernel_name"] == "nsls2-demo-2026-1"  # the nearer of the two
    text = notebook_cli(config, "info", str(path)).stdout
    assert "gone" in text and "retired" in text and "2026-05-01" in text
    # a retired label cannot be pinned; the default pin goes to the nearest LTS
    result = notebook_cli(config, "pin", str(path), "2025-3")
    assert result.returncode != 0 and "retired on 2026-05-01" in result.stderr
    assert notebook_cli(config, "pin", str(path)).returncode == 0
    nb["metadata"]["kernelspec"]["name"] = "nsls2-demo-2026-1"
    catalogue = build_catalogue(kernel_dirs_in(cfg.deploy_root))
    nb["metadata"]["kernelspec"]["display_name"] = catalogue.kernels[
        "nsls2-demo-2026-1"
    ].display_name
    assert path.read_text() == json.dumps(nb, indent=2)  # same layout, no newline added
    # a notebook from a build after both LTS builds is nearest to the newer one
    nb["metadata"]["nsls2"]["build_id"] = "2030.01.01T000000Z-0badc0de"
    path.write_text(json.dumps(nb))
    info = json.loads(notebook_cli(config, "info", str(path), "--json").stdout)
    assert info["recovery"]["kernel_name"] == "nsls2-demo-2026-2"
    assert {older.build_id, newer.build_id} == {k.build_id for k in catalogue.lts_of("demo")}


def test_build_of_process_reads_exe(tmp_path: Path) -> None:
    """A python binary inside DEPLOY_ROOT/envs/ENV/BUILD_ID: /proc/PID/exe names the build,
    also when the deploy root is reached through a symlink."""
    build = "2026.01.01T000000Z-abcdef12"
    bindir = tmp_path / "deploy" / "envs" / "demo" / build / "bin"
    bindir.mkdir(parents=True)
    python = bindir / "python3"
    shutil.copy2(os.path.realpath(sys.executable), python)
    (tmp_path / "alias").symlink_to(tmp_path / "deploy")
    proc = subprocess.Popen(
        [str(python), "-c", "import time; time.sleep(60)"], stderr=subprocess.DEVNULL
    )
    try:
        found = build_of_process(proc.pid, [tmp_path / "alias"])
        assert found is not None and (found.env, found.build_id) == ("demo", build)
        assert build_of_process(proc.pid, [tmp_path / "elsewhere"]) is None
        assert build_of_process(os.getpid(), [tmp_path / "alias"]) is None
    finally:
        kill9(proc)


def test_merged_labels_and_jupyter_path_only(tmp_path: Path) -> None:
    """Two labels on one build: `info` recommends the listed kernel naming both, `pin LABEL`
    the spec of that very label; without --config the CLI finds the kernels on JUPYTER_PATH."""
    _, cfg = write_site(tmp_path / "site")
    build = commit_fake(cfg, tag="one", hours=1, lts="2026-1")
    promote_fake(cfg, "demo", "2026-2", build.build_id, hours=3)  # the newest label
    commit_fake(cfg, tag="two", hours=2)
    assert agent_pass(cfg).ok
    catalogue = build_catalogue(kernel_dirs_in(cfg.deploy_root))
    listed = [k.name for k in catalogue.lts_of("demo") if k.listed]
    assert listed == ["nsls2-demo-2026-2"]  # the merged one (the newest label)
    target = tmp_path / "real" / "nb.ipynb"  # pinned through a symlink, private mode
    target.parent.mkdir()
    path = tmp_path / "nb.ipynb"
    path.symlink_to(target)
    nb = notebook_json("nsls2-demo-latest", "x")
    nb["metadata"]["nsls2"] = {"env": "demo", "build_id": build.build_id, "track": "latest"}
    target.write_text(json.dumps(nb, indent=1, sort_keys=True) + "\n")
    target.chmod(0o600)

    env = {k: v for k, v in os.environ.items() if k != "NSLS2_ARTIFACTS_CONFIG"}
    env["JUPYTER_PATH"] = str(cfg.deploy_root / "share" / "jupyter")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "nsls2_artifacts.cli", "notebook", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)

    info = json.loads(cli("info", str(path), "--json").stdout)
    assert info["recovery"]["kernel_name"] == "nsls2-demo-2026-2" and info["recovery"]["exact"]
    assert info["latest_runs_it"] is False and info["deployed"] is True
    assert cli("pin", str(path), "2026-1").returncode == 0
    assert json.loads(path.read_text())["metadata"]["kernelspec"]["name"] == "nsls2-demo-2026-1"
    assert path.is_symlink() and target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["nb.ipynb"]  # no temp file left
    # a notebook that ran as 2026-1 is recommended its own label's spec
    nb["metadata"]["nsls2"]["track"] = "2026-1"
    target.write_text(json.dumps(nb))
    info = json.loads(cli("info", str(path), "--json").stdout)
    assert info["recovery"]["kernel_name"] == "nsls2-demo-2026-1"


def test_kernel_retired_by_the_agent(tmp_path: Path) -> None:
    """The agent's own retired.json (label withdrawn from the store) reaches `notebook info`;
    a notebook naming an NSLS-II kernel but never saved under it is told what to do."""
    config, cfg = write_site(tmp_path / "site")
    first = commit_fake(cfg, tag="one", hours=1, lts="2026-1")
    commit_fake(cfg, tag="two", hours=2, lts="2026-2")
    assert agent_pass(cfg).ok
    (cfg.store / "demo" / "lts" / "2026-1.json").unlink()
    assert agent_pass(cfg).ok
    catalogue = build_catalogue(kernel_dirs_in(cfg.deploy_root))
    assert set(catalogue.retired) == {"nsls2-demo-2026-1"}
    assert catalogue.retired["nsls2-demo-2026-1"].build_id == first.build_id
    path = tmp_path / "nb.ipynb"
    nb = notebook_json("nsls2-demo-2026-1", "old name")
    path.write_text(json.dumps(nb))
    result = notebook_cli(config, "info", str(path))
    assert result.returncode == 1
    assert "metadata.nsls2: missing" in result.stderr and "nsls2-demo-2026-1" in result.stderr
    nb["metadata"]["nsls2"] = {"env": "demo", "build_id": first.build_id, "track": "2026-1"}
    path.write_text(json.dumps(nb))
    info = json.loads(notebook_cli(config, "info", str(path), "--json").stdout)
    assert list(info["retired"]) == ["nsls2-demo-2026-1"]
    assert info["recovery"]["kernel_name"] == "nsls2-demo-2026-2"
    assert info["recovery"]["exact"] is False


def test_duration_words_say_the_largest_whole_unit() -> None:
    """`notebook info` said "built 1 days before it" for three minutes (timedelta.days)."""
    assert duration_words(180) == "3 minutes"
    assert duration_words(60) == "1 minute"
    assert duration_words(3600 * 2 + 59) == "2 hours"
    assert duration_words(86400 * 3) == "3 days"
    assert duration_words(5) == "less than a minute"
