"""Verify-then-extract safety: every hostile or broken artifact is rejected, quarantined
with a reason that `status` shows, leaves nothing outside the partial directory, and is
not retried in a loop, while good builds next to it deploy."""

from __future__ import annotations

import json
import sys
import tarfile
from datetime import timedelta
from pathlib import Path

import pytest
from support.agent import (
    T0,
    agent_pass_log,
    commit_build,
    commit_fake,
    events,
    fake_env_members,
    member,
    sizes_and_modes,
    tar_bytes,
    write_site,
)
from support.cli import run_cli

from nsls2_artifacts import layout


@pytest.fixture
def site(tmp_path: Path):
    return write_site(tmp_path / "site", agent={"max_members": 50})


def evil(*extra: tuple[tarfile.TarInfo, bytes]) -> bytes:
    return tar_bytes([*fake_env_members(), *extra])


HOSTILE = {
    "dotdot": lambda: evil(member("lib/../../../escaped.txt", b"pwned")),
    "absolute": lambda tmp: evil(member(str(tmp / "escaped.txt"), b"pwned")),
    "symlink-escape": lambda: evil(
        member("lib/evil", type=tarfile.SYMTYPE, linkname="../../../..")
    ),
    "symlink-absolute": lambda tmp: evil(
        member("lib/evil", type=tarfile.SYMTYPE, linkname=str(tmp))
    ),
    "hardlink-escape": lambda tmp: evil(
        member("lib/evil", type=tarfile.LNKTYPE, linkname=str(tmp / "site" / "site.yaml"))
    ),
    "hardlink-dotdot": lambda: evil(
        member("lib/evil", type=tarfile.LNKTYPE, linkname="../../site.yaml")
    ),
    "hardlink-to-symlink": lambda: evil(
        member("lib/up", type=tarfile.SYMTYPE, linkname=".."),
        member("escape", type=tarfile.LNKTYPE, linkname="lib/up"),
    ),
    "symlink-through-symlink": lambda: evil(
        member("d", type=tarfile.SYMTYPE, linkname="."),
        member("e", type=tarfile.SYMTYPE, linkname="d/.."),
    ),
    "below-symlink": lambda: evil(
        member("lib/here", type=tarfile.SYMTYPE, linkname="."),
        member("lib/here/x.txt", b"x"),
    ),
    "below-symlink-unnormalised": lambda: evil(
        member("lib/here", type=tarfile.SYMTYPE, linkname="."),
        member("lib//here/x.txt", b"x"),
    ),
    "link-below-symlink-unnormalised": lambda: evil(
        member("lib/here", type=tarfile.SYMTYPE, linkname="."),
        member("./lib/here/up", type=tarfile.SYMTYPE, linkname="../../escaped"),
    ),
    "chardev": lambda: evil(member("dev/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)),
    "fifo": lambda: evil(member("lib/fifo", type=tarfile.FIFOTYPE)),
    "duplicate-file": lambda: evil(member("lib/twice.txt", b"a"), member("lib/twice.txt", b"b")),
    "file-then-dir": lambda: evil(member("lib/x", b"a"), member("lib/x/y.txt", b"b")),
    "too-many": lambda: evil(*[member(f"lib/f{i}.txt", b"x") for i in range(60)]),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_member_rejected_and_contained(site, tmp_path: Path, kind: str) -> None:
    config, cfg = site
    make = HOSTILE[kind]
    archive = make(tmp_path) if make.__code__.co_argcount else make()
    bad = commit_build(cfg.store, "demo", archive)
    good = commit_fake(cfg, "other", tag="good")
    # the agent's own records and the good build may appear; nothing else may
    allowed = (
        "site/deploy/state",
        "site/deploy/share",
        "site/deploy/etc",
        "site/deploy/envs/other",
        "site/store/.nodes",  # the agent's rollout report
    )
    dirs = {"site/deploy", "site/deploy/envs", "site/deploy/envs/demo", *allowed}

    def outside_partial() -> dict[str, tuple[int, int]]:
        return {
            k: v
            for k, v in sizes_and_modes(tmp_path).items()
            if not k.startswith(tuple(a + "/" for a in allowed)) and k not in dirs
        }

    outside = outside_partial()

    result, log = agent_pass_log(cfg)

    # nothing appeared or changed outside the partial dir (which is gone again)
    assert outside_partial() == outside
    assert not (tmp_path / "escaped.txt").exists()
    assert not layout.build_dir(cfg.deploy_root, "demo", bad.build_id).exists()
    assert not layout.partial_dir(cfg.deploy_root, "demo", bad.build_id).exists()
    # rejected with a reason, quarantined, and the good build unaffected
    assert not result.ok
    [q] = events(log, "quarantine")
    assert q["build"] == bad.build_id and q["stage"] == "extract"
    assert layout.read_ready(cfg.deploy_root, "other", good.build_id) is not None
    status = json.loads(run_cli(config, "status", "--json", check=False).stdout)
    [record] = status["quarantined"]
    assert record["build_id"] == bad.build_id and record["reason"]
    assert "quarantined" in run_cli(config, "status", check=False).stdout

    # the next pass does not try again
    _, log2 = agent_pass_log(cfg)
    assert events(log2, "extract") == [] and events(log2, "quarantine") == []


def test_sha256_mismatch_rejected_before_extract(site) -> None:
    config, cfg = site
    archive = tar_bytes(fake_env_members())
    bad = commit_build(cfg.store, "demo", archive, manifest_sha256="0" * 64)
    result, log = agent_pass_log(cfg)
    assert events(log, "extract") == []  # never read past verification
    [q] = events(log, "quarantine")
    assert q["stage"] == "verify" and "sha256" in q["reason"]
    assert not layout.env_dir(cfg.deploy_root, "demo").joinpath(bad.build_id).exists()
    text = run_cli(config, "status", check=False).stdout
    assert bad.build_id in text and "sha256" in text
    _, log2 = agent_pass_log(cfg)
    assert events(log2, "quarantine") == [] and events(log2, "verified") == []


def test_size_mismatch_rejected(site) -> None:
    _, cfg = site
    archive = tar_bytes(fake_env_members())
    commit_build(cfg.store, "demo", archive, manifest_size=len(archive) + 1)
    _, log = agent_pass_log(cfg)
    [q] = events(log, "quarantine")
    assert "size" in q["reason"]


@pytest.mark.parametrize("fmt", ["tar.zst", "tar.gz"])
def test_truncated_archive_rejected(site, fmt: str) -> None:
    _, cfg = site
    full = tar_bytes([*fake_env_members(), member("lib/big.bin", bytes(range(256)) * 400)], fmt)
    truncated = full[: len(full) // 2]  # the manifest matches the truncated bytes
    bad = commit_build(cfg.store, "demo", truncated, fmt=fmt)
    _, log = agent_pass_log(cfg)
    [q] = events(log, "quarantine")
    assert q["build"] == bad.build_id and "unreadable archive" in q["reason"]
    assert not layout.partial_dir(cfg.deploy_root, "demo", bad.build_id).exists()


def test_republished_artifact_is_retried(site) -> None:
    _, cfg = site
    archive = tar_bytes(fake_env_members())
    bad = commit_build(cfg.store, "demo", archive, manifest_sha256="0" * 64)
    agent_pass_log(cfg)
    # the publisher fixes the manifest of the same build: a different artifact identity
    path = cfg.store / "demo" / bad.build_id / "manifest.json"
    data = json.loads(path.read_text())
    import hashlib

    data["artifact"]["sha256"] = hashlib.sha256(archive).hexdigest()
    path.write_text(json.dumps(data))
    result, log = agent_pass_log(cfg)
    assert [e["build"] for e in events(log, "deploy")] == [bad.build_id]
    assert layout.read_ready(cfg.deploy_root, "demo", bad.build_id) is not None


def test_smoke_failure_quarantines_without_kernel(site) -> None:
    config, cfg = site
    bad = commit_fake(cfg, smoke=("json", "no_such_module_xyz"))
    result, log = agent_pass_log(cfg)
    [q] = events(log, "quarantine")
    assert q["stage"] == "smoke" and "no_such_module_xyz" in q["reason"]
    assert not (cfg.deploy_root / "envs" / "demo" / "latest").is_symlink()
    assert not (cfg.deploy_root / "share" / "jupyter" / "kernels" / "nsls2-demo-latest").exists()
    assert not layout.build_dir(cfg.deploy_root, "demo", bad.build_id).exists()
    _, log2 = agent_pass_log(cfg)
    assert events(log2, "extract") == []


def test_missing_conda_unpack_quarantines(site) -> None:
    _, cfg = site
    members = [m for m in fake_env_members() if m[0].name != "bin/conda-unpack"]
    commit_build(cfg.store, "demo", tar_bytes(members))
    _, log = agent_pass_log(cfg)
    [q] = events(log, "quarantine")
    assert q["stage"] == "unpack" and "conda-unpack" in q["reason"]


@pytest.mark.parametrize(
    "breakage",
    ["invalid-json", "missing-field", "wrong-type"],
)
def test_bad_manifest_ignored_others_deploy(site, breakage: str) -> None:
    config, cfg = site
    good = commit_fake(cfg, tag="good", hours=1)
    bad = commit_fake(cfg, tag="bad", hours=2)
    path = cfg.store / "demo" / bad.build_id / "manifest.json"
    data = json.loads(path.read_text())
    if breakage == "invalid-json":
        path.write_text(path.read_text()[:-20])
    elif breakage == "missing-field":
        del data["artifact"]["sha256"]
        path.write_text(json.dumps(data))
    else:
        data["smoke"] = "json"
        path.write_text(json.dumps(data))
    result, log = agent_pass_log(cfg)
    [ignored] = events(log, "invalid-manifest")
    assert ignored["build"] == bad.build_id and "manifest.json" in ignored["reason"]
    assert not result.ok
    assert layout.read_ready(cfg.deploy_root, "demo", good.build_id) is not None
    assert (cfg.deploy_root / "envs" / "demo" / "latest").resolve().name == good.build_id
    assert bad.build_id in run_cli(config, "status", check=False).stdout


@pytest.mark.parametrize("kind", [tarfile.REGTYPE, tarfile.DIRTYPE])
def test_fast_path_gives_the_data_filter_verdict(tmp_path: Path, kind: bytes) -> None:
    """Regular files and directories skip tarfile.data_filter's realpath(); for every name
    our checks let through, the filter accepts it too and sets the same mode."""
    from nsls2_artifacts.agent.extract import data_mode
    from nsls2_artifacts.tarstream import TarNameError, canonical_name

    names = ["a", "bin/python3.11", "lib/python3.11/site-packages/x/y.py", "s/d"]
    modes = [0, 0o111, 0o600, 0o644, 0o755, 0o777, 0o4755, 0o2775, 0o1777, 0o7777, 0o070, 0o704]
    for name in names:
        for mode in modes:
            info, _ = member(name, b"", mode=mode, type=kind)
            canonical_name(info.name)
            judged = tarfile.data_filter(info, str(tmp_path))
            assert judged.name == info.name
            if kind == tarfile.REGTYPE:
                assert judged.mode == data_mode(info.mode), (name, oct(mode))
            else:
                assert judged.mode is None  # the filter ignores directory modes; so do we
    for bad in ("/abs/x", "a/../../x", "../x", "a/..", "./a", "a//b", "a/./b", ""):
        with pytest.raises(TarNameError):
            canonical_name(bad)


def test_links_get_the_data_filter_verdict_lexically(tmp_path: Path) -> None:
    """Links are judged without tarfile.data_filter's realpath() (an lstat per component:
    the K^2 walk of issue 17): for every link our lexical check lets through, the filter
    accepts it too, on a tree holding no symlink (as `dest` does while links are judged);
    every one the filter refuses, we refuse."""
    from nsls2_artifacts.agent.extract import _check_link_stays_inside, to_tarinfo
    from nsls2_artifacts.errors import RejectedArtifactError
    from nsls2_artifacts.tarstream import LINK, SYMLINK, TarMember

    names = ["l", "a/l", "a/b/c/l", "/".join(["d"] * 200) + "/l"]
    targets = ["x", "../x", "../../x", "a/../../x", "./x", "x/../..", "/etc/passwd", "//x"]
    targets += ["../" * 199 + "x", "../" * 201 + "x", "a/" + "../" * 3, "." + "/.." * 2]
    (tmp_path / "a" / "b").mkdir(parents=True)
    for kind in (SYMLINK, LINK):
        for name in names:
            for target in targets:
                entry = TarMember(kind, name, 0o777, 0, 0.0, target, 0, 0, None)
                try:
                    _check_link_stays_inside(entry, "b")
                    ours = True
                except RejectedArtifactError:
                    ours = False
                try:
                    tarfile.data_filter(to_tarinfo(entry), str(tmp_path))
                    theirs = True
                except tarfile.FilterError:
                    theirs = False
                assert theirs or not ours, (kind, name, target)


def test_modes_after_extraction(site) -> None:
    _, cfg = site
    members = [
        *fake_env_members(),
        member("bin/setuid-tool", b"#!/bin/sh\n", mode=0o4777),
        member("lib/private.txt", b"x", mode=0o400),
    ]
    build = commit_build(cfg.store, "demo", tar_bytes(members))
    result, _ = agent_pass_log(cfg)
    assert result.ok
    prefix = layout.build_dir(cfg.deploy_root, "demo", build.build_id)
    assert (prefix / "bin" / "setuid-tool").stat().st_mode & 0o7777 == 0o755
    assert (prefix / "lib" / "private.txt").stat().st_mode & 0o7777 == 0o600
    assert (prefix / "bin" / "python").stat().st_mode & 0o111


def status_of(config: Path, build_id: str) -> str:
    """The state column of the build's row (quarantined ones are listed again, with reasons)."""
    rows = [
        line
        for line in run_cli(config, "status", check=False).stdout.splitlines()
        if build_id in line
    ]
    return rows[0].split()[1]


def test_retry_lifts_a_quarantine_once(tmp_path: Path) -> None:
    """A conda-unpack that failed for a reason outside the build (here: a file of the
    site it checks) quarantines the build and is not retried by itself; `retry` lifts it,
    the next pass deploys it, a second `retry` has nothing to do."""
    config, cfg = write_site(tmp_path / "site")
    blocker = tmp_path / "site-not-ready"
    blocker.write_text("x")
    script = f"import os, sys\nsys.exit(3 if os.path.exists({str(blocker)!r}) else 0)\n"
    members = [m for m in fake_env_members() if m[0].name != "bin/conda-unpack"]
    members.append(member("bin/conda-unpack", script.encode(), mode=0o755))
    build = commit_build(cfg.store, "demo", tar_bytes(members))
    for _ in range(2):
        _, log = agent_pass_log(cfg)
        assert layout.read_ready(cfg.deploy_root, "demo", build.build_id) is None
    assert [e["stage"] for e in events(log, "quarantine")] == []  # second pass: not retried
    assert status_of(config, build.build_id) == "quarantined"
    assert (
        f"nsls2-artifacts retry demo {build.build_id}"
        in run_cli(config, "status", check=False).stdout
    )
    blocker.unlink()
    lifted = run_cli(config, "retry", "demo", build.build_id, check=False)
    assert lifted.returncode == 0, lifted.stderr
    assert "quarantine lifted" in lifted.stdout and "unpack failed (exit 3)" in lifted.stdout
    [row] = [
        line
        for line in run_cli(config, "status", check=False).stdout.splitlines()
        if build.build_id in line
    ]
    assert row.split()[1] == "pending", row
    result, _ = agent_pass_log(cfg)
    assert result.ok
    assert layout.read_ready(cfg.deploy_root, "demo", build.build_id) is not None
    again = run_cli(config, "retry", "demo", build.build_id, check=False)
    assert again.returncode == 0, again.stdout + again.stderr  # nothing to do is no error
    assert "not quarantined: deployed and ready here (it is latest); nothing to retry" in (
        " ".join(again.stdout.split())
    )
    later = T0 + timedelta(hours=1)  # its own time: a tie would be ordered by hash
    pending = commit_build(cfg.store, "demo", tar_bytes(fake_env_members("b")), created=later)
    waiting = run_cli(config, "retry", "demo", pending.build_id, check=False)
    assert waiting.returncode == 0
    assert "committed in the store, not deployed here yet" in " ".join(waiting.stdout.split())
    typo = run_cli(config, "retry", "demo", "2026.01.01T0000Z-00000000", check=False)
    assert typo.returncode == 1 and "no such build in the store" in typo.stdout


def test_long_extraction_logs_progress(site, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's log shows an extraction moving (every 10 s on a real one)."""
    from nsls2_artifacts.agent import deploy, extract

    monkeypatch.setattr(deploy, "EXTRACT_PROGRESS_SECONDS", 0)
    monkeypatch.setattr(extract, "PROGRESS_EVERY", 2)
    _, cfg = site
    build = commit_fake(cfg)
    result, log = agent_pass_log(cfg)
    assert result.ok
    progress = events(log, "extract-progress")
    assert [int(p["members"]) for p in progress] == [2, 4, 6]
    assert all(p["build"] == build.build_id for p in progress)


def _hog_members() -> list[tuple[tarfile.TarInfo, bytes]]:
    """A fake env whose python needs 1 GiB of data to start (a hog run first): fine without
    a ceiling, impossible under a 512 MiB one (RLIMIT_DATA is inherited by the hog)."""
    hog = f"{sys.executable} -c 'bytearray(1 << 30)' || exit 1\n"
    wrapper = f'#!/bin/sh\n{hog}exec {sys.executable} "$@"\n'.encode()
    members = [m for m in fake_env_members() if m[0].name != "bin/python"]
    return [member("bin/python", wrapper, mode=0o755), *members]


@pytest.mark.parametrize("limit", [None, "512MiB"])
def test_smoke_failing_under_the_ceiling_never_becomes_latest(tmp_path: Path, limit) -> None:
    """The smoke imports run under the build's memory ceiling: a build whose python cannot
    start under it is quarantined (stage smoke), gets no kernel and no latest; the same
    build without a ceiling deploys (so the ceiling is what failed it)."""
    _, cfg = write_site(tmp_path / "site", kernels={"memory_limit": limit})
    build = commit_build(cfg.store, "demo", tar_bytes(_hog_members()), smoke=("json",))
    _, log = agent_pass_log(cfg)
    latest = cfg.deploy_root / "envs" / "demo" / "latest"
    if limit is None:
        assert events(log, "quarantine") == [] and latest.is_symlink(), log
        return
    [q] = events(log, "quarantine")
    assert q["stage"] == "smoke" and q["build"] == build.build_id, q
    assert not latest.is_symlink()
    assert not (layout.kernels_dir(cfg.deploy_root) / "nsls2-demo-latest").exists()
