"""Crafted builds that pass verification (their sha256 and size match manifest.json) or
abuse the manifest's file names: what an outside audit broke (issue 11 items 1-4).

Each test fails on the code before the fix: the build hung `agent --once` and
`store verify`, forged its own ready marker, or was retried forever instead of being
quarantined."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest
import zstandard
from support.agent import (
    agent_pass_log,
    agent_peak_rss,
    commit_build,
    commit_fake,
    events,
    fake_env_members,
    member,
    tar_bytes,
    write_site,
)
from support.cli import run_cli

from nsls2_artifacts import layout
from nsls2_artifacts.records import parse_time

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
CLI_TIMEOUT = 120  # the old code hung here for good: a timeout fails the test


@pytest.fixture
def site(tmp_path: Path):
    return write_site(tmp_path / "site")


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

    agent = run_cli(config, "agent", "--once", timeout=CLI_TIMEOUT, check=False)
    assert layout.read_ready(cfg.deploy_root, "demo", good.build_id) is not None, agent.stderr
    assert not layout.build_dir(cfg.deploy_root, "demo", bad.build_id).exists()
    verify = run_cli(config, "store", "verify", "--json", timeout=CLI_TIMEOUT, check=False)
    assert verify.returncode == 1
    [row] = [r for r in json.loads(verify.stdout)["builds"] if r["build_id"] == bad.build_id]
    assert not row["ok"] and f"{key}: field 'file'" in row["detail"]
    assert "plain file name" in row["detail"]
    status = json.loads(run_cli(config, "status", "--json", check=False).stdout)
    [invalid] = status["invalid"]
    assert invalid["build_id"] == bad.build_id and "plain file name" in invalid["reason"]


@pytest.mark.parametrize("shape", ["symlink-dev-zero", "fifo", "directory", "symlink-outside"])
def test_artifact_must_be_a_regular_file(site, tmp_path: Path, shape: str) -> None:
    """A plain name that is a symlink (to /dev/zero, out of the store), a FIFO or a
    directory: opened O_NOFOLLOW|O_NONBLOCK and checked by fstat, so nothing hangs; the
    build is quarantined with the reason and `store verify` fails naming it."""
    config, cfg = site
    good = commit_fake(cfg, tag="good", hours=1)
    # deployed first: a pass deploys only the newest new build (older ones are superseded)
    assert run_cli(config, "agent", "--once", timeout=CLI_TIMEOUT, check=False).returncode == 0
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

    agent = run_cli(config, "agent", "--once", timeout=CLI_TIMEOUT, check=False)
    assert layout.read_ready(cfg.deploy_root, "demo", good.build_id) is not None, agent.stderr
    assert layout.read_ready(cfg.deploy_root, "demo", bad.build_id) is None
    status = json.loads(run_cli(config, "status", "--json", check=False).stdout)
    [q] = status["quarantined"]
    assert q["build_id"] == bad.build_id and q["stage"] == "verify"
    assert "regular file" in q["reason"] or "symlink" in q["reason"]
    verify = run_cli(config, "store", "verify", "--json", timeout=CLI_TIMEOUT, check=False)
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
    result, log = agent_pass_log(cfg)
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
    _, log = agent_pass_log(cfg)
    [q] = events(log, "quarantine")
    assert q["build"] == bad.build_id and q["stage"] == "extract"
    _, log2 = agent_pass_log(cfg)
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
    status = json.loads(run_cli(config, "status", "--json", check=False).stdout)
    [row] = status["envs"]["demo"]["builds"]
    assert row["state"] != "ready"
    result, log = agent_pass_log(cfg)
    assert [e["build"] for e in events(log, "deploy")] == [build.build_id]
    ready = layout.read_ready(cfg.deploy_root, "demo", build.build_id)
    assert ready is not None and ready.artifact_sha256 == build.artifact.sha256
    assert (prefix / ".unpacked").exists()


# -- item 3: one classification: the artifact's shapes quarantine, node faults retry ------


SHAPES = {
    "name-over-255-bytes": [member("lib/" + "n" * 300 + ".py", b"x")],
    "symlink-target-5000-bytes": [member("lib/long", type=tarfile.SYMTYPE, linkname="a/" * 2500)],
    "hardlink-to-directory": [
        member("lib/d", type=tarfile.DIRTYPE, mode=0o755),
        member("lib/h", type=tarfile.LNKTYPE, linkname="lib/d"),
    ],
    "file-then-dir-below-it": [member("lib/x", b"a"), member("lib/x/y", type=tarfile.DIRTYPE)],
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_archive_shapes_quarantine_once(site, shape: str) -> None:
    """Each raised a plain OSError before: never quarantined, so every pass on every node
    verified and extracted it again. Now quarantined by artifact identity, at extract."""
    config, cfg = site
    bad = commit_build(cfg.store, "demo", tar_bytes([*fake_env_members(), *SHAPES[shape]]))
    result, log = agent_pass_log(cfg)
    [q] = events(log, "quarantine")
    assert q["build"] == bad.build_id and q["stage"] == "extract", q
    assert not layout.partial_dir(cfg.deploy_root, "demo", bad.build_id).exists()
    _, log2 = agent_pass_log(cfg)
    assert events(log2, "extract") == [] and events(log2, "quarantine") == []


def test_smoke_timeout_is_retried_with_backoff_not_quarantined(tmp_path: Path) -> None:
    """A timeout under load is a fault of the node: the build is not quarantined, `status`
    says it is retrying and why, the next pass waits out the backoff, and once it has run
    out the build deploys and the retry record goes."""
    config, cfg = write_site(tmp_path / "site", agent={"smoke_timeout_seconds": 0.001})
    build = commit_fake(cfg)
    result, log = agent_pass_log(cfg)
    assert events(log, "quarantine") == []
    [retry] = events(log, "retry-later")
    assert retry["stage"] in ("unpack", "smoke") and "timed out" in retry["reason"]
    assert retry["attempt"] == "1"
    status = json.loads(run_cli(config, "status", "--json", check=False).stdout)
    [row] = status["envs"]["demo"]["builds"]
    assert row["state"] == "retrying" and "timed out" in row["reason"]
    assert status["quarantined"] == [] and status["retrying"][0]["attempts"] == 1
    assert "retrying after a fault of the node" in run_cli(config, "status", check=False).stdout
    _, log = agent_pass_log(cfg)  # within the backoff: not tried again
    assert events(log, "extract") == []
    # the backoff has run out (rewound instead of waited for), the node is quiet again
    path = layout.retry_path(cfg.deploy_root, "demo", build.build_id)
    record = json.loads(path.read_text())
    record["next_try"] = "2000-01-01T00:00:00.000000Z"
    path.write_text(json.dumps(record))
    _, cfg = write_site(tmp_path / "site", agent={"smoke_timeout_seconds": 60})
    result, log = agent_pass_log(cfg)
    assert result.ok and [e["build"] for e in events(log, "deploy")] == [build.build_id]
    assert not path.exists()


def test_backoff_doubles(tmp_path: Path) -> None:
    from nsls2_artifacts.agent import failures

    root = tmp_path / "deploy"
    failure = failures.Failure(failures.NODE, "extract", "OSError: No space left on device")
    delays = []
    for _ in range(8):
        record = failures.record_node_fault(root, "demo", "b", failure, "n1")
        delays.append(parse_time(record.next_try) - parse_time(record.time))
    assert [d.total_seconds() for d in delays] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert failures.waiting(record)


def test_disk_full_is_a_node_fault(site, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC while writing (a fault this test cannot cause on a shared disk: injected)
    is retried with backoff, never quarantined."""
    from nsls2_artifacts.agent import extract

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(extract, "_write_file", full)
    config, cfg = site
    build = commit_fake(cfg)
    result, log = agent_pass_log(cfg)
    assert events(log, "quarantine") == []
    [retry] = events(log, "retry-later")
    assert retry["stage"] == "extract" and "No space left" in retry["reason"]
    assert not result.ok
    assert not layout.partial_dir(cfg.deploy_root, "demo", build.build_id).exists()


