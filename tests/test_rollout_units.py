"""The rollout view and the users' message from hand-made node reports (no I/O): what
the hook computes from whatever the agents put in the store."""

from __future__ import annotations

from datetime import UTC, datetime

from support.agent import T0

from nsls2_artifacts.records import ArtifactInfo, BuildManifest, LockInfo, PackageRef, isoformat
from nsls2_artifacts.rollout import (
    EnvRollout,
    NodeRollout,
    NodeSeen,
    build_failures,
    build_rollout,
    missing_modules,
    served_latest,
    user_message,
)

OLD, NEW = "2026.11.30T020000Z-aaaaaaaa", "2026.12.01T020000Z-bbbbbbbb"


def seen(node: str, liveness: str = "live", **env) -> NodeSeen:
    report = NodeRollout(node, "t", "0", 1.0, {"base": EnvRollout(**env)})
    return NodeSeen(node, liveness, datetime.now(UTC), report)


def test_eight_nodes_one_failing_then_stale_and_retired_do_not_block() -> None:
    nodes = [seen(f"sdcc-0{i}", latest=NEW, ready=(OLD, NEW)) for i in range(1, 8)]
    failing = seen("sdcc-08", latest=NEW, failed={NEW: "smoke import failed: No module x"})
    view = build_rollout([*nodes, failing], "base", NEW, "NSLS-II base")
    assert view.summary == (
        "deployed on 7 of 8 live nodes (sdcc-08 failed: smoke import failed: No module x)"
    )
    assert not view.complete and [n.node for n in view.failed] == ["sdcc-08"]
    others = [seen("sdcc-09", "stale", latest=OLD), seen("sdcc-10", "retired", latest=OLD)]
    view = build_rollout([*nodes, *others], "base", NEW, "NSLS-II base")
    assert view.complete and view.headline == "Users can restart NSLS-II base (latest) now"
    assert view.summary.endswith("not counted: sdcc-09 stale, sdcc-10 retired")
    assert served_latest([*nodes, *others], "base") == (NEW, "on 7 live nodes")


def test_waiting_nodes_mixed_latest_and_no_reports() -> None:
    view = build_rollout([], "base", NEW, "NSLS-II base")
    assert not view.complete and "no live node has reported" in view.summary
    nodes = [seen("a", latest=NEW), seen("b", latest=OLD, ready=(OLD,))]
    view = build_rollout(nodes, "base", NEW, "NSLS-II base")
    assert view.summary == "deployed on 1 of 2 live nodes (waiting for b)"
    assert served_latest(nodes, "base") == (None, f"mixed: {OLD} on b; {NEW} on a")
    # an older build every live node has moved past is superseded, not failed
    view = build_rollout(nodes[:1], "base", OLD, "NSLS-II base")
    assert view.superseded_by == NEW and not view.failed


def test_user_message_is_one_paragraph_from_the_diff() -> None:
    build = BuildManifest(
        name="base", build_id=NEW, created=isoformat(T0), platform="linux-64",
        display_name="NSLS-II base", smoke=(), artifact=ArtifactInfo("a", "0", 1, "tar.zst"),
        lock=LockInfo("l", "0"), packages=(),
    )  # fmt: skip
    text = user_message(
        "NSLS-II base (latest)",
        build,
        added=[PackageRef("numpy", "2.1.0", "0", "c")],
        removed=[PackageRef("six", "1.16.0", "0", "c")],
        changed=[("databroker", "2.0.0", "2.0.1")],
    )
    assert "\n" not in text
    assert "databroker 2.0.0 → 2.0.1, numpy 2.1.0 (new), six (removed)" in text
    assert "restart your kernel" in text and "NSLS-II base (latest)" in text
    many = [(f"p{i}", "1", "2") for i in range(12)]
    assert "and 4 more" in user_message("K", build, [], [], many)


def test_a_build_that_failed_says_where_users_stay_and_what_is_missing() -> None:
    reason = (
        "smoke failed on a: smoke failed (exit 1): x | ModuleNotFoundError: No module named 'nope'"
    )
    nodes = [seen("a", latest=OLD, ready=(OLD,), failed={NEW: reason}), seen("b", latest=OLD)]
    view = build_rollout(nodes, "base", NEW, "NSLS-II base")
    assert view.headline == f"Failed on 1 node — users stay on {OLD}"
    assert view.missing == ["nope"] and view.stay_on == [OLD]
    assert "Rolling out" not in view.headline
    # a node whose latest is the failing build (its own import check failed) is not
    # "staying" anywhere: its users start the build and it fails there
    checked = [seen("gpu", latest=NEW, failed={NEW: "No module named 'cupy'"})]
    view = build_rollout(checked, "base", NEW, "NSLS-II base")
    assert view.headline == "Failed on 1 node — NSLS-II base (latest) fails there"
    stale = seen("c", "stale", failed={NEW: "x"})
    retired = seen("d", "retired", failed={NEW: "y"})
    assert build_failures([*nodes, stale, retired], "base", NEW) == {"a": reason, "c": "x"}
    assert build_failures(nodes, "base", OLD) == {}
    assert missing_modules(["No module named 'a.b'", "No module named 'a.b'", "zzz"]) == ["a.b"]


def test_nobody_serves_says_why() -> None:
    assert "no agent has reported to this store yet" in served_latest([], "base")[1]
    stale = [seen("a", "stale", latest=OLD)]
    assert served_latest(stale, "base")[1].startswith("no live node: 1 node known")
    other_env = [NodeSeen("a", "live", datetime.now(UTC), NodeRollout("a", "t", "0", 1.0, {}))]
    assert served_latest(other_env, "base")[1].startswith("not deployed yet: none of the 1")


def test_a_traceback_reason_is_summarised_by_its_last_line() -> None:
    reason = (
        f"smoke failed on a: {NEW}: smoke failed (exit 1): Traceback (most recent call last):"
        ' | File "<string>", line 2, in <module> | ' + "x" * 200
        + " | ModuleNotFoundError: No module named 'nope'"
    )  # fmt: skip
    view = build_rollout([seen("a", latest=OLD, failed={NEW: reason})], "base", NEW, "B")
    assert view.summary == (
        "deployed on 0 of 1 live node (a failed: smoke failed on a: "
        "ModuleNotFoundError: No module named 'nope')"
    )
    assert view.nodes[0].detail == reason  # the table keeps all of it
