"""Crash safety and concurrency of the agent as real processes: SIGKILL at every stage
converges on the next pass; two agents on one deploy root unpack each build once; a
store that disappears or is empty never deletes or un-flips anything; SIGTERM stops
the daemon cleanly."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from support.agent import (
    commit_fake,
    events,
    start_agent,
    write_site,
)
from support.cli import run_cli
from support.processes import kill9, stop, wait_for

from nsls2_artifacts import layout
from nsls2_artifacts.agent import kernels
from nsls2_artifacts.agent.watch import DEBOUNCE_SECONDS
from nsls2_artifacts.fsutil import read_json
from nsls2_artifacts.store.filesystem import FilesystemStore


def assert_converged(cfg, expected_latest: dict[str, str]) -> None:
    """Every ready build is whole and unpacked once; latest and every kernelspec name
    ready builds; no partial or trash directories are left."""
    root = cfg.deploy_root
    for env in layout.deployed_envs(root):
        leftovers = [p.name for p in layout.env_dir(root, env).iterdir() if p.name.startswith(".")]
        assert leftovers == []
        for build_id in layout.build_dirs(root, env):
            prefix = layout.build_dir(root, env, build_id)
            assert layout.read_ready(root, env, build_id) is not None, f"{build_id} not ready"
            assert (prefix / ".unpacked").read_text().splitlines() == [str(prefix)]
            assert (prefix / "lib" / "tag-link.txt").read_text() == (
                prefix / "lib" / "tag.txt"
            ).read_text()
    for env, build_id in expected_latest.items():
        assert os.readlink(layout.latest_link(root, env)) == build_id
    assert_kernels_point_at_ready(cfg)


def assert_kernels_point_at_ready(cfg) -> None:
    root = cfg.deploy_root
    for name, data in kernels.installed(root).items():
        info = kernels.spec_target(data)
        build = info["build_id"]
        if info["channel"] == "latest":
            build = os.path.basename(os.path.realpath(layout.latest_link(root, info["env"])))
        assert layout.read_ready(root, info["env"], build) is not None, name


@pytest.mark.parametrize("stage", ["extract", "unpack", "smoke", "flip"])
def test_sigkill_at_each_stage_converges(tmp_path: Path, stage: str) -> None:
    config, cfg = write_site(tmp_path / "site")
    first = commit_fake(cfg, tag="one", hours=1, lts="2026-1")
    assert run_cli(config, "agent", "--once", check=False).returncode == 0
    second = commit_fake(cfg, tag="two", hours=2)

    marker = tmp_path / "paused"
    agent = start_agent(
        config,
        "--once",
        env={"NSLS2_TEST_PAUSE_AT": stage, "NSLS2_TEST_PAUSE_FILE": str(marker)},
        log=tmp_path / "agent.log",
    )
    try:
        wait_for(marker.exists, what=f"the agent to reach {stage}")
    finally:
        kill9(agent)
    # while it lies dead: latest and kernels still name a ready build
    assert os.readlink(layout.latest_link(cfg.deploy_root, "demo")) == first.build_id
    assert_kernels_point_at_ready(cfg)
    if stage == "flip":
        assert layout.read_ready(cfg.deploy_root, "demo", second.build_id) is not None

    out = run_cli(config, "agent", "--once", check=False)
    assert out.returncode == 0, out.stderr
    assert_converged(cfg, {"demo": second.build_id})
    assert set(kernels.installed(cfg.deploy_root)) == {"nsls2-demo-latest", "nsls2-demo-2026-1"}


def test_two_agents_unpack_each_build_once(tmp_path: Path) -> None:
    config, cfg = write_site(tmp_path / "site")
    builds = [  # LTS-labelled but the newest, so none is skipped as superseded
        commit_fake(cfg, env, tag=f"{env}{h}", hours=h, lts=None if h == 3 else f"2026-{h}")
        for env in ("demo", "base")
        for h in (1, 2, 3)
    ]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    agents = [start_agent(config, "--once", log=log) for log in logs]
    assert [a.wait(timeout=300) for a in agents] == [0, 0]

    text = "".join(log.read_text() for log in logs)
    extracted = sorted(e["build"] for e in events(text, "extract"))
    assert extracted == sorted(b.build_id for b in builds)
    assert_converged(cfg, {"demo": builds[2].build_id, "base": builds[5].build_id})
    # both agents left the same, final state: one more pass has nothing to do
    again = run_cli(config, "agent", "--once", check=False)
    for name in ("extract", "flip", "kernelspec", "kernelspec-removed"):
        assert events(again.stderr, name) == [], name


@pytest.mark.parametrize("how", ["gone", "empty", "env-empty"])
def test_store_gone_or_empty_deletes_nothing(tmp_path: Path, how: str) -> None:
    config, cfg = write_site(tmp_path / "site")
    first = commit_fake(cfg, tag="one", hours=1, lts="2026-1")
    second = commit_fake(cfg, tag="two", hours=2)
    assert run_cli(config, "agent", "--once", check=False).returncode == 0
    before_kernels = kernels.installed(cfg.deploy_root)
    assert len(before_kernels) == 2

    moved = tmp_path / "store-away"
    shutil.move(cfg.store, moved)
    if how == "empty":
        cfg.store.mkdir()
    elif how == "env-empty":
        (cfg.store / "demo").mkdir(parents=True)

    out = run_cli(config, "agent", "--once", check=False)
    if how == "gone":
        assert out.returncode == 1 and events(out.stderr, "store-unavailable")
    for name in ("kernelspec-removed", "flip"):
        assert events(out.stderr, name) == []
    assert kernels.installed(cfg.deploy_root) == before_kernels
    assert os.readlink(layout.latest_link(cfg.deploy_root, "demo")) == second.build_id
    for build in (first, second):
        assert layout.read_ready(cfg.deploy_root, "demo", build.build_id) is not None
    status = json.loads(run_cli(config, "status", "--json", check=False).stdout)
    assert status["envs"]["demo"]["latest"] == second.build_id


def test_daemon_polls_survives_store_outage_and_stops_on_sigterm(tmp_path: Path) -> None:
    config, cfg = write_site(tmp_path / "site")
    first = commit_fake(cfg, tag="one", hours=1)
    log = tmp_path / "daemon.log"
    daemon = start_agent(config, log=log)
    try:
        link = layout.latest_link(cfg.deploy_root, "demo")
        wait_for(lambda: link.is_symlink(), what="first deploy")
        shutil.move(cfg.store, tmp_path / "away")
        wait_for(
            lambda: len(events(log.read_text(), "store-unavailable")) >= 2, what="outage passes"
        )
        assert os.readlink(link) == first.build_id
        assert daemon.poll() is None
        shutil.move(tmp_path / "away", cfg.store)
        second = commit_fake(cfg, tag="two", hours=2)
        wait_for(lambda: os.readlink(link) == second.build_id, what="flip after outage")
    finally:
        stop(daemon, 60)
    assert daemon.returncode == 0
    assert events(log.read_text(), "agent-stop")
    record = read_json(layout.pass_record_path(cfg.deploy_root, "test-node"))
    assert record["node"] == "test-node"


def test_daemon_store_event_triggers_pass_before_poll(tmp_path: Path) -> None:
    """With a poll interval of an hour, only the native event hint can deploy in time."""
    config, cfg = write_site(tmp_path / "site", agent={"poll_seconds": 3600})
    log = tmp_path / "daemon.log"
    daemon = start_agent(config, log=log)
    try:
        wait_for(lambda: events(log.read_text(), "pass"), what="the first pass")
        build = commit_fake(cfg, tag="one", hours=1)
        link = layout.latest_link(cfg.deploy_root, "demo")
        wait_for(lambda: link.is_symlink(), timeout=120, what="a hinted pass")
        assert os.readlink(link) == build.build_id
        assert events(log.read_text(), "hint")
    finally:
        stop(daemon, 60)
    assert daemon.returncode == 0


def test_an_idle_daemon_does_not_wake_itself(tmp_path: Path) -> None:
    """A pass reads every manifest and writes this node's report into the store; neither
    is a store change. With an hour's poll and nothing published, the daemon makes its
    first pass and waits (it used to make one every ~0.5 s, each hinted by the last
    one's own reads and report: facility-scale benchmark, issue #20)."""
    config, cfg = write_site(tmp_path / "site", agent={"poll_seconds": 3600})
    commit_fake(cfg, tag="one", hours=1)  # a manifest each pass reads
    log = tmp_path / "daemon.log"
    daemon = start_agent(config, log=log)
    try:
        wait_for(lambda: events(log.read_text(), "pass"), timeout=120, what="the first pass")
        # a self-hint starts the next pass 0.5 s (the debounce) after the report
        time.sleep(10 * DEBOUNCE_SECONDS)
        text = log.read_text()
    finally:
        stop(daemon, 60)
    assert daemon.returncode == 0
    assert events(text, "hint") == []
    assert len(events(text, "pass")) == 1


def test_only_commits_and_lts_records_hint_a_pass(tmp_path: Path) -> None:
    """What the daemon's filesystem watch lets through: the commit marker and LTS records,
    not node reports, staging directories or an atomic write's temp file."""
    store = FilesystemStore(tmp_path)
    hints = {
        "demo/2026.12.01T020000Z-0123abcd/manifest.json": True,
        "demo/lts/2026-1.json": True,
        ".nodes/node1.json": False,
        "demo/.staging-2026.12.01T020000Z-0123abcd-42/index.json": False,
        "demo/2026.12.01T020000Z-0123abcd/.manifest.json.x1y2.tmp": False,
        "demo/2026.12.01T020000Z-0123abcd/env.tar.zst": False,
    }
    assert {p: store.is_change_hint(str(tmp_path / p)) for p in hints} == hints
    assert not store.is_change_hint("/elsewhere/demo/lts/2026-1.json")


@pytest.mark.parametrize("stage", ["extract", "unpack"])
def test_leftovers_of_a_build_gone_from_the_store_are_swept(tmp_path: Path, stage: str) -> None:
    config, cfg = write_site(tmp_path / "site")
    first = commit_fake(cfg, tag="one", hours=1)
    assert run_cli(config, "agent", "--once", check=False).returncode == 0
    second = commit_fake(cfg, tag="two", hours=2)
    marker = tmp_path / "paused"
    agent = start_agent(
        config, "--once", env={"NSLS2_TEST_PAUSE_AT": stage, "NSLS2_TEST_PAUSE_FILE": str(marker)}
    )
    try:
        wait_for(marker.exists, what=f"the agent to reach {stage}")
    finally:
        kill9(agent)
    env_dir = layout.env_dir(cfg.deploy_root, "demo")
    assert any(p.name != first.build_id and p.name != "latest" for p in env_dir.iterdir())
    shutil.rmtree(cfg.store / "demo" / second.build_id)  # unpublished before the redo

    out = run_cli(config, "agent", "--once", check=False)
    assert out.returncode == 0, out.stderr
    assert events(out.stderr, "leftover-removed")
    assert sorted(p.name for p in env_dir.iterdir()) == sorted([first.build_id, "latest"])
    assert_converged(cfg, {"demo": first.build_id})
