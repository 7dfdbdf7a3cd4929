"""Hostile archives whose sha256 and size match their manifest (issue 17, items 1-2):
link targets and names that cost the extraction policy K^2 time or GBs of memory, and
numbers and depths that raised ValueError / OverflowError / RecursionError, which were
never quarantined, so the daemon redeployed them every pass.

Each runs through the real agent beside a good env: the good env deploys and gets its
kernel; each hostile one is quarantined once, at extract, and never tried again.
The reader's own refusals are pinned in tests/test_tarstream.py, the differential
fuzz (with these shapes) in tests/test_tarstream_fuzz.py."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import zstandard
from support.agent import (
    agent_peak_rss,
    commit_build,
    commit_fake,
    events,
    fake_env_members,
    member,
    start_agent,
    tar_bytes,
    write_site,
)
from support.processes import stop, wait_for

from nsls2_artifacts import layout
from nsls2_artifacts.agent.kernels import kernel_name

MiB = 1 << 20


def gnu_tar_zst(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """A zstd tar in GNU format: numbers too large for octal go base-256 in the header."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return zstandard.ZstdCompressor().compress(raw.getvalue())


def with_pax(name: str, pax: dict[str, str]) -> tuple[tarfile.TarInfo, bytes]:
    info, data = member(name, b"x")
    info.pax_headers = pax
    return info, data


def hostile_archives() -> dict[str, bytes]:
    """One archive per shape of the audit: a fake env plus the hostile members."""
    env = fake_env_members()
    symlink = member("lib/s", type=tarfile.SYMTYPE, linkname="tag.txt")
    base256 = member("lib/late.txt", b"x", mtime=2**70)
    return {
        # item 1: a 1 MiB target of 500,000 parts (K^2: minutes of CPU per pass)
        "target-parts": tar_bytes(
            [*env, member("lib/l", type=tarfile.SYMTYPE, linkname="a/" * 500_000)]
        ),
        # item 1: a long member name after a symlink (10 s per pass, retried forever)
        "name-after-symlink": tar_bytes([*env, symlink, member("lib/t/" + "a/" * 1500 + "f")]),
        # item 2: OverflowError (os.utime), ValueError (int()), RecursionError (makedirs)
        "pax-mtime-1e20": tar_bytes([*env, with_pax("lib/late.txt", {"mtime": "1e20"})]),
        "base256-mtime": gnu_tar_zst([*env, base256]),
        "pax-size-5000-digits": tar_bytes([*env, with_pax("lib/big.txt", {"size": "1" * 5000})]),
        "path-1500-deep": tar_bytes([*env, member("d/" * 1500 + "f", b"x")]),
    }


def test_daemon_serves_the_good_env_and_quarantines_each_hostile_one_once(
    tmp_path: Path,
) -> None:
    """Before: the pax-mtime, base-256, 5000-digit and 1500-deep envs raised past the
    failure classification (a deploy-error every pass, 17 redeploys in 15 s), and the
    target-parts env held the daemon for minutes of CPU per pass. Now the daemon deploys
    the good env (kernel written), quarantines each hostile env once at extract, and
    runs three more passes without touching any of them again."""
    config, cfg = write_site(tmp_path / "site")
    good = commit_fake(cfg, env="good")
    bad = {
        shape.replace("-", ""): commit_build(cfg.store, shape.replace("-", ""), archive)
        for shape, archive in hostile_archives().items()
    }
    log = tmp_path / "agent.log"
    daemon = start_agent(config, log=log)
    try:

        def settled() -> bool:
            done = all(
                layout.quarantine_path(cfg.deploy_root, env, b.build_id).exists()
                for env, b in bad.items()
            )
            return done and layout.read_ready(cfg.deploy_root, "good", good.build_id) is not None

        wait_for(settled, timeout=240, what="the good env ready, every hostile one quarantined")
        passes = len(events(log.read_text(), "pass"))
        wait_for(
            lambda: len(events(log.read_text(), "pass")) >= passes + 3,
            timeout=120,
            what="three more passes",
        )
    finally:
        stop(daemon, 60)  # killed if it does not go (the old code: busy in a K^2 walk)
    text = log.read_text()
    assert events(text, "deploy-error") == [] and events(text, "pass-error") == []
    for env, build in bad.items():
        extracts = [e for e in events(text, "extract") if e["env"] == env]
        quarantines = [e for e in events(text, "quarantine") if e["env"] == env]
        assert len(extracts) == 1 and len(quarantines) == 1, (env, extracts, quarantines)
        assert quarantines[0]["stage"] == "extract", quarantines[0]
        assert quarantines[0]["build"] == build.build_id
        assert not layout.build_dir(cfg.deploy_root, env, build.build_id).exists()
        assert not (layout.kernels_dir(cfg.deploy_root) / kernel_name(env)).exists()
    spec = layout.kernels_dir(cfg.deploy_root) / kernel_name("good") / "kernel.json"
    assert json.loads(spec.read_text())["metadata"]["nsls2"]["build_id"] == good.build_id


def test_many_long_link_targets_cost_no_memory(tmp_path: Path) -> None:
    """300 symlinks with 1 MiB targets (each in a pax header, the artifact a few kB)
    were held until the end of extraction: 1.1 GB of RSS for 1,000 of them. Now the
    first is refused at its header; the agent's peak stays a plain deploy's."""
    links = [
        member(f"lib/l{i}", type=tarfile.SYMTYPE, linkname=f"{i:03}" + "x" * (MiB - 100))
        for i in range(300)
    ]
    builds = {
        "plain": tar_bytes(fake_env_members()),
        "links": tar_bytes([*fake_env_members(), *links]),
    }
    peaks = {}
    for name, archive in builds.items():
        config, cfg = write_site(tmp_path / name)
        build = commit_build(cfg.store, "demo", archive)
        peaks[name] = agent_peak_rss(config)
        ready = layout.read_ready(cfg.deploy_root, "demo", build.build_id)
        assert (ready is None) == (name == "links"), name
    assert len(builds["links"]) < MiB
    assert peaks["links"] < peaks["plain"] + 48 * MiB, peaks
