"""Retention against real directories and real processes: what `prune` keeps and deletes.

Each deployed build is a plain directory tree (tests/support/retention.py); processes are
real children that use a build by exe, cwd, an open file, a mapping or CONDA_PREFIX.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pwd
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.processes import kill9, wait_for
from support.retention import (
    age,
    by_build,
    child,
    make_build,
    promote_deployed,
    run_as_nobody,
    set_latest,
    tombstone_file,
    wait_exec,
    write_kernelspec,
    write_retention_site,
)
from typer.testing import CliRunner

from nsls2_artifacts import layout, storeprune
from nsls2_artifacts.agent import heartbeat as hb
from nsls2_artifacts.agent.retention import run_pass
from nsls2_artifacts.cli import app
from nsls2_artifacts.records import RetentionDecision
from nsls2_artifacts.store import open_store

LOG = logging.getLogger("test-retention")
REPO = Path(__file__).resolve().parents[1]


def prune(config: Path, *args: str) -> str:
    """`nsls2-artifacts prune` in-process; returns its output."""
    result = CliRunner().invoke(app, ["prune", "--config", str(config), *args])
    assert result.exit_code == 0, result.output
    return result.output


def run(site, **kwargs) -> dict[str, RetentionDecision]:
    return by_build(run_pass(site, open_store(site), LOG, **kwargs))


@pytest.fixture
def deploy(backend, tmp_path):
    """A site with latest (new) + one old build past every root rule (keep_latest 1,
    grace 1d), on each store backend."""
    config, site = write_retention_site(tmp_path / "site", keep_latest=1, grace_days=1, **backend)
    old = make_build(site, days_ago=30, tag="a")
    new = make_build(site, days_ago=0.1, tag="b")
    set_latest(site, new)
    return config, site, old, new


@pytest.mark.parametrize("kind", ["exe", "cwd", "fd", "mmap", "so", "conda_prefix"])
def test_process_use_keeps_build_through_prune(deploy, kind):
    config, site, old, new = deploy
    write_kernelspec(site, old, "old")
    expected_via = {"so": "maps", "mmap": "maps", "conda_prefix": "environ"}.get(kind, kind)
    with child(kind, old) as proc:
        output = prune(config)
        assert old.is_dir()
        decision = run(site)[old.name]
        assert decision.action == "keep"
        assert decision.reason.startswith(
            f"kept: in use by pid {proc.pid} (root) on node test-node"
        )
        assert decision.reason.endswith(f"via {expected_via}")
        assert "in use by pid" in output
        assert not tombstone_file(site, old).exists()
        # the kernelspec stays while the build is a root
        assert (site.deploy_root / "share/jupyter/kernels/nsls2-demo-old/kernel.json").exists()
    # process gone: tombstone (and kernelspec removed), then delete once the tombstone is old
    assert run(site)[old.name].action == "tombstone"
    assert old.is_dir()
    assert not (site.deploy_root / "share/jupyter/kernels/nsls2-demo-old").exists()
    age(tombstone_file(site, old), 2)
    prune(config)
    assert not old.exists()
    assert new.is_dir()
    assert not tombstone_file(site, old).exists()
    assert old.name in layout.deleted_builds(site.deploy_root, "demo")


def test_use_through_latest_alias_counts(deploy):
    """CONDA_PREFIX=envs/demo/latest pins the build latest points at, even after a flip."""
    config, site, old, new = deploy
    set_latest(site, old)
    alias = old.parent / "latest"
    proc = subprocess.Popen(["/bin/sleep", "600"], env={"CONDA_PREFIX": str(alias)})
    try:
        wait_exec(proc.pid, "/bin/sleep")
        decision = run(site)[old.name]
        assert decision.reason == "kept: latest"
        # the environ check found the alias path and mapped it to the concrete build
        beat = hb.read_reports(site.deploy_root)[0].heartbeat
        assert beat.in_use[f"demo/{old.name}"][0].path == str(alias)
    finally:
        kill9(proc)


def test_tombstoned_build_back_in_use_loses_tombstone(deploy):
    config, site, old, new = deploy
    assert run(site)[old.name].action == "tombstone"
    assert tombstone_file(site, old).exists()
    with child("cwd", old):
        decision = run(site)[old.name]
        assert decision.action == "untombstone"
        assert "(tombstone removed)" in decision.reason
        assert not tombstone_file(site, old).exists()
    # once unused, it starts over with a fresh tombstone (not the old, aged one)
    assert run(site)[old.name].action == "tombstone"
    assert run(site)[old.name].action == "wait"


def test_roots_latest_hold_lts_newest_grace(backend, tmp_path):
    config, site = write_retention_site(
        tmp_path / "s", keep_latest=1, grace_days=3, lts_years=1, **backend
    )
    lts_young = make_build(site, 400, "a")
    promote_deployed(site, lts_young, "2026-1", days_ago=100)
    lts_expired = make_build(site, 800, "b")
    promote_deployed(site, lts_expired, "2024-1", days_ago=500)
    held = make_build(site, 60, "c")
    newest_ready = make_build(site, 5, "d")
    young = make_build(site, 1, "e", ready=False)  # not ready: not counted in keep_latest
    latest = make_build(site, 10, "f")
    set_latest(site, latest)
    (site.deploy_root / "state" / "holds").mkdir(parents=True)
    (site.deploy_root / "state" / "holds" / "demo.json").write_text(
        json.dumps(
            {
                "env": "demo",
                "build_id": held.name,
                "newest_at_hold": newest_ready.name,
                "newest_at_hold_created": "2026-01-01T00:00:00Z",
                "time": "2026-01-01T00:00:00Z",
            }
        )
    )
    write_kernelspec(site, lts_expired, "2024-1")
    decisions = run(site)
    assert decisions[latest.name].reason == "kept: latest"
    assert decisions[held.name].reason == "kept: rollback hold"
    assert decisions[lts_young.name].reason.startswith("kept: lts 2026-1 (promoted ")
    assert decisions[newest_ready.name].reason == "kept: newest 1 (#1)"
    assert decisions[young.name].reason.startswith("kept: younger than grace 3d")
    assert decisions[lts_expired.name].action == "tombstone"
    assert not (site.deploy_root / "share/jupyter/kernels/nsls2-demo-2024-1").exists()


def test_unreadable_hold_keeps_every_build_of_its_env(backend, tmp_path):
    """A hold retention cannot read may pin any build: nothing in that env is tombstoned,
    and the reason names the file and the field."""
    config, site = write_retention_site(tmp_path / "s", keep_latest=1, grace_days=1, **backend)
    old = make_build(site, 30, "a")
    latest = make_build(site, 1, "b")
    set_latest(site, latest)
    hold = layout.hold_path(site.deploy_root, "demo")
    hold.parent.mkdir(parents=True)
    hold.write_text(json.dumps({"env": "demo", "build_id": old.name}))  # fields missing
    decisions = run(site)
    reason = decisions[old.name].reason
    assert decisions[old.name].action == "keep"
    assert reason.startswith("kept: unreadable rollback hold: ")
    assert str(hold) in reason and "field 'newest_at_hold': missing" in reason
    assert not tombstone_file(site, old).exists()


def test_env_override_from_nsls2_yaml(deploy):
    config, site, old, new = deploy
    manifest = site.manifests / "demo"
    manifest.mkdir(parents=True)
    (manifest / "nsls2.yaml").write_text("display_name: demo\nretention:\n  keep_latest: 2\n")
    assert run(site)[old.name].reason == "kept: newest 2 (#2)"
    (manifest / "nsls2.yaml").write_text("retention:\n  keep_latst: 2\n")
    decision = run(site)[old.name]
    assert decision.action == "keep"
    assert "bad retention override" in decision.reason and "keep_latst" in decision.reason


def test_fractional_keep_latest_is_refused_by_agent_and_store_prune(deploy):
    """`keep_latest: 2.5` is no policy: agent prune and store prune both refuse it (naming
    file and field) and keep every build of the env, instead of each guessing one."""
    config, site, old, new = deploy
    manifest = site.manifests / "demo"
    manifest.mkdir(parents=True)
    (manifest / "nsls2.yaml").write_text("retention:\n  keep_latest: 2.5\n")
    decision = run(site)[old.name]
    assert decision.action == "keep"
    assert "bad retention override" in decision.reason
    assert "nsls2.yaml: retention.keep_latest: expected int" in decision.reason
    store_decisions = storeprune.plan(site, open_store(site))
    assert {d.build_id for d in store_decisions} == {old.name, new.name}
    for d in store_decisions:
        assert d.action == "keep"
        assert d.reason.endswith(decision.reason.removeprefix("kept: "))  # the same refusal


def test_store_listing_empty_deletes_nothing(deploy):
    config, site, old, new = deploy
    run(site)
    age(tombstone_file(site, old), 5)
    if isinstance(site.store, str):  # S3: the site now points at a prefix that lists nothing
        site = dataclasses.replace(site, store=site.store + "-gone")
    else:
        os.rename(site.store, site.store.with_name("store-away"))  # the store "disappears"
    decision = run(site)[old.name]
    assert decision.action == "keep"
    assert "store lists no builds" in decision.reason
    assert old.is_dir()


def _run_as_nobody(site) -> dict[str, RetentionDecision]:
    """Run one retention pass in a forked child that dropped root for `nobody`."""

    def retention_pass() -> str:
        decisions = run_pass(site, open_store(site), LOG)
        return "\n".join(f"{d.build_id}\t{d.action}\t{d.reason}" for d in decisions)

    lines = run_as_nobody(retention_pass).splitlines()
    return {
        b: RetentionDecision("demo", b, a, r) for b, a, r in (line.split("\t") for line in lines)
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a scan as another user")
def test_unreadable_process_blocks_as_unknown(tmp_path):
    """A root process the (unprivileged) scanner cannot read → kept, reason "unknown".
    (The store only lists builds here; the S3 credentials are root's, so one backend.)"""
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"nsls2-unknown-{os.getpid()}"
    base.mkdir(mode=0o755)
    try:
        config, site = write_retention_site(base / "site", keep_latest=1, grace_days=1)
        old = make_build(site, 30, "a")
        new = make_build(site, 0.1, "b")
        set_latest(site, new)
        nobody = pwd.getpwnam("nobody")
        subprocess.run(["chown", "-R", f"{nobody.pw_uid}:{nobody.pw_gid}", str(base)], check=True)
        for path in (base, base / "site"):
            os.chmod(path, 0o755)
        # a root-owned process (another user, from nobody's view) running inside the old build
        with child("cwd", old) as proc:
            decisions = _run_as_nobody(site)
            decision = decisions[old.name]
            assert decision.action == "keep", decision
            assert decision.reason.startswith("kept: unknown (pid ")
            assert "unreadable) on node test-node" in decision.reason
            assert old.is_dir() and not tombstone_file(site, old).exists()
            beat = hb.read_reports(site.deploy_root)[0].heartbeat
            assert beat.complete is False
            assert proc.pid in {u.pid for u in beat.unknown}
        # as root (who can read every process) the same build is tombstoned
        assert run(site)[old.name].action == "tombstone"
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)


