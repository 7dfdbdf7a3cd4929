"""Rollout reports from real agent passes: two nodes on one deploy root and one store.

Each pass puts the node's report in the store (through the Store interface); `rollout`
reads them back the way the hook does. One node needs a module the build lacks
(`agent.node_imports`), so the build fails its import check there: the rollout is
partial with that node's reason until the node is retired. Superseded builds are
skipped, reported as such, and never counted as failures.
"""

from __future__ import annotations

import subprocess

from support.agent import agent_pass, commit_fake, promote_fake, write_site
from support.cli import CLI, run_cli
from support.sites import node_config

from nsls2_artifacts import layout
from nsls2_artifacts.config import load_config
from nsls2_artifacts.rollout import build_rollout, read_nodes, served_latest
from nsls2_artifacts.store import FilesystemStore


def two_nodes(tmp_path):
    """node-a and node-b: one store and deploy root; node-b's users need `cupy_for_tests`."""
    config_a, site_a = write_site(tmp_path / "site", agent={"node": "node-a"})
    config_b = node_config(config_a, "node-b", node_imports=["cupy_for_tests"])
    return config_a, site_a, config_b, load_config(config_b)


def test_partial_rollout_names_the_failing_node_until_it_is_retired(tmp_path) -> None:
    config_a, site_a, config_b, site_b = two_nodes(tmp_path)
    assert site_b.agent.node_imports == ("cupy_for_tests",)
    build = commit_fake(site_a, tag="one", hours=1, display_name="NSLS-II demo")
    assert agent_pass(site_a).ok
    assert agent_pass(site_b).ok  # node-b's import failure is reported, not a failed pass
    store = FilesystemStore(site_a.store)
    nodes, error = read_nodes(store, ttl_seconds=600)
    assert error == "" and [n.node for n in nodes] == ["node-a", "node-b"]
    b_env = nodes[1].env("demo")
    assert b_env.latest == build.build_id  # one shared deploy root: one latest
    assert "cupy_for_tests" in b_env.failed[build.build_id]

    view = build_rollout(nodes, "demo", build.build_id, build.display_name)
    assert (view.live, view.serving, view.complete) == (2, 1, False)
    assert view.summary.startswith("deployed on 1 of 2 live nodes (node-b failed: smoke import")
    assert "No module named 'cupy_for_tests'" in view.summary
    assert served_latest(nodes, "demo") == (build.build_id, "on 2 live nodes")

    out = subprocess.run(
        [*CLI, "nodes", "retire", "node-b", "--config", str(config_a)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "rollout report no longer counts" in out.stdout
    nodes, _ = read_nodes(store, ttl_seconds=600)
    view = build_rollout(nodes, "demo", build.build_id, build.display_name)
    assert view.complete and view.headline == "Users can restart NSLS-II demo (latest) now"
    assert "not counted: node-b retired" in view.summary

    # node-b's agent comes back: its next report clears the retirement
    agent_pass(site_b)
    nodes, _ = read_nodes(store, ttl_seconds=600)
    assert [n.liveness for n in nodes] == ["live", "live"]
    # ... and a stale node no longer blocks either
    nodes, _ = read_nodes(store, ttl_seconds=-1)
    assert {n.liveness for n in nodes} == {"stale"}
    assert not build_rollout(nodes, "demo", build.build_id, "x").complete


def test_superseded_builds_are_skipped_and_not_failed(tmp_path) -> None:
    config, site = write_site(tmp_path / "site", agent={"node": "node-a"})
    first = commit_fake(site, tag="one", hours=1)
    assert agent_pass(site).ok
    # an outage: three newer builds arrive before the next pass, the oldest labelled LTS
    lts = commit_fake(site, tag="two", hours=2)
    promote_fake(site, "demo", "2026-1", lts.build_id, hours=2.5)
    skipped = commit_fake(site, tag="three", hours=3)
    newest = commit_fake(site, tag="four", hours=4)
    dry = run_cli(config, "agent", "--dry-run", check=False)
    assert f"skip     demo/{skipped.build_id} (superseded by {newest.build_id})" in dry.stdout, (
        dry.stdout
    )
    result = agent_pass(site)
    assert result.ok
    assert sorted(o.build_id for o in result.outcomes) == sorted([lts.build_id, newest.build_id])
    assert not layout.build_dir(site.deploy_root, "demo", skipped.build_id).exists()
    assert layout.read_ready(site.deploy_root, "demo", first.build_id) is not None

    nodes, _ = read_nodes(FilesystemStore(site.store), ttl_seconds=600)
    env = nodes[0].env("demo")
    assert env.superseded == {skipped.build_id: newest.build_id} and env.failed == {}
    view = build_rollout(nodes, "demo", skipped.build_id, "NSLS-II demo")
    assert view.nodes[0].status == "superseded" and not view.failed
    assert view.superseded_by == newest.build_id
    assert view.headline.startswith("Superseded")
    assert build_rollout(nodes, "demo", newest.build_id, "NSLS-II demo").complete
    assert agent_pass(site).ok  # stays skipped on the next pass
    assert not layout.build_dir(site.deploy_root, "demo", skipped.build_id).exists()
    status = run_cli(config, "status", check=False).stdout
    assert f"{skipped.build_id}  superseded" in status
    assert f"superseded by {newest.build_id}" in status
