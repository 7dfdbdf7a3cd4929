"""Several nodes, one deploy root: heartbeats written as other agents would write them.

/proc only shows the local node, so retention must trust other nodes' heartbeats: a use
reported there keeps a build; a node that stopped reporting blocks all deletion until
`nodes retire`; a node that has not reported since a tombstone delays its delete.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace

import msgspec
import pytest
from support.retention import (
    age,
    by_build,
    make_build,
    set_latest,
    tombstone_file,
    write_retention_site,
)
from typer.testing import CliRunner

from nsls2_artifacts import layout
from nsls2_artifacts.agent import heartbeat as hb
from nsls2_artifacts.agent.retention import run_pass
from nsls2_artifacts.cli import app
from nsls2_artifacts.records import NodeHeartbeat, isoformat, utcnow
from nsls2_artifacts.store import FilesystemStore

LOG = logging.getLogger("test-nodes")


def run(site):
    return by_build(run_pass(site, FilesystemStore(site.store), LOG))


def cli(config, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, [*args, "--config", str(config)])
    assert result.exit_code == code, result.output
    return result.output


def other_agent(site, node: str, in_use: dict | None = None, complete: bool = True, unknown=()):
    """Write NODE.json the way another node's agent does (atomically, through heartbeat.py)."""
    beat = NodeHeartbeat(
        node=node,
        time=isoformat(utcnow()),
        version="0.1.0",
        in_use=in_use or {},
        complete=complete,
        unknown=list(unknown),
    )
    hb.write_heartbeat(site.deploy_root, beat)
    return layout.heartbeat_path(site.deploy_root, node)


@pytest.fixture
def two_envs(tmp_path):
    """Two envs, each with a latest build and an old, expired one."""
    config, site = write_retention_site(tmp_path / "s", keep_latest=1, grace_days=1, ttl=600)
    builds = {}
    for env, (old_tag, new_tag) in {"demo": "ab", "base": "cd"}.items():  # distinct build ids
        old = make_build(site, 30, old_tag, env=env)
        new = make_build(site, 0.1, new_tag, env=env)
        set_latest(site, new)
        builds[env] = old
    return config, site, builds


def test_use_on_another_node_keeps_build(two_envs):
    config, site, builds = two_envs
    old = builds["demo"]
    use = {"pid": 4242, "user": "alice", "via": "maps", "path": str(old / "lib" / "libz.so.1")}
    other_agent(site, "sdcc-07", {f"demo/{old.name}": [use]})
    decisions = run(site)
    assert decisions[old.name].reason == "kept: in use by pid 4242 (alice) on node sdcc-07 via maps"
    assert decisions[builds["base"].name].action == "tombstone"
    # sdcc-07 reports it in use again after the tombstone would have aged: still kept
    age(tombstone_file(site, builds["base"]), 3)
    other_agent(site, "sdcc-07", {f"demo/{old.name}": [use]})
    decisions = run(site)
    assert decisions[old.name].action == "keep"
    assert decisions[builds["base"].name].action == "delete"
    assert old.is_dir() and not builds["base"].exists()


def test_node_not_reported_since_tombstone_delays_delete(tmp_path):
    # a long ttl so that a node can be alive yet not have reported since the tombstone
    config, site = write_retention_site(tmp_path / "s", keep_latest=1, grace_days=1, ttl=10 * 86400)
    old = make_build(site, 30, "a")
    set_latest(site, make_build(site, 0.1, "b"))
    beat = other_agent(site, "sdcc-02")
    assert run(site)[old.name].action == "tombstone"
    age(tombstone_file(site, old), 3)
    before = os.stat(tombstone_file(site, old)).st_mtime_ns - 10**9
    os.utime(beat, ns=(before, before))  # sdcc-02 last reported just before the tombstone
    decision = run(site)[old.name]
    assert decision.reason == "waiting: node sdcc-02 has not reported since the tombstone"
    assert old.is_dir()
    other_agent(site, "sdcc-02")  # it reports again, nothing in use
    assert run(site)[old.name].action == "delete"
    assert not old.exists()