def test_killed_mid_delete_next_pass_finishes(deploy):
    """SIGKILL right after the build moved to trash: next pass removes trash, tombstone, spec."""
    config, site, old, new = deploy
    run(site)  # tombstone
    age(tombstone_file(site, old), 2)
    marker = site.deploy_root.parent / "paused"
    env = {
        **os.environ,
        "NSLS2_TEST_PAUSE_AT": "prune-trashed",
        "NSLS2_TEST_PAUSE_FILE": str(marker),
    }
    env.pop("NSLS2_ARTIFACTS_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsls2_artifacts.cli", "prune", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def paused() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode()
        return marker.exists()

    try:
        wait_for(paused, 60, "prune to reach its pause point")
    finally:
        kill9(proc)  # at the pause point: a crash, no chance to clean up
        proc.stderr.close()
    # killed between "renamed into trash" and "tombstone removed + rmtree"
    assert not old.exists()
    assert old.name not in {r.build_id for r in layout.ready_builds(site.deploy_root, "demo")}
    assert list((site.deploy_root / "state" / "trash").iterdir())
    assert tombstone_file(site, old).exists()
    # meanwhile some writer put a kernelspec back that names the build
    write_kernelspec(site, old, "old")
    decision = run(site)[old.name]
    assert decision.action == "finish"
    assert list((site.deploy_root / "state" / "trash").iterdir()) == []
    assert not tombstone_file(site, old).exists()
    assert not (site.deploy_root / "share/jupyter/kernels/nsls2-demo-old").exists()
    assert old.name in layout.deleted_builds(site.deploy_root, "demo")
    # and the pass after that has nothing left to say about it
    assert old.name not in run(site)


def test_clock_skew_up_to_grace_does_not_delete_early(deploy, monkeypatch):
    """Tombstone and heartbeat times come from file mtimes on the shared filesystem.

    A node whose clock runs grace-days fast writes a tombstone claiming an old time and
    would, with local clocks, think the tombstone already aged past the grace period.
    """
    config, site, old, new = deploy
    skew = 1.5 * 86400  # more than grace_days (1d)
    real_time_ns = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() + int(skew * 1e9))
    monkeypatch.setattr(time, "time", lambda: real_time_ns() / 1e9 + skew)
    assert run(site)[old.name].action == "tombstone"
    decision = run(site)[old.name]
    assert decision.action == "wait", decision
    assert decision.reason.startswith("waiting: tombstone age ")
    assert old.is_dir()
    monkeypatch.undo()
    # another node with a slow clock rewrote the record inside: its time field is ignored
    record = tombstone_file(site, old)
    mtime = record.stat().st_mtime_ns
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "time": "2020-01-01T00:00:00.000000Z"}))
    os.utime(record, ns=(mtime, mtime))
    assert run(site)[old.name].action == "wait"
    # aged for real on the shared filesystem → deleted
    age(tombstone_file(site, old), 1.1)
    assert run(site)[old.name].action == "delete"
    assert not old.exists()


