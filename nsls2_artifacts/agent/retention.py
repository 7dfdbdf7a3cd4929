"""Retention: mark-and-sweep deletion of deployed builds that nothing uses any more.

The sync agent's pass calls `run_on` with the pass's own snapshot (`observe.Observed`, as
its flips left it) under its apply lock; `nsls2-artifacts prune` calls `run_pass`, which
takes the lock and the snapshot itself (`--dry-run` plans without applying). One pass: scan
this node's /proc for every deployed build, write this node's heartbeat, then plan → apply:

  roots       `latest` target, rollback hold, LTS builds younger than `lts_years`, the
              newest `keep_latest` ready builds, builds younger than `grace_days`, and
              builds in use on any node (this scan + every other node's heartbeat);
  candidates  everything else: first a tombstone (`state/tombstones/ENV/BUILD_ID.json`)
              and its kernelspecs removed; deleted on a later pass only when the
              tombstone is older than the grace period, every live node has reported
              since, nobody reports it in use, nothing is unknown and no node is stale.

Times that decide deletion are file mtimes on the shared filesystem (tombstone,
heartbeats, a probe file), never this node's clock, so clock skew cannot delete early.
Deleting renames `envs/ENV/BUILD_ID` into `state/trash/` (never half-visible as a build)
and writes `state/deleted/ENV/BUILD_ID.json` so the agent does not deploy it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .. import layout
from ..config import RetentionPolicy, SiteConfig
from ..errors import ManifestError
from ..fsutil import LockBusy, atomic_write_json, fsync_dir
from ..manifest import env_retention
from ..procscan import scan
from ..records import (
    DeletedMarker,
    LtsRecord,
    NodeHeartbeat,
    ProcessUse,
    ReadyRecord,
    RecordError,
    RetentionDecision,
    Tombstone,
    build_id_time,
    isoformat,
    parse_time,
    utcnow,
)
from ..store import Store
from . import heartbeat as hb
from . import kernels, latest, trash
from .diskuse import disk_freed
from .locks import apply_lock, build_lock
from .log import event
from .observe import Observed, observe

DAY = 86400.0


# -- looking ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    """One directory `envs/ENV/BUILD_ID` (ready or not) and when it was built."""

    env: str
    build_id: str
    path: Path
    created: datetime
    ready: bool

    @property
    def key(self) -> str:
        return f"{self.env}/{self.build_id}"


@dataclass
class EnvView:
    """What retention knows about one environment."""

    env: str
    policy: RetentionPolicy
    builds: list[Build]
    latest: str | None
    hold: str | None
    lts: list[LtsRecord]
    tombstones: dict[str, int]
    deleted: set[str]
    problem: str | None = None  # set: nothing in this env may be tombstoned or deleted


@dataclass
class Cluster:
    """Every node's view: uses, unreadable processes, stale or broken heartbeats."""

    node: str
    now_ns: int
    ttl_seconds: float
    in_use: dict[str, list[tuple[str, ProcessUse]]] = field(default_factory=dict)
    unknown: list[tuple[str, ProcessUse | None]] = field(default_factory=list)
    stale: list[hb.NodeReport] = field(default_factory=list)
    broken: list[hb.NodeReport] = field(default_factory=list)
    reported: dict[str, int] = field(default_factory=dict)  # live node -> heartbeat mtime

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ns / 1e9, UTC)


def env_policy(site: SiteConfig, env: str) -> RetentionPolicy:
    """The site policy with `retention:` overrides from manifests/ENV/nsls2.yaml, if any.

    Raises ManifestError naming the file and key when the override is malformed: the caller
    then keeps everything in that env rather than guessing a policy.
    """
    return env_retention(site.manifests, env, site.retention)[0]


