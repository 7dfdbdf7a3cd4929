"""Rollout: which nodes serve which build, from the reports every agent puts in the store.

Each agent pass writes one `NodeRollout` through `NodeReports.put_node_report` (agent/report.py);
the hook reads them all back (`read_nodes`) and asks `build_rollout` how far one build
got and whether staff can tell users to restart, or `served_latest` what the live nodes
serve. The store is the only channel the build host and the nodes share, so this works
on every store backend. Nothing here touches the deploy root.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from .errors import StoreError
from .records import BuildManifest, PackageRef, RecordError, isoformat, utcnow
from .schema import Record
from .store import NodeReports

REPORT_SCHEMA = 1


# -- what one node reports -----------------------------------------------------------------


class EnvRollout(Record, frozen=True):
    """One env on one node: where `latest` points, what is ready, what failed or was skipped."""

    RECORD: ClassVar[str] = "rollout report env"
    MESSAGES: ClassVar[dict[str, str]] = {
        "latest": "expected a build id or null",
        "ready": "expected a list of build ids",
        "failed": "expected build id -> text",
        "superseded": "expected build id -> text",
    }

    latest: str | None = None
    ready: tuple[str, ...] = ()
    failed: dict[str, str] = {}  # build -> reason
    superseded: dict[str, str] = {}  # build -> the newer build deployed


class NodeRollout(Record, frozen=True):
    """`NodeReports.put_node_report(node, ...)`: one agent's view after its last pass."""

    RECORD: ClassVar[str] = "rollout report"
    MESSAGES: ClassVar[dict[str, str]] = EnvRollout.MESSAGES

    node: str
    time: str  # the node's clock, informational; liveness uses the store's time
    version: str
    pass_seconds: float
    envs: dict[str, EnvRollout]
    store_ok: bool = True
    retired: str | None = None  # set by `nodes retire`; the node's next report clears it
    schema: int = REPORT_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["envs"] = dict(sorted(data["envs"].items()))
        return data


# -- what the hook sees of every node ------------------------------------------------------


@dataclass(frozen=True)
class NodeSeen:
    """A node's last report and whether it counts: live, stale, retired or unreadable."""

    node: str
    liveness: str  # live | stale | retired | unreadable
    written: datetime
    report: NodeRollout | None
    error: str = ""

    @property
    def live(self) -> bool:
        return self.liveness == "live"

    def env(self, env: str) -> EnvRollout | None:
        return self.report.envs.get(env) if self.report else None


def read_nodes(
    store: NodeReports, ttl_seconds: float, now: datetime | None = None
) -> tuple[list[NodeSeen], str]:
    """Every node's report with its liveness, and a store error ("" when the store answered).

    A node is stale when its report is older than `ttl_seconds` (agent.node_ttl_seconds)
    by the store's clock; retired when `nodes retire` marked it and it has not reported
    since."""
    now = now or utcnow()
    try:
        stored = store.node_reports()
    except StoreError as exc:
        return [], str(exc)
    seen = []
    for item in stored:
        report, error = None, item.error
        if item.data is not None:
            try:
                report = NodeRollout.from_dict(item.data)
            except RecordError as exc:
                error = f"report of {item.node}: {exc}"
        if report is None:
            seen.append(NodeSeen(item.node, "unreadable", item.written, None, error))
        elif report.retired:
            seen.append(NodeSeen(item.node, "retired", item.written, report))
        elif (now - item.written).total_seconds() > ttl_seconds:
            seen.append(NodeSeen(item.node, "stale", item.written, report))
        else:
            seen.append(NodeSeen(item.node, "live", item.written, report))
    return seen, ""


def retire_node(store: NodeReports, node: str) -> bool:
    """Mark NODE's report retired (what `nodes retire` does in the store), so it stops
    counting for "users can restart now"; False when NODE never reported. Its agent's
    next report (if it still runs) clears the mark, as its next heartbeat does."""
    for item in store.node_reports():
        if item.node == node:
            data = dict(item.data or {"node": node, "envs": {}})
            store.put_node_report(node, {**data, "retired": isoformat(utcnow())})
            return True
    return False


# -- one build's rollout -------------------------------------------------------------------


def kernel_label(display_name: str) -> str:
    """What users see in the launcher for an env's rolling kernel: "NSLS-II base (latest)".

    From nsls2.yaml's display_name (carried in the build manifest), so the hook names the
    kernel the way staff wrote it, whatever date or label the kernelspec adds."""
    return f"{display_name} (latest)"


