"""Every store object is read safely, on both backends (issue 17, items 4 and 5).

A store anyone with write access can damage: a manifest, LTS record or rollout report
that is a FIFO, a symlink to /dev/zero or hundreds of megabytes must be named and
skipped, never hang or bloat a reader, and every other env keeps being served. A rollout
report stored under one node's name that names another node is not that node's report.

Hostile shapes are read by real CLI subprocesses with a timeout and an address-space
limit, so that today's failure (a hang, gigabytes of memory) fails the test instead of
the machine.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.agent import T0, commit_fake, write_site
from support.cli import run_cli
from support.store import commit_to, fake_build, s3_site

from nsls2_artifacts import layout
from nsls2_artifacts.fsutil import MANIFEST_LIMIT, RECORD_LIMIT
from nsls2_artifacts.records import isoformat
from nsls2_artifacts.rollout import build_rollout, read_nodes
from nsls2_artifacts.store import FilesystemStore, Store, open_store
from nsls2_artifacts.store.interface import NODE_REPORT_LIMIT
from nsls2_artifacts.store.s3 import S3Store

MEMORY_CAP = 2 << 30  # address space of a CLI reading a hostile store: /dev/zero fills it


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with a timeout (a FIFO must not hang it) and an address-space cap."""
    return run_cli(config, *args, check=False, timeout=120, preexec_fn=_capped)


def _report(node: str, latest: str | None = None) -> dict[str, Any]:
    envs = {"demo": {"latest": latest, "ready": [latest] if latest else []}} if latest else {}
    return {
        "node": node,
        "time": isoformat(T0),
        "version": "test",
        "pass_seconds": 0.1,
        "envs": envs,
        "store_ok": True,
    }


def test_special_files_in_a_filesystem_store_are_named_never_followed(tmp_path: Path) -> None:
    config, site = write_site(tmp_path / "site")
    good = commit_fake(site, "good")
    fifo_build = commit_fake(site, "fifo", hours=1)
    zero_build = commit_fake(site, "zero", hours=2)
    os.unlink(site.store / "fifo" / fifo_build.build_id / "manifest.json")
    os.mkfifo(site.store / "fifo" / fifo_build.build_id / "manifest.json")
    zero = site.store / "zero" / zero_build.build_id / "manifest.json"
    os.unlink(zero)
    os.symlink("/dev/zero", zero)
    (site.store / "good" / "lts").mkdir()
    os.mkfifo(site.store / "good" / "lts" / "2026-1.json")
    os.symlink("/dev/zero", site.store / "good" / "lts" / "2026-2.json")
    nodes = site.store / ".nodes"
    nodes.mkdir()
    os.mkfifo(nodes / "n1.json")
    os.symlink("/dev/zero", nodes / "n2.json")

    listed = _cli(config, "store", "list")
    assert listed.returncode == 0, listed.stderr
    assert good.build_id in listed.stdout
    verify = _cli(config, "store", "verify", "--json")
    assert verify.returncode == 1, verify.stderr
    problems = json.dumps(json.loads(verify.stdout))
    assert "a FIFO, not a regular file" in problems
    assert "a symlink, not a regular file" in problems

    # the agent serves the good env and names the bad ones
    agent = _cli(config, "agent", "--once")
    assert layout.read_ready(site.deploy_root, "good", good.build_id) is not None, agent.stderr
    assert "a FIFO" in agent.stderr and "a symlink" in agent.stderr

    store = open_store(site)
    reports = {r.node: r for r in store.node_reports()}
    assert "a FIFO" in reports["n1"].error and reports["n1"].data is None
    assert "a symlink" in reports["n2"].error and reports["n2"].data is None
    bad_lts = {b.build_id: b.reason for b in store.invalid_lts("good")}
    assert "a FIFO" in bad_lts["lts/2026-1"] and "a symlink" in bad_lts["lts/2026-2"]


def test_publish_lock_never_truncates_what_a_symlink_names(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "store")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (store.root / "demo").mkdir(parents=True)
    os.symlink(victim, store.root / "demo" / ".publish.lock")
    with (
        pytest.raises(Exception, match="a symlink, not a lock file") as caught,
        store.publish_lock("demo"),
    ):
        pass
    assert "StoreError" in type(caught.value).__name__
    assert victim.read_text() == "precious\n"