def _created(build_id: str, ready: ReadyRecord | None, store_created: str | None) -> datetime:
    """Build time: ready.json, else the store manifest, else the build id's own timestamp."""
    for text in (ready.created if ready else None, store_created):
        if text:
            with contextlib.suppress(ValueError):
                return parse_time(text)
    # retention only sees directories named by build ids (layout.build_dirs), so this parses
    return build_id_time(build_id) or datetime.min.replace(tzinfo=UTC)


def env_view(site: SiteConfig, obs: Observed, env: str) -> EnvView:
    """One env's builds, roots and tombstones from the pass's snapshot; anything that
    makes deleting unsafe becomes `problem`."""
    problem = None
    try:
        policy = env_policy(site, env)
    except ManifestError as exc:
        policy, problem = site.retention, f"bad retention override: {exc}"
    if env in obs.hold_errors:  # it may pin any build: delete nothing here until it is fixed
        problem = problem or f"unreadable rollback hold: {obs.hold_errors[env]}"
    hold = obs.holds.get(env)
    dirs = obs.dirs.get(env, {})
    manifests = obs.manifests.get(env, [])
    if not obs.store_ok:
        problem = problem or f"store lists no builds for {env} (unreachable: {obs.store_error})"
    elif not manifests and dirs:
        # docs/design.md rule 2: an empty listing is never a reason to delete anything
        problem = problem or f"store lists no builds for {env} (unreachable or empty?)"
    elif bad_lts := obs.invalid_lts.get(env):
        # an LTS record the store could not parse would make its build look deletable
        problem = problem or bad_lts[0].reason
    store_created = {m.build_id: m.created for m in manifests}
    builds = [
        Build(
            env,
            build_id,
            layout.build_dir(site.deploy_root, env, build_id),
            _created(build_id, ready, store_created.get(build_id)),
            ready is not None,
        )
        for build_id, ready in sorted(dirs.items())
    ]
    return EnvView(
        env=env,
        policy=policy,
        builds=builds,
        latest=obs.current.get(env),
        hold=hold.build_id if hold else None,
        lts=obs.lts.get(env, []),
        tombstones=obs.tombstoned.get(env, {}),
        deleted=obs.deleted.get(env, set()),
        problem=problem,
    )


def gather_cluster(
    deploy_root: Path,
    node: str,
    now_ns: int,
    ttl_seconds: float,
    own: NodeHeartbeat,
) -> Cluster:
    """Merge this node's fresh heartbeat with every other node's last one."""
    cluster = Cluster(node=node, now_ns=now_ns, ttl_seconds=ttl_seconds)
    others = [r for r in hb.read_reports(deploy_root) if r.node != node]
    for report in [hb.NodeReport(node, now_ns, own), *others]:
        if report.stale(now_ns, ttl_seconds):
            cluster.stale.append(report)
        elif report.heartbeat is None:
            cluster.broken.append(report)
        else:
            cluster.reported[report.node] = report.mtime_ns
        beat = report.heartbeat
        if beat is None:
            continue
        # a stale node's last uses still count: being conservative costs only disk space
        for key, uses in beat.in_use.items():
            cluster.in_use.setdefault(key, []).extend((report.node, use) for use in uses)
        if not report.stale(now_ns, ttl_seconds):
            unknown: list[ProcessUse | None] = list(beat.unknown)
            if not beat.complete and not unknown:
                unknown = [None]
            cluster.unknown.extend((report.node, u) for u in unknown)
    return cluster


# -- planning -----------------------------------------------------------------------------------


def _use_text(node: str, use: ProcessUse) -> str:
    return f"pid {use.pid} ({use.user}) on node {node} via {use.via}"


def _unknown_text(node: str, use: ProcessUse | None) -> str:
    if use is None:
        what = "scan incomplete"
    elif use.via == "hidepid":
        what = f"{use.path} hides other users' processes"
    else:  # the path says which: /proc/PID/exe (another user's), /proc/PID/mountinfo...
        what = f"pid {use.pid} ({use.path}) unreadable"
    return f"kept: unknown ({what}) on node {node}"