def test_a_bug_of_ours_is_never_a_quarantine(site, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ValueError from our own code is a bug, not the artifact's: before, extraction
    turned it into a quarantine of a good build. Now it is raised (the pass reports an
    error) and the build is neither quarantined nor put on backoff."""
    from nsls2_artifacts.agent import extract

    def broken(mode: int) -> int:
        raise ValueError("a bug in data_mode")

    monkeypatch.setattr(extract, "data_mode", broken)
    config, cfg = site
    build = commit_fake(cfg)
    result, log = agent_pass_log(cfg)
    assert events(log, "quarantine") == [] and events(log, "retry-later") == []
    [error] = events(log, "deploy-error")
    assert "a bug in data_mode" in error["reason"]
    assert not result.ok
    assert not layout.quarantine_path(cfg.deploy_root, "demo", build.build_id).exists()
    assert not layout.retry_path(cfg.deploy_root, "demo", build.build_id).exists()
    monkeypatch.undo()
    result, _ = agent_pass_log(cfg)
    assert result.ok and layout.read_ready(cfg.deploy_root, "demo", build.build_id) is not None


# -- item 1: pax bombs, and peak memory bounded whatever the size fields claim -------------


def _ustar(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, 0o644, 1_700_000_000
    return info.tobuf(tarfile.USTAR_FORMAT)


def pax_bomb(claim: int) -> bytes:
    """A fake env whose first member carries a pax header of `claim` bytes (a valid
    record that tarfile would read whole), zstd-compressed to a few kB: it is streamed
    through the compressor, never held here."""
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    out = [compressor.compress(_ustar("././@PaxHeader", tarfile.XHDTYPE, claim))]
    head = f"{claim} comment=".encode()
    out.append(compressor.compress(head))
    filler, step = claim - len(head) - 1, b"x" * (1 << 20)
    while filler > 0:
        out.append(compressor.compress(step[:filler]))
        filler -= len(step)
    out.append(compressor.compress(b"\n" + bytes(-claim % 512)))
    out.append(compressor.compress(_ustar("lib/bomb.txt", tarfile.REGTYPE, 0)))
    out.append(compressor.compress(tar_bytes(fake_env_members(), fmt="tar")))
    out.append(compressor.flush())
    return b"".join(out)


def big_file_build(size: int) -> bytes:
    """A fake env plus one `size`-byte file of zeros (a normal archive, compressed small)."""
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    out = [compressor.compress(_ustar("lib/big.bin", tarfile.REGTYPE, size))]
    zeros = bytes(1 << 20)
    for _ in range(size >> 20):
        out.append(compressor.compress(zeros))
    out.append(compressor.compress(tar_bytes(fake_env_members(), fmt="tar")))
    out.append(compressor.flush())
    return b"".join(out)


def test_pax_bomb_refused_and_peak_memory_bounded(tmp_path: Path) -> None:
    """A pax header claiming 400 MB in a small artifact made `agent --once` reach 878 MB
    and then deployed as ready despite `agent.max_bytes`. Now it is quarantined at its
    header, and the agent's peak memory for bombs of 40 MB and 400 MB, and for a normal
    archive holding a 96 MB file, stays within a constant of a plain deploy's."""
    MiB = 1 << 20
    peaks: dict[str, int] = {}
    builds = {
        "plain": tar_bytes(fake_env_members()),
        "bomb-40M": pax_bomb(40 * 10**6),
        "bomb-400M": pax_bomb(400 * 10**6),
        "file-96M": big_file_build(96 * MiB),
    }
    for name, archive in builds.items():
        config, cfg = write_site(tmp_path / name, agent={"max_bytes": 256 * MiB})
        build = commit_build(cfg.store, "demo", archive)
        peaks[name] = agent_peak_rss(config)
        ready = layout.read_ready(cfg.deploy_root, "demo", build.build_id)
        if name.startswith("bomb"):
            assert len(archive) < 1 * MiB
            assert ready is None
            status = json.loads(run_cli(config, "status", "--json", check=False).stdout)
            [q] = status["quarantined"]
            assert q["stage"] == "extract" and "pax extended header" in q["reason"]
        else:
            assert ready is not None, name
    slack = 48 * MiB  # the decompression queue and one chunk in flight: constants
    assert peaks["bomb-40M"] < peaks["plain"] + slack, peaks
    assert peaks["bomb-400M"] < peaks["plain"] + slack, peaks
    assert peaks["file-96M"] < peaks["plain"] + slack, peaks