@dataclass(frozen=True)
class NodeStatus:
    """Where one node is with one build."""

    node: str
    liveness: str  # live | stale | retired | unreadable
    status: str  # serving | ready | waiting | failed | superseded | unknown
    detail: str
    reported: str  # when the store received the node's last report (ISO)


@dataclass(frozen=True)
class BuildRollout:
    """How far ENV/BUILD_ID got across the nodes, and whether users can restart now."""

    env: str
    build_id: str
    kernel: str
    nodes: list[NodeStatus]
    live: int
    serving: int
    complete: bool
    superseded_by: str | None
    summary: str
    headline: str
    store_error: str = ""
    # what the live nodes it failed on serve instead (users there keep that build)
    stay_on: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # modules the failures name

    @property
    def failed(self) -> list[NodeStatus]:
        return [n for n in self.nodes if n.liveness == "live" and n.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = [asdict(n) for n in self.failed]
        return data


def _node_status(seen: NodeSeen, env: str, build_id: str) -> NodeStatus:
    reported = isoformat(seen.written)
    state = seen.env(env)
    if seen.report is None:
        return NodeStatus(seen.node, seen.liveness, "unknown", seen.error, reported)
    if state is None:
        return NodeStatus(seen.node, seen.liveness, "waiting", f"no {env} here yet", reported)
    if build_id in state.failed:
        return NodeStatus(seen.node, seen.liveness, "failed", state.failed[build_id], reported)
    if state.latest == build_id:
        return NodeStatus(seen.node, seen.liveness, "serving", "latest points here", reported)
    if build_id in state.superseded:
        newer = state.superseded[build_id]
        return NodeStatus(
            seen.node, seen.liveness, "superseded", f"skipped: {newer} is newer", reported
        )
    if build_id in state.ready:
        return NodeStatus(
            seen.node, seen.liveness, "ready", f"ready; latest is {state.latest}", reported
        )
    return NodeStatus(seen.node, seen.liveness, "waiting", "not deployed yet", reported)


def _short(reason: str, limit: int = 160) -> str:
    reason = " ".join(reason_gist(reason).split())
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def reason_gist(reason: str) -> str:
    """A failed stage's reason carries the output's last lines joined by " | " (a
    traceback): keep what failed and the last line, which names the error
    ("smoke failed on n1: ModuleNotFoundError: No module named 'x'")."""
    if " | " not in reason:
        return reason
    return f"{reason.split(':', 1)[0]}: {reason.rsplit(' | ', 1)[-1]}"


def build_rollout(
    nodes: list[NodeSeen], env: str, build_id: str, display_name: str, store_error: str = ""
) -> BuildRollout:
    """ENV/BUILD_ID across `nodes`: complete when every live node serves it as latest.

    Stale, retired and unreadable nodes are listed but never block completion."""
    statuses = [_node_status(seen, env, build_id) for seen in nodes]
    live = [s for s in statuses if s.liveness == "live"]
    serving = [s for s in live if s.status == "serving"]
    complete = bool(live) and len(serving) == len(live)
    served = {
        state.latest
        for seen in nodes
        if seen.live and (state := seen.env(env)) is not None and state.latest
    }
    # build ids sort by time: every live node on a newer build means this one is past
    superseded_by = (
        max(served) if served and not complete and all(b > build_id for b in served) else None
    )
    kernel = kernel_label(display_name)
    summary = _summary(statuses, live, serving, superseded_by, store_error)
    failed = [s for s in live if s.status == "failed"]
    stay_on = _stay_on(nodes, env, build_id, {s.node for s in failed})
    if complete:
        headline = f"Users can restart {kernel} now"
    elif superseded_by:
        headline = f"Superseded: live nodes serve {superseded_by}"
    elif failed:
        count = f"{len(failed)} node{'s' * (len(failed) != 1)}"
        stay = f"users stay on {', '.join(stay_on)}" if stay_on else f"{kernel} fails there"
        headline = f"Failed on {count} — {stay}"
    else:
        headline = f"Rolling out: not yet — {kernel} still starts the previous build on some nodes"
    return BuildRollout(
        env=env,
        build_id=build_id,
        kernel=kernel,
        nodes=statuses,
        live=len(live),
        serving=len(serving),
        complete=complete,
        superseded_by=superseded_by,
        summary=summary,
        headline=headline,
        store_error=store_error,
        stay_on=stay_on,
        missing=missing_modules([s.detail for s in failed]),
    )


def _stay_on(nodes: list[NodeSeen], env: str, build_id: str, failed: set[str]) -> list[str]:
    """The builds the nodes that failed BUILD_ID still serve as latest (not BUILD_ID)."""
    return sorted(
        {
            state.latest
            for seen in nodes
            if seen.node in failed and (state := seen.env(env)) is not None and state.latest
        }
        - {build_id}
    )


_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")


def missing_modules(reasons: list[str]) -> list[str]:
    """The modules failure reasons say are missing (`No module named 'cupy'`), in order."""
    found: list[str] = []
    for reason in reasons:
        for name in _MISSING_MODULE.findall(reason):
            if name not in found:
                found.append(name)
    return found


def build_failures(nodes: list[NodeSeen], env: str, build_id: str) -> dict[str, str]:
    """Node -> reason, for every node whose report says ENV/BUILD_ID failed there
    (quarantined, or failing that node's import check). Stale nodes count (their last word
    on the build was a failure); retired and unreadable ones do not."""
    return {
        seen.node: state.failed[build_id]
        for seen in nodes
        if seen.liveness in ("live", "stale")
        and (state := seen.env(env)) is not None
        and build_id in state.failed
    }


def _summary(
    statuses: list[NodeStatus],
    live: list[NodeStatus],
    serving: list[NodeStatus],
    superseded_by: str | None,
    store_error: str,
) -> str:
    if store_error:
        return f"node reports unavailable: {store_error}"
    if not live:
        return "no live node has reported (are the agents running?)"
    text = f"deployed on {len(serving)} of {len(live)} live node{'s' * (len(live) != 1)}"
    notes = [f"{s.node} failed: {_short(s.detail)}" for s in live if s.status == "failed"]
    notes += [f"{s.node} skipped it ({s.detail})" for s in live if s.status == "superseded"]
    waiting = [s.node for s in live if s.status in ("waiting", "ready", "unknown")]
    if waiting and not superseded_by:
        notes.append(f"waiting for {', '.join(waiting)}")
    if notes:
        text += f" ({'; '.join(notes)})"
    others = [f"{s.node} {s.liveness}" for s in statuses if s.liveness != "live"]
    if others:
        text += f"; not counted: {', '.join(others)}"
    return text


def served_latest(nodes: list[NodeSeen], env: str) -> tuple[str | None, str]:
    """(the build every live node serves as ENV's latest, or None; a short explanation)."""
    served: dict[str, list[str]] = {}
    for seen in nodes:
        state = seen.env(env)
        if seen.live and state is not None:
            served.setdefault(state.latest or "-", []).append(seen.node)
    if not served:
        return None, _why_nobody_serves(nodes)
    if len(served) == 1:
        build = next(iter(served))
        count = len(served[build])
        return (None if build == "-" else build), f"on {count} live node{'s' * (count != 1)}"
    parts = [f"{build} on {', '.join(names)}" for build, names in sorted(served.items())]
    return None, "mixed: " + "; ".join(parts)


def _why_nobody_serves(nodes: list[NodeSeen]) -> str:
    """Why no live node reports an env: no agent yet, every agent silent, or not deployed."""
    if not nodes:
        return "no agent has reported to this store yet (is `nsls2-artifacts agent` running?)"
    live = sum(seen.live for seen in nodes)
    if not live:
        kinds = sorted({seen.liveness for seen in nodes})
        return (
            f"no live node: {len(nodes)} node{'s' * (len(nodes) != 1)} known, none reported "
            f"within agent.node_ttl_seconds ({', '.join(kinds)})"
        )
    return (
        f"not deployed yet: none of the {live} live node{'s' * (live != 1)} has this env "
        "(the agents deploy it on their next pass)"
    )


# -- what to tell users --------------------------------------------------------------------


def _package_text(package: PackageRef) -> str:
    return f"{package.name} {package.version}"


def user_message(
    kernel: str,
    build: BuildManifest,
    added: list[PackageRef],
    removed: list[PackageRef],
    changed: list[tuple[str, str, str]],
    limit: int = 8,
    first: bool = False,
) -> str:
    """One ready-to-send paragraph: what changed (from the package diff), then "restart"."""
    items = [f"{name} {old} → {new}" for name, old, new in changed]
    items += [f"{_package_text(p)} (new)" for p in added]
    items += [f"{p.name} (removed)" for p in removed]
    if first:
        what = f"It is the first build of this environment ({len(added)} packages)."
    elif not items:
        what = "It is a rebuild with the same packages."
    else:
        shown = ", ".join(items[:limit])
        more = f" and {len(items) - limit} more" if len(items) > limit else ""
        what = f"What changed: {shown}{more}."
    published = build.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"The {kernel} kernel now runs a new build ({build.build_id}, published {published}). "
        f"{what} To use it, restart your kernel (Kernel → Restart Kernel) in any notebook "
        f"running {kernel}; kernels started from now on get it automatically."
    )