def root_reason(build: Build, view: EnvView, cluster: Cluster, newest: list[str]) -> str | None:
    """Why `build` is a root (kept unconditionally), or None for a candidate."""
    if build.build_id == view.latest:
        return "kept: latest"
    if build.build_id == view.hold:
        return "kept: rollback hold"
    for record in view.lts:
        if record.build_id != build.build_id:
            continue
        with contextlib.suppress(ValueError):
            promoted = parse_time(record.promoted)
            if cluster.now - promoted < timedelta(days=365.25 * view.policy.lts_years):
                return f"kept: lts {record.label} (promoted {promoted:%Y-%m-%d})"
    uses = cluster.in_use.get(build.key)
    if uses:
        mine = sorted(uses, key=lambda u: (u[0] != cluster.node, u[0], u[1].pid))
        more = f" (+{len(uses) - 1} more)" if len(uses) > 1 else ""
        return f"kept: in use by {_use_text(*mine[0])}{more}"
    if build.build_id in newest:
        rank = newest.index(build.build_id) + 1
        return f"kept: newest {view.policy.keep_latest} (#{rank})"
    age = (cluster.now - build.created).total_seconds()
    grace = view.policy.grace_days * DAY
    if age < grace:
        return f"kept: younger than grace {hb.span(grace)} (age {hb.span(age)})"
    return None


def decide(build: Build, view: EnvView, cluster: Cluster, newest: list[str]) -> RetentionDecision:
    """The decision for one deployed build (pure: reads only the views it is given)."""

    def verdict(action: str, reason: str) -> RetentionDecision:
        return RetentionDecision(build.env, build.build_id, action, reason)

    tombstone = view.tombstones.get(build.build_id)
    reason = root_reason(build, view, cluster, newest)
    if reason:
        if tombstone is not None:
            return verdict("untombstone", f"{reason} (tombstone removed)")
        return verdict("keep", reason)
    if cluster.unknown:  # a process we could not read may be using it: do not even tombstone
        return verdict("keep", _unknown_text(*cluster.unknown[0]))
    if view.problem:
        return verdict("keep", f"kept: {view.problem}")
    if tombstone is None:
        return verdict("tombstone", "tombstoned")
    age = (cluster.now_ns - tombstone) / 1e9
    grace = view.policy.grace_days * DAY
    if age < grace:
        return verdict("wait", f"waiting: tombstone age {hb.span(age)} < grace {hb.span(grace)}")
    if cluster.stale:
        report = cluster.stale[0]
        return verdict("keep", f"kept: node {report.node} {report.stale_reason(cluster.now_ns)}")
    if cluster.broken:
        report = cluster.broken[0]
        return verdict("keep", f"kept: heartbeat of node {report.node} unreadable ({report.error})")
    late = sorted(node for node, mtime in cluster.reported.items() if mtime <= tombstone)
    if late:
        return verdict("wait", f"waiting: node {late[0]} has not reported since the tombstone")
    return verdict("delete", "deleted")


def plan_env(view: EnvView, cluster: Cluster) -> list[RetentionDecision]:
    """Decisions for every build of one env, plus tombstones left without a build."""
    ready = sorted((b for b in view.builds if b.ready), key=lambda b: (b.created, b.build_id))
    newest = [b.build_id for b in reversed(ready)][: view.policy.keep_latest]
    decisions = [decide(b, view, cluster, newest) for b in view.builds]
    present = {b.build_id for b in view.builds}
    for build_id in sorted(set(view.tombstones) - present):
        # the agent was killed after moving the build to trash: finish the delete
        decisions.append(
            RetentionDecision(
                view.env, build_id, "finish", "deleted (finished an interrupted delete)"
            )
        )
    for build_id in sorted(view.deleted - present):
        reason = _revived(build_id, view, cluster)
        if reason:
            decisions.append(RetentionDecision(view.env, build_id, "revive", reason))
    return decisions


