"""Retention inside the real agent: `agent --once` deploys, flips, then prunes every pass.

Uses the agent tests' hand-made archives (tests/support/agent.py), committed through the
Store protocol on each backend (a directory, a real S3 server), so no conda channel is
needed: real extraction, real `latest` flips, real kernelspecs, real processes.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from support.agent import agent_once
from support.agent import write_site as agent_site
from support.processes import kill9
from support.retention import age, tombstone_file
from support.store import commit_to

from nsls2_artifacts import layout
from nsls2_artifacts.store import open_store


@pytest.fixture
def deployed(backend, tmp_path):
    """An old and a new build deployed by the agent, on each store backend."""
    config, site = agent_site(
        tmp_path / "site", retention={"keep_latest": 1, "grace_days": 1, "lts_years": 3}, **backend
    )
    store = open_store(site)
    old = commit_to(store, tmp_path / "scratch", "a", hours=-30 * 24)
    agent_once(config)  # deployed before the next publish (else superseded, never deployed)
    new = commit_to(store, tmp_path / "scratch", "b", hours=0)
    agent_once(config)
    old_dir = site.deploy_root / "envs" / "demo" / old.build_id
    new_dir = site.deploy_root / "envs" / "demo" / new.build_id
    assert (old_dir / ".nsls2" / "ready.json").exists()
    assert (site.deploy_root / "envs" / "demo" / "latest").resolve() == new_dir
    return config, site, old_dir, new_dir


def test_agent_pass_keeps_used_build_then_deletes_it(deployed):
    config, site, old_dir, new_dir = deployed
    proc = subprocess.Popen(["/bin/sleep", "600"], cwd=old_dir)
    try:
        agent_once(config)
        assert old_dir.is_dir() and not tombstone_file(site, old_dir).exists()
        beat = json.loads((site.deploy_root / "state/nodes/test-node.json").read_text())
        assert [u["pid"] for u in beat["in_use"][f"demo/{old_dir.name}"]] == [proc.pid]
    finally:
        kill9(proc)
    agent_once(config)
    assert tombstone_file(site, old_dir).exists()
    age(tombstone_file(site, old_dir), 2)
    agent_once(config)
    assert not old_dir.exists()
    assert new_dir.is_dir()
    assert old_dir.name in layout.deleted_builds(site.deploy_root, "demo")
    for spec in (site.deploy_root / "share/jupyter/kernels").glob("*/kernel.json"):
        assert old_dir.name not in spec.read_text()


def test_agent_does_not_redeploy_a_deleted_build(deployed):
    config, site, old_dir, new_dir = deployed
    agent_once(config)  # tombstone
    age(tombstone_file(site, old_dir), 2)
    agent_once(config)  # delete
    assert not old_dir.exists()
    agent_once(config)  # the store still has it: it must stay deleted
    assert not old_dir.exists()
