"""One look per pass: `status` and the rollout report are functions of the pass's
`Observed` snapshot (agent/observe.py), not second reads of the deploy root, so what they
show is exactly what the agent saw when it planned."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

from support.agent import commit_fake, write_site

from nsls2_artifacts import layout
from nsls2_artifacts.agent import dedup, report
from nsls2_artifacts.agent.log import setup_logging
from nsls2_artifacts.agent.observe import observe
from nsls2_artifacts.agent.reconcile import run_pass
from nsls2_artifacts.rollout import NodeRollout
from nsls2_artifacts.status import collect_status, look_beside, status_of
from nsls2_artifacts.store import FilesystemStore


def _quiet() -> logging.Logger:
    return setup_logging(logging.INFO, io.StringIO())


def _states(status: dict) -> dict[str, str]:
    return {b["build_id"]: b["state"] for b in status["envs"]["demo"]["builds"]}


def test_status_and_report_show_the_snapshot_not_a_second_look(tmp_path: Path) -> None:
    _, cfg = write_site(tmp_path / "site")
    store = FilesystemStore(cfg.store)
    first = commit_fake(cfg, tag="one", hours=1)
    assert run_pass(cfg, store, _quiet()).ok
    second = commit_fake(cfg, tag="two", hours=2)
    assert run_pass(cfg, store, _quiet()).ok
    # a dedup record, so the look has a per-build record beside the snapshot to read
    record = dedup.DedupRecord("0" * 64, 3, 300, 2, 200, 0, 1, 0, (f"demo/{first.build_id}",))
    second_dir = layout.build_dir(cfg.deploy_root, "demo", second.build_id)
    (second_dir / dedup.RECORD).write_text(json.dumps(record.to_dict()))
    obs = observe(cfg, store, _quiet())
    beside = look_beside(cfg, store, obs)
    seen = status_of(cfg, obs, beside)
    assert seen == collect_status(cfg, store)  # the command takes the same look
    assert _states(seen) == {first.build_id: "ready", second.build_id: "ready"}
    assert seen["envs"]["demo"]["latest"] == second.build_id
    disk = {b["build_id"]: b["disk"] for b in seen["envs"]["demo"]["builds"]}
    assert disk[first.build_id] is None and disk[second.build_id]["added_bytes"] == 100
    # the deploy root changes after the look (another node's agent, an operator): what
    # was seen does not, status_of reads nothing
    shutil.rmtree(cfg.deploy_root)
    assert status_of(cfg, obs, beside) == seen
    node = report.collect_report(
        cfg, obs, seconds=1.0, store_ok=True, superseded=[], errors={}, node_failures={}
    )
    assert node.envs["demo"].ready == (first.build_id, second.build_id)
    assert node.envs["demo"].latest == second.build_id
    # a new look sees the change, through the same code the agent plans with
    assert _states(collect_status(cfg, store)) == {
        first.build_id: "pending",
        second.build_id: "pending",
    }


def test_status_of_a_pass_shows_what_it_planned_and_reported(tmp_path: Path) -> None:
    """`status_of(result.seen)` is the pass's own snapshot: latest is where the pass
    flipped it, ready and quarantined builds are the ones its rollout report names."""
    _, cfg = write_site(tmp_path / "site")
    store = FilesystemStore(cfg.store)
    good = commit_fake(cfg, tag="good", hours=1)
    assert run_pass(cfg, store, _quiet()).ok
    broken = commit_fake(cfg, tag="broken", hours=2, smoke=("no_such_module_here",))
    assert not run_pass(cfg, store, _quiet()).ok  # quarantined; latest stays on `good`
    newer = commit_fake(cfg, tag="newer", hours=3)
    result = run_pass(cfg, store, _quiet())
    assert result.seen is not None
    shown = status_of(cfg, result.seen, look_beside(cfg, store, result.seen))
    (published,) = [NodeRollout.from_dict(r.data) for r in store.node_reports()]
    (flip,) = result.plan.to_flip
    assert flip.to_build == newer.build_id
    assert shown["envs"]["demo"]["latest"] == published.envs["demo"].latest == newer.build_id
    ready = {b for b, state in _states(shown).items() if state == "ready"}
    assert ready == set(published.envs["demo"].ready) == {good.build_id, newer.build_id}
    assert _states(shown)[broken.build_id] == "quarantined"
    assert set(published.envs["demo"].failed) == {broken.build_id}
    assert [q["build_id"] for q in shown["quarantined"]] == [broken.build_id]