def test_stale_node_blocks_all_deletion_until_retired(two_envs):
    config, site, builds = two_envs
    beat = other_agent(site, "sdcc-03")
    run(site)  # tombstone both old builds
    for old in builds.values():
        age(tombstone_file(site, old), 3)
    age(beat, 1)  # no heartbeat for a day (ttl is 600 s)
    decisions = run(site)
    for env, old in builds.items():
        assert decisions[old.name].action == "keep"
        assert decisions[old.name].reason.startswith("kept: node sdcc-03 stale since 20")
        assert old.is_dir(), env
    listing = cli(config, "nodes", "list")
    assert "sdcc-03" in listing and "stale" in listing
    assert "test-node" in listing and "alive" in listing
    # dry run agrees and changes nothing
    assert "kept: node sdcc-03 stale since" in cli(config, "prune", "--dry-run")
    out = cli(config, "nodes", "retire", "sdcc-03")
    assert "retired node sdcc-03" in out
    assert not beat.exists()
    assert (layout.retired_nodes_dir(site.deploy_root) / "sdcc-03.json").exists()
    assert "sdcc-03" not in cli(config, "nodes", "list")
    decisions = run(site)
    for old in builds.values():
        assert decisions[old.name].action == "delete"
        assert not old.exists()


def test_retire_unknown_node_is_a_clear_error(two_envs):
    config, site, builds = two_envs
    run(site)
    out = cli(config, "nodes", "retire", "sdcc-99", code=1)
    assert "no heartbeat for node 'sdcc-99'" in out and "test-node" in out


def test_incomplete_scan_on_another_node_is_unknown(two_envs):
    config, site, builds = two_envs
    unknown = [{"pid": 17, "user": "bob", "via": "unreadable", "path": "/proc/17/exe"}]
    other_agent(site, "sdcc-05", complete=False, unknown=unknown)
    decisions = run(site)
    for old in builds.values():
        assert decisions[old.name].reason == (
            "kept: unknown (pid 17 (/proc/17/exe) unreadable) on node sdcc-05"
        )
        assert not tombstone_file(site, old).exists()


def test_unreadable_heartbeat_blocks_deletion(two_envs):
    config, site, builds = two_envs
    run(site)
    for old in builds.values():
        age(tombstone_file(site, old), 3)
    layout.nodes_dir(site.deploy_root).joinpath("sdcc-06.json").write_text("{not json")
    decision = run(site)[builds["demo"].name]
    assert decision.action == "keep"
    assert decision.reason.startswith("kept: heartbeat of node sdcc-06 unreadable")
    assert "sdcc-06.json" in decision.reason
    assert "unreadable" in cli(config, "nodes", "list")


def test_a_heartbeat_cannot_speak_for_another_node(two_envs):
    """sdcc-07's heartbeat file holding a heartbeat that names sdcc-08 (a copy, a forgery)
    is not sdcc-07's report: it cannot say sdcc-07 reported since the tombstone with
    nothing in use. Unreadable, so deletion waits."""
    config, site, builds = two_envs
    run(site)
    for old in builds.values():
        age(tombstone_file(site, old), 3)
    path = other_agent(site, "sdcc-07")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "node": "sdcc-08"}))
    decision = run(site)[builds["demo"].name]
    assert decision.action == "keep", decision
    assert decision.reason.startswith("kept: heartbeat of node sdcc-07 unreadable")
    assert "names node 'sdcc-08'" in decision.reason


def test_heartbeat_with_a_malformed_use_blocks_deletion(two_envs):
    """A use entry that cannot be read must not be dropped (its build would look unused):
    the whole heartbeat counts as unreadable, and the reason names the entry and field."""
    config, site, builds = two_envs
    run(site)
    for old in builds.values():
        age(tombstone_file(site, old), 3)
    path = other_agent(site, "sdcc-07")
    data = json.loads(path.read_text())
    data["in_use"] = {f"demo/{builds['demo'].name}": [{"pid": "17", "user": "bob"}]}
    path.write_text(json.dumps(data))
    decision = run(site)[builds["demo"].name]
    assert decision.action == "keep"
    assert decision.reason.startswith("kept: heartbeat of node sdcc-07 unreadable")
    assert f"in_use.demo/{builds['demo'].name}[0]" in decision.reason
    assert "field 'pid'" in decision.reason