def _revived(build_id: str, view: EnvView, cluster: Cluster) -> str | None:
    """A deleted build that is a root again (rolled back to, promoted) may be redeployed."""
    ghost = Build(view.env, build_id, Path(), cluster.now, False)
    if build_id in (view.latest, view.hold) or any(r.build_id == build_id for r in view.lts):
        reason = root_reason(ghost, view, cluster, [])
        if reason and not reason.startswith("kept: younger"):
            return f"{reason} (was deleted; the agent may deploy it again)"
    return None


def _pinned(deploy_root: Path, env: str, build_id: str) -> bool:
    """Whether latest or the rollback hold names the build now (an unreadable hold may)."""
    if latest.current_latest(deploy_root, env) == build_id:
        return True
    try:
        hold = latest.read_hold(deploy_root, env)
    except RecordError:
        return True
    return hold is not None and hold.build_id == build_id


# -- applying -----------------------------------------------------------------------------------


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
        fsync_dir(path.parent)


def _tombstone(site: SiteConfig, decision: RetentionDecision, log: logging.Logger) -> None:
    root = site.deploy_root
    path = layout.tombstone_path(root, decision.env, decision.build_id)
    if not path.exists():  # never rewrite: the file's mtime is the tombstone's time
        # `time` is informational; the mtime is what counts
        tombstone = Tombstone(decision.env, decision.build_id, site.agent.node, isoformat(utcnow()))
        atomic_write_json(path, tombstone.to_dict())
    removed = kernels.remove_kernelspecs_for(root, decision.env, decision.build_id)
    event(log, "tombstoned", env=decision.env, build=decision.build_id, kernelspecs=removed)


def _delete(
    site: SiteConfig, decision: RetentionDecision, log: logging.Logger
) -> RetentionDecision:
    """Delete one build under its deploy lock: marker, kernelspecs, rename to trash, rmtree."""
    root, env, build_id = site.deploy_root, decision.env, decision.build_id
    freed = None
    try:
        with build_lock(root, env, build_id, wait=False):
            if _pinned(root, env, build_id):
                # a rollback or flip landed after we planned: it is a root again
                return RetentionDecision(env, build_id, "keep", "kept: became latest or held")
            marker = DeletedMarker(env, build_id, site.agent.node, isoformat(utcnow()))
            atomic_write_json(layout.deleted_path(root, env, build_id), marker.to_dict())
            removed = kernels.remove_kernelspecs_for(root, env, build_id)
            # atomic: the build is whole or gone, never half
            target = trash.move_to_trash(root, env, layout.build_dir(root, env, build_id))
            layout.test_pause("prune-trashed")  # test-only: a kill here leaves trash + tombstone
            _unlink(layout.tombstone_path(root, env, build_id))
            # what the deletion gives back: a file other builds link stays (one walk more
            # than the removal's; it runs in the pass's retention step, after the flips)
            if target is not None:
                freed = disk_freed([target])
                trash.remove(target)
    except LockBusy:
        return RetentionDecision(
            env, build_id, "wait", "waiting: another agent holds the build lock"
        )
    disk = {}
    if freed is not None:
        disk = {"freed_mb": round(freed.freed / 1e6, 1), "shared_files": freed.shared}
    event(log, "deleted", env=env, build=build_id, kernelspecs=removed, **disk)
    return decision


def _finish(site: SiteConfig, decision: RetentionDecision, log: logging.Logger) -> None:
    root, env, build_id = site.deploy_root, decision.env, decision.build_id
    marker = layout.deleted_path(root, env, build_id)
    if not marker.exists():
        atomic_write_json(marker, DeletedMarker(env, build_id, site.agent.node).to_dict())
    removed = kernels.remove_kernelspecs_for(root, env, build_id)
    _unlink(layout.tombstone_path(root, env, build_id))
    event(log, "delete-finished", env=env, build=build_id, kernelspecs=removed)