def _put(store: Store, key: str, data: bytes) -> None:
    """Write a store object behind the store's back (a bad sync, a vandal, a bug)."""
    if isinstance(store, FilesystemStore):
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    assert isinstance(store, S3Store)
    store.client.put_object(Bucket=store.bucket, Key=store.prefix + key, Body=data)
    store._listing = None  # the next call lists again, as after relist_seconds


def _padded(data: dict[str, Any], size: int) -> bytes:
    """`data` as valid JSON of at least `size` bytes (padding in an extra field)."""
    return json.dumps({**data, "padding": "x" * size}).encode()


def test_oversized_objects_are_refused_unread_and_named(store: Store) -> None:
    good = fake_build(store, "demo", 2, b"good")
    big = fake_build(store, "demo", 1, b"big")
    manifest = store.manifest("demo", big).to_dict()
    _put(store, f"demo/{big}/manifest.json", _padded(manifest, MANIFEST_LIMIT))
    _put(store, "demo/lts/2026-1.json", _padded({"build_id": good, "promoted": "x"}, RECORD_LIMIT))
    _put(store, ".nodes/n1.json", _padded(_report("n1"), NODE_REPORT_LIMIT))

    assert [m.build_id for m in store.builds("demo")] == [good]
    (invalid,) = store.invalid_builds("demo")
    assert invalid.build_id == big and "over the" in invalid.reason
    assert "manifest.json" in invalid.reason
    (lts,) = store.invalid_lts("demo")
    assert "2026-1.json" in lts.reason and "over the" in lts.reason
    (report,) = store.node_reports()
    assert report.data is None and "n1.json" in report.error and "over the" in report.error


def test_deeply_nested_json_in_the_store_is_invalid_not_a_crash(store: Store) -> None:
    good = fake_build(store, "demo", 2, b"good")
    deep = fake_build(store, "demo", 1, b"deep")
    nested = b"[" * 200_000 + b"]" * 200_000
    _put(store, f"demo/{deep}/manifest.json", nested)
    _put(store, ".nodes/n1.json", nested)
    assert [m.build_id for m in store.builds("demo")] == [good]
    (invalid,) = store.invalid_builds("demo")
    assert "nested too deeply" in invalid.reason
    (report,) = store.node_reports()
    assert report.data is None and "nested too deeply" in report.error


def test_a_report_cannot_speak_for_another_node(store: Store) -> None:
    """n1's report says it is n2's and serves the new build: n2's own report (still on the
    old build) stands, n1 is unreadable, and staff are not told "restart now"."""
    old, new = "2026.01.01T000000Z-00000001", "2026.01.02T000000Z-00000002"
    if isinstance(store, FilesystemStore):
        store.root.mkdir(parents=True)
    store.put_node_report("n2", _report("n2", old))
    store.put_node_report("n1", _report("n2", new))  # stored as n1, naming n2
    nodes, error = read_nodes(store, ttl_seconds=3600, now=None)
    assert error == ""
    seen = {n.node: n for n in nodes}
    assert seen["n1"].liveness == "unreadable" and seen["n1"].report is None
    assert "names node 'n2'" in seen["n1"].error
    assert seen["n2"].report is not None and seen["n2"].env("demo").latest == old
    rollout = build_rollout(nodes, "demo", new, "NSLS-II demo")
    assert not rollout.complete and "restart" not in rollout.headline.lower()


def test_agent_serves_every_other_env_while_one_manifest_is_huge_on_s3(
    tmp_path: Path, s3_server: Any
) -> None:
    config, site = s3_site(tmp_path / "site", s3_server)
    store = open_store(site)
    assert isinstance(store, S3Store)
    good = commit_to(store, tmp_path / "scratch", "a", env="good")
    big = commit_to(store, tmp_path / "scratch", "b", hours=1, env="big")
    _put(store, f"big/{big.build_id}/manifest.json", _padded(big.to_dict(), MANIFEST_LIMIT))

    agent = _cli(config, "agent", "--once")
    assert layout.read_ready(site.deploy_root, "good", good.build_id) is not None, agent.stderr
    assert layout.read_ready(site.deploy_root, "big", big.build_id) is None
    assert "over the" in agent.stderr
