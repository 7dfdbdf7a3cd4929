"""`latest` only moves forward on its own, repairs a dangling link, and `rollback` holds
it on an older build until a newer build than the newest at hold time is ready."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

from support.agent import agent_pass, commit_fake, write_site
from support.cli import run_cli

from nsls2_artifacts import layout
from nsls2_artifacts.agent import latest
from nsls2_artifacts.agent.log import setup_logging
from nsls2_artifacts.agent.reconcile import run_pass
from nsls2_artifacts.records import ReadyRecord
from nsls2_artifacts.store import FilesystemStore


def ready(build_id: str, hour: int) -> ReadyRecord:
    return ReadyRecord("demo", build_id, f"2026-11-01T{hour:02d}:00:00Z", "", "", "", (), 0.0)


def target(cfg) -> str:
    return os.readlink(layout.latest_link(cfg.deploy_root, "demo"))


def test_choose_latest_rules() -> None:
    a, b, c = ready("a", 1), ready("b", 2), ready("c", 3)
    assert latest.choose_latest([], "a", None) == (None, False)
    assert latest.choose_latest([a, b], None, None) == ("b", False)
    assert latest.choose_latest([a, b, c], "b", None) == ("c", False)
    # never backwards: the newest build disappearing from the ready list ...
    assert latest.choose_latest([a, b], "b", None) == ("b", False)
    # ... but a dangling or unready target is replaced by the newest ready build
    assert latest.choose_latest([a, b], "zz", None) == ("b", False)
    hold = latest.Hold("demo", "a", "b", b.created, "")
    assert latest.choose_latest([a, b], "a", hold) == ("a", False)
    assert latest.choose_latest([a, b, c], "a", hold) == ("c", True)


def test_rollback_holds_until_next_publish(tmp_path: Path) -> None:
    config, cfg = write_site(tmp_path / "site")
    first = commit_fake(cfg, tag="one", hours=1)
    assert agent_pass(cfg).ok  # deployed before the next publish (else superseded, never ready)
    second = commit_fake(cfg, tag="two", hours=2)
    assert agent_pass(cfg).ok
    assert target(cfg) == second.build_id

    out = run_cli(config, "rollback", "demo", check=False)
    assert out.returncode == 0, out.stderr
    assert target(cfg) == first.build_id
    spec = cfg.deploy_root / "share/jupyter/kernels/nsls2-demo-latest/kernel.json"
    assert json.loads(spec.read_text())["metadata"]["nsls2"]["build_id"] == first.build_id
    assert agent_pass(cfg).ok  # the agent does not undo a rollback
    assert target(cfg) == first.build_id
    assert "held by rollback" in run_cli(config, "status", check=False).stdout

    third = commit_fake(cfg, tag="three", hours=3)
    assert agent_pass(cfg).ok
    assert target(cfg) == third.build_id
    assert not layout.hold_path(cfg.deploy_root, "demo").exists()


def test_rollback_refuses_unready_build(tmp_path: Path) -> None:
    config, cfg = write_site(tmp_path / "site")
    commit_fake(cfg, tag="one", hours=1)
    assert agent_pass(cfg).ok
    out = run_cli(config, "rollback", "demo", "2026.01.01T000000Z-deadbeef", check=False)
    assert out.returncode == 1 and "not a ready build" in out.stderr
    out = run_cli(config, "rollback", "demo", check=False)
    assert out.returncode == 1 and "no ready build older" in out.stderr


def test_dangling_latest_is_repaired(tmp_path: Path) -> None:
    _, cfg = write_site(tmp_path / "site")
    first = commit_fake(cfg, tag="one", hours=1)
    assert agent_pass(cfg).ok
    latest.flip(cfg.deploy_root, "demo", "2026.01.01T000000Z-deadbeef")
    assert agent_pass(cfg).ok
    assert target(cfg) == first.build_id


def test_dry_run_prints_plan_and_changes_nothing(tmp_path: Path) -> None:
    config, cfg = write_site(tmp_path / "site")
    build = commit_fake(cfg)
    out = run_cli(config, "agent", "--dry-run", check=False)
    assert out.returncode == 0, out.stderr
    assert f"deploy   demo/{build.build_id}" in out.stdout
    assert f"flip     demo/latest: - -> {build.build_id}" in out.stdout
    assert "kernel   write nsls2-demo-latest" in out.stdout
    assert not (cfg.deploy_root / "envs").exists()


def test_builds_for_another_platform_are_not_deployed(tmp_path: Path) -> None:
    config, cfg = write_site(tmp_path / "site")
    native = commit_fake(cfg, tag="one", hours=1)
    foreign = commit_fake(cfg, tag="two", hours=2, platform="linux-ppc64le")
    out = run_cli(config, "agent", "--dry-run", check=False)
    assert f"skip     demo/{foreign.build_id} (built for linux-ppc64le)" in out.stdout
    assert agent_pass(cfg).ok
    assert target(cfg) == native.build_id
    assert not layout.build_dir(cfg.deploy_root, "demo", foreign.build_id).exists()


def test_unreadable_hold_pins_nothing_and_status_names_it(tmp_path: Path) -> None:
    config, cfg = write_site(tmp_path / "site")
    first = commit_fake(cfg, tag="one", hours=1)
    second = commit_fake(cfg, tag="two", hours=2)
    hold = layout.hold_path(cfg.deploy_root, "demo")
    hold.parent.mkdir(parents=True)
    hold.write_text(json.dumps({"env": "demo", "build_id": first.build_id}))
    buf = io.StringIO()
    assert run_pass(cfg, FilesystemStore(cfg.store), setup_logging(logging.INFO, buf)).ok
    assert target(cfg) == second.build_id  # as if there were no hold
    assert "hold-unreadable" in buf.getvalue() and str(hold) in buf.getvalue()
    out = run_cli(config, "status", check=False).stdout
    assert "ROLLBACK HOLD UNREADABLE" in out and "field 'newest_at_hold': missing" in out


def test_malformed_retention_override_does_not_stop_the_pass(tmp_path: Path) -> None:
    """A bad `retention:` in nsls2.yaml keeps that env's builds (retention says why) but
    the pass still deploys, flips and writes kernels."""
    _, cfg = write_site(tmp_path / "site")
    build = commit_fake(cfg, tag="one", hours=1)
    (cfg.manifests / "demo").mkdir(parents=True, exist_ok=True)
    (cfg.manifests / "demo" / "nsls2.yaml").write_text("retention: {keep_latest: 2.5}\n")
    assert agent_pass(cfg).ok
    assert target(cfg) == build.build_id


def test_retention_plans_from_the_pass_snapshot_after_its_flips(tmp_path: Path) -> None:
    """The build a pass just made latest is a root for that same pass's retention (which
    plans from the pass's snapshot as the flips left it), even with no other reason to keep."""
    _, cfg = write_site(tmp_path / "site", retention={"keep_latest": 0, "grace_days": 0})
    first = commit_fake(cfg, tag="one", hours=1)
    assert agent_pass(cfg).ok
    second = commit_fake(cfg, tag="two", hours=2)
    assert agent_pass(cfg).ok
    assert target(cfg) == second.build_id
    tombstoned = layout.tombstones(cfg.deploy_root, "demo")
    assert second.build_id not in tombstoned and first.build_id in tombstoned
    spec = cfg.deploy_root / "share/jupyter/kernels/nsls2-demo-latest/kernel.json"
    assert json.loads(spec.read_text())["metadata"]["nsls2"]["build_id"] == second.build_id