def apply_plan(
    site: SiteConfig, decisions: list[RetentionDecision], log: logging.Logger
) -> list[RetentionDecision]:
    """Carry out a plan; one build failing is logged and reported, never stops the others."""
    done = []
    for decision in decisions:
        try:
            if decision.action == "tombstone":
                _tombstone(site, decision, log)
            elif decision.action == "untombstone":
                _unlink(layout.tombstone_path(site.deploy_root, decision.env, decision.build_id))
            elif decision.action == "delete":
                decision = _delete(site, decision, log)
            elif decision.action == "finish":
                _finish(site, decision, log)
            elif decision.action == "revive":
                _unlink(layout.deleted_path(site.deploy_root, decision.env, decision.build_id))
        except OSError as exc:
            event(
                log,
                "retention-failed",
                logging.ERROR,
                env=decision.env,
                build=decision.build_id,
                reason=str(exc),
            )
            decision = RetentionDecision(
                decision.env, decision.build_id, "error", f"error: {decision.action} failed: {exc}"
            )
        done.append(decision)
    return done


# -- one pass -----------------------------------------------------------------------------------


def run_pass(
    site: SiteConfig,
    store: Store,
    log: logging.Logger,
    apply: bool = True,
    *,
    heartbeat: bool = True,
    enforce: bool | None = None,
) -> list[RetentionDecision]:
    """Look, then `run_on` that snapshot: what `nsls2-artifacts prune` runs on its own.

    Takes `locks.apply_lock` (when `apply`), so it must be called without holding that lock
    (POSIX locks are per process); the agent's pass calls `run_on` inside its own lock.
    """
    if not apply:
        return run_on(site, observe(site, store, log), log, apply=False, heartbeat=False)
    # serialise with flips, rollbacks and kernelspec writes of every agent on this root, so
    # a build is never deleted just after it became latest; callers must not hold it already
    with apply_lock(site.deploy_root):
        observed = observe(site, store, log)
        return run_on(site, observed, log, heartbeat=heartbeat, enforce=enforce)


_CHANGES = ("tombstone", "untombstone", "delete", "finish", "revive")


def run_on(
    site: SiteConfig,
    observed: Observed,
    log: logging.Logger,
    *,
    apply: bool = True,
    heartbeat: bool = True,
    enforce: bool | None = None,
) -> list[RetentionDecision]:
    """Scan, write this node's heartbeat (if `apply` and `heartbeat`), plan from `observed`
    (the pass's snapshot, as the pass left it), apply (if `apply`); the caller holds the
    apply lock when `apply`.

    With `apply=False` nothing on disk changes; ages are then measured with this host's
    clock instead of a probe file on the shared filesystem. `enforce` (default: the site's
    `agent.prune`) False still scans and writes the heartbeat, which other nodes need, but
    tombstones and deletes nothing.
    """
    root = site.deploy_root
    node = site.agent.node
    if enforce is None:
        enforce = site.agent.prune
    if apply and enforce:
        trash.empty(root, log)
    views = [env_view(site, observed, env) for env in observed.local_envs]
    builds = [b for view in views for b in view.builds]
    result = scan([b.path for b in builds])
    own = hb.scan_heartbeat(node, result, {str(b.path): b.key for b in builds})
    if apply and heartbeat:
        hb.write_heartbeat(root, own)
    now_ns = hb.fs_now_ns(root, node) if apply else time.time_ns()
    cluster = gather_cluster(root, node, now_ns, site.agent.node_ttl_seconds, own)
    plan = [d for view in views for d in plan_env(view, cluster)]
    event(
        log,
        "retention-scan",
        processes=result.scanned,
        ms=round(result.seconds * 1000, 1),
        complete=result.complete,
        builds=len(builds),
    )
    if not apply:
        return plan
    if not enforce:
        return [
            RetentionDecision(
                d.env, d.build_id, "keep", f"kept: agent.prune is off (would {d.action})"
            )
            if d.action in _CHANGES
            else d
            for d in plan
        ]
    return apply_plan(site, plan, log)