def test_heartbeat_records_this_nodes_scan(two_envs):
    config, site, builds = two_envs
    run(site)
    data = json.loads(layout.heartbeat_path(site.deploy_root, "test-node").read_text())
    beat = NodeHeartbeat.from_dict(data)
    assert beat.node == "test-node" and beat.complete is True
    assert beat.in_use == {} and beat.unknown == []
    # ages use the file's mtime (shared filesystem), not the time field inside
    report = hb.read_reports(site.deploy_root)[0]
    path = layout.heartbeat_path(site.deploy_root, "test-node")
    assert report.mtime_ns == os.stat(path).st_mtime_ns


def test_prune_cli_on_a_host_without_agent_does_not_register_a_node(two_envs):
    config, site, builds = two_envs
    cli(config, "prune")
    assert not layout.heartbeat_path(site.deploy_root, "test-node").exists()
    assert all(tombstone_file(site, old).exists() for old in builds.values())


def test_agent_prune_off_still_beats_but_changes_nothing(two_envs):
    config, site, builds = two_envs
    site = replace(site, agent=msgspec.structs.replace(site.agent, prune=False))  # prune: false
    decisions = run(site)
    old = builds["demo"]
    assert decisions[old.name].action == "keep"
    assert decisions[old.name].reason == "kept: agent.prune is off (would tombstone)"
    assert not tombstone_file(site, old).exists()
    assert layout.heartbeat_path(site.deploy_root, "test-node").exists()
    # the operator's explicit `prune` applies the policy regardless
    cli(config, "prune")
    assert tombstone_file(site, old).exists()


def test_skewed_clock_in_heartbeat_does_not_make_a_node_stale_or_fresh(two_envs):
    """Freshness is the heartbeat file's mtime, not the `time` its node's clock wrote."""
    config, site, builds = two_envs
    beat_path = other_agent(site, "sdcc-08")
    data = json.loads(beat_path.read_text())
    beat_path.write_text(json.dumps({**data, "time": "2020-01-01T00:00:00.000000Z"}))

    def status() -> str:
        rows = [line for line in cli(config, "nodes", "list").splitlines() if "sdcc-08" in line]
        assert len(rows) == 1
        return "stale" if "stale" in rows[0] else "alive" if "alive" in rows[0] else rows[0]

    assert status() == "alive"
    # and a heartbeat whose clock is in the future is stale when its file is old
    beat_path.write_text(json.dumps({**data, "time": "2099-01-01T00:00:00.000000Z"}))
    age(beat_path, 1)
    assert status() == "stale"


def test_heartbeat_dated_in_the_future_is_not_fresh_forever(two_envs):
    """A heartbeat file whose mtime lies ahead of the shared clock (touched by hand, or a
    file server whose clock jumped back) would read as age 0 until that date: it counts as
    stale, blocks deletion with its reason, and heals when the node writes again."""
    config, site, builds = two_envs
    beat = other_agent(site, "sdcc-09")
    run(site)  # tombstone both old builds
    for old in builds.values():
        age(tombstone_file(site, old), 3)
    age(beat, -365)  # a year ahead; the node itself never reports again
    decisions = run(site)
    for old in builds.values():
        assert decisions[old.name].action == "keep"
        assert decisions[old.name].reason.startswith("kept: node sdcc-09 heartbeat dated 36")
        assert "in the future" in decisions[old.name].reason
        assert old.is_dir()
    row = [line for line in cli(config, "nodes", "list").splitlines() if "sdcc-09" in line]
    assert "stale" in row[0] and "future" in row[0]
    other_agent(site, "sdcc-09")  # the node writes again: its mtime is the shared clock's
    decisions = run(site)
    assert all(decisions[old.name].action == "delete" for old in builds.values())
