"""One look per pass: `status` and the rollout report are functions of the pass's
`Observed` snapshot (agent/observe.py), not second reads of the deploy root, so what they
show is exactly what the agent saw when it planned."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

from support.agent import commit_fake, write_site

from nsls2_artifacts import layout
from nsls2_artifacts.agent import report
from nsls2_artifacts.agent.log import setup_logging
from nsls2_artifacts.agent.observe import observe
from nsls2_artifacts.agent.reconcile import run_pass
from nsls2_artifacts.status import collect_status, status_of
from nsls2_artifacts.store import FilesystemStore


def _quiet() -> logging.Logger:
    return setup_logging(logging.INFO, io.StringIO())


def test_status_and_report_show_the_snapshot_not_a_second_look(tmp_path: Path) -> None:
    _, cfg = write_site(tmp_path / "site")
    store = FilesystemStore(cfg.store)
    first = commit_fake(cfg, tag="one", hours=1)
    assert run_pass(cfg, store, _quiet()).ok
    second = commit_fake(cfg, tag="two", hours=2)
    assert run_pass(cfg, store, _quiet()).ok
    obs = observe(cfg, store, _quiet())
    # the deploy root changes after the look (another node's agent, an operator)
    shutil.rmtree(layout.build_dir(cfg.deploy_root, "demo", first.build_id))
    seen = status_of(cfg, obs, {}, [], store.location)
    states = {b["build_id"]: b["state"] for b in seen["envs"]["demo"]["builds"]}
    assert states == {first.build_id: "ready", second.build_id: "ready"}
    assert seen["envs"]["demo"]["latest"] == second.build_id
    node = report.collect_report(
        cfg, obs, seconds=1.0, store_ok=True, superseded=[], errors={}, node_failures={}
    )
    assert node.envs["demo"].ready == (first.build_id, second.build_id)
    assert node.envs["demo"].latest == second.build_id
    # a new look sees the change, through the same code the agent plans with
    now = collect_status(cfg, store)
    states = {b["build_id"]: b["state"] for b in now["envs"]["demo"]["builds"]}
    assert states == {first.build_id: "pending", second.build_id: "ready"}