def test_dry_run_explains_every_decision_and_changes_nothing(backend, tmp_path):
    config, site = write_retention_site(tmp_path / "s", keep_latest=1, grace_days=1, **backend)
    lts = make_build(site, 200, "a")
    promote_deployed(site, lts, "2026-1", days_ago=50)
    in_use = make_build(site, 100, "b")
    expired = make_build(site, 90, "c")
    tombstoned = make_build(site, 80, "d")
    latest = make_build(site, 0.2, "e")
    set_latest(site, latest)
    write_kernelspec(site, expired, "x")
    run(site, apply=True)
    assert tombstone_file(site, in_use).exists()
    os.unlink(tombstone_file(site, expired))  # keep "expired" un-tombstoned for the dry run
    write_kernelspec(site, expired, "x")
    age(tombstone_file(site, tombstoned), 3)

    def mtimes() -> list[tuple[str, int]]:
        """Every path under the deploy root and its mtime: a dry run writes nothing, not
        even the same bytes again."""
        return sorted(
            (str(p.relative_to(site.deploy_root)), p.lstat().st_mtime_ns)
            for p in site.deploy_root.rglob("*")
        )

    with child("fd", in_use) as proc:
        before = mtimes()
        output = prune(config, "--dry-run")
        assert mtimes() == before
    assert "dry run: nothing changed" in output
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│|]", line)]
        if len(cells) >= 5:
            rows[cells[2]] = line
    assert "kept: latest" in rows[latest.name]
    assert "kept: lts 2026-1 (promoted " in rows[lts.name]
    assert f"kept: in use by pid {proc.pid} (root) on node test-node via fd" in rows[in_use.name]
    assert "would tombstone" in rows[expired.name] and "tombstoned" in rows[expired.name]
    assert "would delete" in rows[tombstoned.name] and "deleted" in rows[tombstoned.name]
    for prefix in (lts, in_use, expired, tombstoned, latest):
        assert prefix.is_dir()


def test_deleted_build_that_becomes_lts_again_may_be_redeployed(deploy):
    config, site, old, new = deploy
    run(site)
    age(tombstone_file(site, old), 2)
    assert run(site)[old.name].action == "delete"
    assert old.name in layout.deleted_builds(site.deploy_root, "demo")
    promote_deployed(site, old, "2026-2", days_ago=0)  # staff promote the deleted build to LTS
    decision = run(site)[old.name]
    assert decision.action == "revive"
    assert decision.reason.startswith("kept: lts 2026-2 (promoted ")
    assert old.name not in layout.deleted_builds(site.deploy_root, "demo")
