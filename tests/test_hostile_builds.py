"""Crafted builds that pass verification (their sha256 and size match manifest.json) or
abuse the manifest's file names: what an outside audit broke (issue 11 items 1-4).

Each test fails on the code before the fix: the build hung `agent --once` and
`store verify`, forged its own ready marker, or was retried forever instead of being
quarantined."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
from pathlib import Path

import pytest
from helpers_agent import (
    commit_build,
    commit_fake,
    events,
    fake_env_members,
    member,
    run_cli,
    tar_bytes,
    write_site,
)

from nsls2_artifacts.agent import layout
from nsls2_artifacts.agent.log import setup_logging
from nsls2_artifacts.agent.reconcile import run_pass
from nsls2_artifacts.store import open_store

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
CLI_TIMEOUT = 120  # the old code hung here for good: a timeout fails the test


@pytest.fixture
def site(tmp_path: Path):
    return write_site(tmp_path / "site")


def run(cfg) -> tuple[object, str]:
    stream = io.StringIO()
    result = run_pass(cfg, open_store(cfg.store), setup_logging(logging.INFO, stream))
    return result, stream.getvalue()


def rewrite_manifest(cfg, build, **changes: dict) -> Path:
    path = cfg.store / build.name / build.build_id / "manifest.json"
    data = json.loads(path.read_text())
    for key, fields in changes.items():
        data[key].update(fields)
    path.write_text(json.dumps(data))
    return path


# -- item 4: artifact.file / lock.file are plain names of regular files --------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("artifact", {"file": "/dev/zero", "size": 0, "sha256": EMPTY_SHA256}),
        ("artifact", {"file": "../../other/env.tar.zst"}),
        ("artifact", {"file": "."}),
        ("lock", {"file": "/dev/zero", "sha256": EMPTY_SHA256}),
        ("lock", {"file": "../pixi.lock"}),
    ],
    ids=["artifact-dev-zero", "artifact-dotdot", "artifact-dot", "lock-dev-zero", "lock-dotdot"],
)
def test_file_fields_must_be_plain_names(site, key: str, value: dict) -> None:
    """`/dev/zero` (size 0, sha256 of nothing) hung the agent and `store verify` for good;
    `../` escaped the build directory. Now the build is invalid, with the field named."""
    config, cfg = site
    good = commit_fake(cfg, tag="good", hours=1)
    bad = commit_fake(cfg, tag="bad", hours=2)
    rewrite_manifest(cfg, bad, **{key: value})

    agent = run_cli(config, "agent", "--once", timeout=CLI_TIMEOUT)
    assert layout.read_ready(cfg.deploy_root, "demo", good.build_id) is not None, agent.stderr
    assert not layout.build_dir(cfg.deploy_root, "demo", bad.build_id).exists()
    verify = run_cli(config, "store", "verify", "--json", timeout=CLI_TIMEOUT)
    assert verify.returncode == 1
    [row] = [r for r in json.loads(verify.stdout)["builds"] if r["build_id"] == bad.build_id]
    assert not row["ok"] and f"{key}: field 'file'" in row["detail"]
    assert "plain file name" in row["detail"]
    status = json.loads(run_cli(config, "status", "--json").stdout)
    [invalid] = status["invalid"]
    assert invalid["build_id"] == bad.build_id and "plain file name" in invalid["reason"]


@pytest.mark.parametrize("shape", ["symlink-dev-zero", "fifo", "directory", "symlink-outside"])
def test_artifact_must_be_a_regular_file(site, tmp_path: Path, shape: str) -> None:
    """A plain name that is a symlink (to /dev/zero, out of the store), a FIFO or a
    directory: opened O_NOFOLLOW|O_NONBLOCK and checked by fstat, so nothing hangs; the
    build is quarantined with the reason and `store verify` fails naming it."""
    config, cfg = site
    good = commit_fake(cfg, tag="good", hours=1)
    bad = commit_fake(cfg, tag="bad", hours=2)
    artifact = cfg.store / "demo" / bad.build_id / bad.artifact.file
    outside = tmp_path / "outside.tar.zst"
    outside.write_bytes(artifact.read_bytes())
    artifact.unlink()
    if shape == "symlink-dev-zero":
        artifact.symlink_to("/dev/zero")
        rewrite_manifest(cfg, bad, artifact={"size": 0, "sha256": EMPTY_SHA256})
    elif shape == "fifo":
        os.mkfifo(artifact)
        rewrite_manifest(cfg, bad, artifact={"size": 0, "sha256": EMPTY_SHA256})
    elif shape == "directory":
        artifact.mkdir()
    else:
        artifact.symlink_to(outside)  # same bytes: only the symlink is wrong

    agent = run_cli(config, "agent", "--once", timeout=CLI_TIMEOUT)
    assert layout.read_ready(cfg.deploy_root, "demo", good.build_id) is not None, agent.stderr
    assert layout.read_ready(cfg.deploy_root, "demo", bad.build_id) is None
    status = json.loads(run_cli(config, "status", "--json").stdout)
    [q] = status["quarantined"]
    assert q["build_id"] == bad.build_id and q["stage"] == "verify"
    assert "regular file" in q["reason"] or "symlink" in q["reason"]
    verify = run_cli(config, "store", "verify", "--json", timeout=CLI_TIMEOUT)
    assert verify.returncode == 1
    [row] = [r for r in json.loads(verify.stdout)["builds"] if not r["ok"]]
    assert row["build_id"] == bad.build_id


# -- item 2: the archive cannot forge the agent's records ----------------------------------


def forged_ready(build_id: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    record = {
        "env": "demo",
        "build_id": build_id,
        "created": "2026-01-01T00:00:00.000000Z",
        "deployed": "2026-01-01T00:00:00.000000Z",
        "node": "forged",
        "artifact_sha256": "0" * 64,
        "smoke": [],
        "seconds": 0.0,
    }
    return [member(".nsls2/ready.json", json.dumps(record).encode())]


def test_archive_shipping_nsls2_is_refused(site) -> None:
    """An archive with `.nsls2/ready.json` was shown ready while conda-unpack ran, and
    a kill then made it latest untested. Members under `.nsls2/` are refused."""
    config, cfg = site
    # the build id names the archive's lock: commit, then swap in an archive whose
    # forged record names that id (manifest sha256 and size updated: it verifies)
    bad = commit_build(cfg.store, "demo", tar_bytes(fake_env_members()))
    archive = tar_bytes([*fake_env_members(), *forged_ready(bad.build_id)])
    path = cfg.store / "demo" / bad.build_id / bad.artifact.file
    path.write_bytes(archive)
    rewrite_manifest(
        cfg,
        bad,
        artifact={"size": len(archive), "sha256": hashlib.sha256(archive).hexdigest()},
    )
    result, log = run(cfg)
    [q] = events(log, "quarantine")
    assert q["build"] == bad.build_id and q["stage"] == "extract" and ".nsls2" in q["reason"]
    assert layout.read_ready(cfg.deploy_root, "demo", bad.build_id) is None
    assert not layout.latest_link(cfg.deploy_root, "demo").is_symlink()


@pytest.mark.parametrize(
    "shape",
    [
        [member(".nsls2", b"a file where the agent's directory goes")],
        [member(".nsls2/manifest.json", type=tarfile.DIRTYPE)],
        [member(".nsls2", type=tarfile.SYMTYPE, linkname="lib")],
    ],
    ids=["file", "dir-at-manifest", "symlink"],
)
def test_nsls2_shapes_quarantined_before_unpack(site, shape: list) -> None:
    """A regular file `.nsls2` or a directory at `.nsls2/manifest.json` ran conda-unpack
    and smoke, then failed writing the ready marker with a plain OSError - every pass, on
    every node. Now refused at extraction: quarantined, never unpacked."""
    _, cfg = site
    bad = commit_build(cfg.store, "demo", tar_bytes([*fake_env_members(), *shape]))
    _, log = run(cfg)
    [q] = events(log, "quarantine")
    assert q["build"] == bad.build_id and q["stage"] == "extract"
    _, log2 = run(cfg)
    assert events(log2, "extract") == []


def test_ready_record_must_match_the_manifest(site) -> None:
    """A ready.json whose artifact sha256 differs from the store's manifest (forged, or
    left from another artifact of that build id) is not trusted: `status` does not call
    the build ready, and the next pass deploys it properly."""
    config, cfg = site
    build = commit_fake(cfg)
    prefix = layout.build_dir(cfg.deploy_root, "demo", build.build_id)
    (prefix / ".nsls2").mkdir(parents=True)
    record = {
        "env": "demo",
        "build_id": build.build_id,
        "created": build.created,
        "deployed": build.created,
        "node": "forged",
        "artifact_sha256": "0" * 64,
        "smoke": [],
        "seconds": 0.0,
    }
    (prefix / layout.READY).write_text(json.dumps(record))
    status = json.loads(run_cli(config, "status", "--json").stdout)
    [row] = status["envs"]["demo"]["builds"]
    assert row["state"] != "ready"
    result, log = run(cfg)
    assert [e["build"] for e in events(log, "deploy")] == [build.build_id]
    ready = layout.read_ready(cfg.deploy_root, "demo", build.build_id)
    assert ready is not None and ready.artifact_sha256 == build.artifact.sha256
    assert (prefix / ".unpacked").exists()
