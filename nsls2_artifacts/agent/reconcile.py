"""One reconcile pass: look at the store and the deploy root, plan, apply.

Called by `watch.run_daemon` (repeatedly) and `agent --once` / `--dry-run`. Desired
state = committed manifests + LTS records in the store; actual state = the deploy
root. Every step is idempotent, so a crash anywhere is repaired by the next pass. A
store listing that fails or comes back empty never removes or un-flips anything:
`latest` is chosen from builds ready here, and only LTS kernelspecs depend on the store.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import layout
from ..config import SiteConfig
from ..errors import ManifestError
from ..fsutil import atomic_write_json
from ..manifest import env_retention
from ..names import KernelNameClash, KernelNaming, Pair, assign_kernel_names
from ..records import (
    BuildManifest,
    PassRecord,
    ReadyRecord,
    RetryRecord,
    build_id_time,
    isoformat,
    parse_time,
    utcnow,
)
from ..store import InvalidBuild, Store
from . import (
    ceiling,
    deploy,
    kernels,
    latest,
    logos,
    nodecheck,
    profiles,
    report,
    retention,
    trash,
)
from .locks import apply_lock
from .log import event
from .observe import Observed, observe


@dataclass(frozen=True)
class Flip:
    env: str
    from_build: str | None
    to_build: str
    release_hold: bool = False


@dataclass
class Plan:
    """What a pass will do. `--dry-run` prints `describe()`; `apply` is safe to repeat."""

    store_ok: bool = True
    store_error: str = ""
    to_deploy: list[BuildManifest] = field(default_factory=list)
    quarantined: list[tuple[str, str, str]] = field(default_factory=list)
    waiting: list[RetryRecord] = field(default_factory=list)  # node fault, backoff running
    other_platform: list[tuple[str, str, str]] = field(default_factory=list)  # env, build, platform
    # env, build, the newer build deployed instead: not worth a deploy (never LTS builds)
    superseded: list[tuple[str, str, str]] = field(default_factory=list)
    invalid: list[InvalidBuild] = field(default_factory=list)
    to_flip: list[Flip] = field(default_factory=list)
    kernels_write: list[kernels.KernelPlan] = field(default_factory=list)
    kernels_remove: list[tuple[str, str]] = field(default_factory=list)  # (name, why)
    # kernels that get no spec: their name breaks the rules or belongs to another kernel
    kernel_clashes: list[KernelNameClash] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store_ok": self.store_ok,
            "store_error": self.store_error,
            "to_deploy": [f"{m.name}/{m.build_id}" for m in self.to_deploy],
            "quarantined": [{"env": e, "build_id": b, "reason": r} for e, b, r in self.quarantined],
            "waiting": [w.to_dict() for w in self.waiting],
            "other_platform": [
                {"env": e, "build_id": b, "platform": p} for e, b, p in self.other_platform
            ],
            "superseded": [{"env": e, "build_id": b, "newer": n} for e, b, n in self.superseded],
            "invalid": [asdict(i) for i in self.invalid],
            "to_flip": [asdict(f) for f in self.to_flip],
            "kernels_write": [k.summary() for k in self.kernels_write],
            "kernels_remove": [{"name": n, "why": w} for n, w in self.kernels_remove],
            "kernel_clashes": [asdict(c) for c in self.kernel_clashes],
        }

    def describe(self) -> str:
        lines = []
        if not self.store_ok:
            lines.append(f"store unavailable ({self.store_error}): nothing will be removed")
        lines += [f"deploy   {m.name}/{m.build_id}" for m in self.to_deploy]
        lines += [f"skip     {e}/{b} (quarantined: {r})" for e, b, r in self.quarantined]
        lines += [
            f"wait     {w.env}/{w.build_id} (node fault, retry at {w.next_try}: {w.reason})"
            for w in self.waiting
        ]
        lines += [f"skip     {e}/{b} (built for {p})" for e, b, p in self.other_platform]
        lines += [f"skip     {e}/{b} (superseded by {n})" for e, b, n in self.superseded]
        lines += [f"ignore   {i.env}/{i.build_id} ({i.reason})" for i in self.invalid]
        for f in self.to_flip:
            hold = " (rollback hold released)" if f.release_hold else ""
            lines.append(f"flip     {f.env}/latest: {f.from_build or '-'} -> {f.to_build}{hold}")
        lines += [
            f"kernel   write {k.name} -> {k.env}/{k.build_id} ({k.channel})"
            for k in self.kernels_write
        ]
        lines += [f"kernel   remove {n} ({w})" for n, w in self.kernels_remove]
        lines += [f"refuse   {c.describe()}" for c in self.kernel_clashes]
        return "\n".join(lines) or "nothing to do"


@dataclass
class PassResult:
    plan: Plan
    outcomes: list[deploy.DeployOutcome] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # the snapshot the pass ended on (as its flips left it): retention and the rollout
    # report were made from it, and `status.status_of` shows it (one look per pass)
    seen: Observed | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


# -- plan -----------------------------------------------------------------------------------


def _planned_ready(m: BuildManifest) -> ReadyRecord:
    return ReadyRecord(
        m.name, m.build_id, m.created, "(planned)", "", m.artifact.sha256, m.smoke, 0.0
    )


def make_plan(site: SiteConfig, obs: Observed, assume_ready: bool = False) -> Plan:
    """Compare desired and actual state. `assume_ready` plans as if every deploy succeeds
    (for `--dry-run`); the real pass re-observes after deploying instead."""
    plan = Plan(store_ok=obs.store_ok, store_error=obs.store_error, invalid=list(obs.invalid))
    _plan_deploys(obs, plan)
    ready = {env: list(rs) for env, rs in obs.ready.items()}
    if assume_ready:
        for m in plan.to_deploy:
            ready.setdefault(m.name, []).append(_planned_ready(m))
        for rs in ready.values():
            rs.sort(key=lambda r: (parse_time(r.created), r.build_id))
    naming = _kernel_naming(ready, obs)
    plan.kernel_clashes = naming.clashes
    wanted: dict[str, kernels.KernelPlan] = {}
    for env in sorted(ready):
        target = _plan_latest(env, ready[env], obs, plan)
        if target and (name := naming.names.get((env, None))):
            wanted[name] = _kernel_plan(site, obs, name, env, target, "latest")
        wanted.update(_wanted_lts(site, env, {r.build_id for r in ready[env]}, obs, naming))
    root = site.deploy_root
    plan.kernels_write = [  # only changes
        wanted[n]
        for n in sorted(wanted)
        if not kernels.is_current(
            root, n, kernels.spec_dict(kernels.build_spec(root, wanted[n])), obs.kernels.get(n)
        )
    ]
    for name, data in sorted(obs.kernels.items()):
        if name not in wanted and name not in naming.keep:
            info = kernels.spec_meta(data)
            what = f"{info.env}/{info.build_id}" if info else "unreadable metadata.nsls2,"
            plan.kernels_remove.append((name, f"{what} not wanted"))
    return plan


def _kernel_naming(ready: dict[str, list[ReadyRecord]], obs: Observed) -> KernelNaming:
    """A name for every kernel that may be wanted (rolling kernels first, then LTS labels);
    a pair whose name breaks the rules or is taken is refused, never overwritten."""
    wanted: list[Pair] = [(env, None) for env in sorted(ready) if ready[env]]
    wanted += [(env, label) for env in sorted(ready) for label, _, _ in _lts_labels(env, obs)]
    installed = {name: kernels.spec_pair(data) for name, data in obs.kernels.items()}
    return assign_kernel_names(wanted, installed)


def _plan_deploys(obs: Observed, plan: Plan) -> None:
    """Committed builds not ready here, minus quarantined, retention-deleted and
    superseded ones."""
    ready_ids = {env: {r.build_id for r in rs} for env, rs in obs.ready.items()}
    for env, builds in obs.manifests.items():
        before = len(plan.to_deploy)
        for m in builds:
            if m.build_id in ready_ids.get(env, set()) or m.build_id in obs.deleted.get(env, ()):
                continue  # ready, or retired by retention: the store copy is not a reason
            if m.platform not in (obs.platform, "noarch"):
                plan.other_platform.append((env, m.build_id, m.platform))
            elif (env, m.build_id) in obs.quarantined:
                plan.quarantined.append((env, m.build_id, obs.quarantined[(env, m.build_id)]))
            elif (env, m.build_id) in obs.waiting:
                plan.waiting.append(obs.waiting[(env, m.build_id)])
            else:
                plan.to_deploy.append(m)
        candidates = plan.to_deploy[before:]
        del plan.to_deploy[before:]
        plan.to_deploy += _skip_superseded(env, candidates, obs, plan)
    # newest first: the build users are waiting for is usually the newest one
    plan.to_deploy.sort(key=lambda m: (m.created_at, m.build_id), reverse=True)


def _skip_superseded(
    env: str, candidates: list[BuildManifest], obs: Observed, plan: Plan
) -> list[BuildManifest]:
    """Only the newest of the builds `latest` could point at is worth deploying (plus
    LTS-labelled ones, which get kernels of their own): after an outage, deploying every
    intermediate build would delay the fix and fill the disk until retention."""
    if not candidates:
        return []
    lts_ids = {r.build_id for r in obs.lts.get(env, [])}
    newest = max(
        [(m.created_at, m.build_id) for m in candidates]
        + [(parse_time(r.created), r.build_id) for r in obs.ready.get(env, [])]
    )[1]
    wanted = []
    for m in candidates:
        if m.build_id == newest or m.build_id in lts_ids:
            wanted.append(m)
        else:
            plan.superseded.append((env, m.build_id, newest))
    return wanted


def _plan_latest(env: str, ready: list[ReadyRecord], obs: Observed, plan: Plan) -> str | None:
    """Where `latest` should point (a flip is planned if it does not already)."""
    current = obs.current.get(env)
    target, release = latest.choose_latest(ready, current, obs.holds.get(env))
    if target and (target != current or release):
        plan.to_flip.append(Flip(env, current, target, release))
    return target


def _kernel_plan(
    site: SiteConfig,
    obs: Observed,
    name: str,
    env: str,
    build_id: str,
    label: str,
    **lts: Any,
) -> kernels.KernelPlan:
    """One kernel's plan from its build's manifest (store copy, else the deployed copy)."""
    m = obs.builds.get((env, build_id))
    extras = m.kernel if m else None
    limit = deploy.memory_limit_for(site, m)  # nsls2.yaml's `kernels.memory_limit` wins
    return kernels.KernelPlan(
        name=name,
        env=env,
        build_id=build_id,
        channel="latest" if label == "latest" else "lts",
        label=label,
        base_name=m.display_name if m else env,
        created=m.created if m else _created_from_id(build_id),
        python=m.package_version("python") if m else None,
        listed=lts.pop("listed", True),
        beamlines=extras.beamlines if extras else (),
        memory_limit=limit,
        ipykernel=m.package_version("ipykernel") if m else None,
        logo=logos.logo_for(env, extras),
        **lts,
    )


def _created_from_id(build_id: str) -> str:
    when = build_id_time(build_id)
    return isoformat(when) if when else ""


def _lts_labels(env: str, obs: Observed) -> list[tuple[str, str, str | None]]:
    """(label, build_id, promoted) from the store; when the store said nothing about `env`
    (unreachable, or listed no builds), from the LTS kernels as they are."""
    if obs.store_ok and obs.manifests.get(env):
        return [(r.label, r.build_id, r.promoted) for r in obs.lts.get(env, [])]
    return [
        (info.label, info.build_id, info.promoted)
        for data in obs.kernels.values()
        if (info := kernels.spec_meta(data)) and info.env == env and not info.is_latest
    ]


def _promoted_at(text: str | None) -> datetime:
    with contextlib.suppress(TypeError, ValueError):
        return parse_time(text or "")
    return datetime.min.replace(tzinfo=UTC)


def _lts_years(site: SiteConfig, env: str) -> float:
    """The env's LTS support span, as retention applies it (nsls2.yaml may override)."""
    with contextlib.suppress(ManifestError):
        return float(env_retention(site.manifests, env, site.retention)[0].lts_years)
    return float(site.retention.lts_years)


def _wanted_lts(
    site: SiteConfig, env: str, ready_ids: set[str], obs: Observed, naming: KernelNaming
) -> dict[str, kernels.KernelPlan]:
    """One kernel per LTS label whose build is ready here and not tombstoned (an expired
    LTS build on its way out; retention removed its kernel).

    Labels on one build make one listed kernel naming them all (under its newest label);
    the other labels' specs stay, unlisted, so notebooks naming them still start. Only the
    builds of the newest `kernels.listed_lts` promotions are listed."""
    by_build: dict[str, list[tuple[str, str | None]]] = {}
    for label, build_id, promoted in _lts_labels(env, obs):
        if (env, label) not in naming.names:
            continue  # refused (see plan.kernel_clashes)
        if build_id in ready_ids and build_id not in obs.tombstoned.get(env, ()):
            by_build.setdefault(build_id, []).append((label, promoted))
    for labels in by_build.values():
        labels.sort(key=lambda lp: (_promoted_at(lp[1]), lp[0]))  # newest last
    newest_first = sorted(
        by_build, key=lambda b: (_promoted_at(by_build[b][-1][1]), b), reverse=True
    )
    shown = set(newest_first[: site.kernels.listed_lts])
    support = timedelta(days=365.25 * _lts_years(site, env))
    wanted = {}
    for build_id, labels in by_build.items():
        known = [_promoted_at(p) for _, p in labels if p]
        # the build is kept while any of its labels is: support ends with the newest one
        expires = (max(known) + support).date().isoformat() if known else None
        for label, promoted in labels:
            main = label == labels[-1][0]
            name = naming.names[(env, label)]
            wanted[name] = _kernel_plan(
                site,
                obs,
                name,
                env,
                build_id,
                label,
                listed=main and build_id in shown,
                labels=tuple(lb for lb, _ in labels) if main else (label,),
                expires=expires,
                promoted=promoted,
            )
    return wanted


# -- apply ----------------------------------------------------------------------------------


def apply_deploys(
    site: SiteConfig,
    store: Store,
    plan: Plan,
    log: logging.Logger,
    stop: threading.Event | None = None,
) -> list[deploy.DeployOutcome]:
    """Deploy every planned build; one failing never stops the others.

    First without waiting for other agents' build locks (so two agents split the work),
    then waiting for the busy ones, which then turn out ready (or get redone if the
    holder died)."""
    outcomes, busy = [], []
    for wait in (False, True):
        for m in busy if wait else plan.to_deploy:
            if stop is not None and stop.is_set():
                return outcomes
            try:
                outcome = deploy.deploy_build(site, store, m, log, wait=wait)
            except Exception as exc:  # a transient fault (disk, GPFS): retried next pass
                event(
                    log,
                    "deploy-error",
                    logging.ERROR,
                    exc=exc,
                    env=m.name,
                    build=m.build_id,
                    reason=f"{type(exc).__name__}: {exc}",
                )
                outcome = deploy.DeployOutcome(m.name, m.build_id, "error", str(exc))
            if outcome.result == "busy" and not wait:
                busy.append(m)
            else:
                outcomes.append(outcome)
    return outcomes


def apply_state(site: SiteConfig, plan: Plan, log: logging.Logger) -> None:
    """Flip latest, then write/remove kernelspecs (latest first: its spec resolves the link)."""
    root = site.deploy_root
    for f in plan.to_flip:
        latest.flip(root, f.env, f.to_build)
        if f.release_hold:
            latest.clear_hold(root, f.env)
        event(log, "flip", env=f.env, build=f.to_build, previous=f.from_build or "-")
    if kernels.write_startup(root):
        event(log, "kernel-startup", path=str(kernels.startup_path(root)))
    for k in plan.kernels_write:
        if kernels.write_kernelspec(root, k):
            event(log, "kernelspec", name=k.name, env=k.env, build=k.build_id, channel=k.channel)
    for name, why in plan.kernels_remove:
        if kernels.remove_kernelspec(root, name):
            event(log, "kernelspec-removed", name=name, why=why)
    written, removed = profiles.write_profiles(site)
    for name in written:
        event(log, "profile", beamline=name)
    for name in removed:
        event(log, "profile-removed", beamline=name)


def after_state(obs: Observed, plan: Plan) -> Observed:
    """The snapshot as `apply_state(plan)` left it: latest moved, released holds gone."""
    current, holds = dict(obs.current), dict(obs.holds)
    for f in plan.to_flip:
        current[f.env] = f.to_build
        if f.release_hold:
            holds[f.env] = None
    return replace(obs, current=current, holds=holds)


def _run_retention(site: SiteConfig, snapshot: Observed, log: logging.Logger) -> str | None:
    """Retention (heartbeat + prune) on the pass's snapshot, under the pass's apply lock;
    its failure is the pass's failure, not a crash."""
    try:
        retention.run_on(site, snapshot, log)
    except Exception as exc:
        event(log, "retention-error", logging.ERROR, exc=exc, reason=f"{type(exc).__name__}: {exc}")
        return f"retention: {exc}"
    return None


def run_pass(
    site: SiteConfig,
    store: Store,
    log: logging.Logger,
    *,
    dry_run: bool = False,
    stop: threading.Event | None = None,
) -> PassResult:
    """Look, plan, apply once. With `dry_run`, only plan (as if every deploy succeeded)."""
    started = time.monotonic()
    observed = observe(site, store, log)
    plan = make_plan(site, observed, assume_ready=dry_run)
    plan_committed = {
        env: {m.build_id for m in builds} | {i.build_id for i in observed.invalid if i.env == env}
        for env, builds in observed.manifests.items()
    }
    result = PassResult(plan, seen=observed)
    if dry_run:
        return result
    for bad in plan.invalid:
        event(
            log,
            "invalid-manifest",
            logging.WARNING,
            env=bad.env,
            build=bad.build_id,
            reason=bad.reason,
        )
        result.failures.append(f"{bad.env}/{bad.build_id}: {bad.reason}")
    if not plan.store_ok:
        result.failures.append(f"store: {plan.store_error}")
    trash.empty(site.deploy_root, log)
    result.outcomes = apply_deploys(site, store, plan, log, stop)
    result.failures += [
        f"{o.env}/{o.build_id}: {o.reason}"
        for o in result.outcomes
        if o.result in ("quarantined", "retry", "error")
    ]
    for env in layout.deployed_envs(site.deploy_root):
        builds = plan_committed.get(env)
        deploy.sweep_leftovers(site.deploy_root, env, builds or None, log)
    layout.test_pause("flip")
    with apply_lock(site.deploy_root):
        # re-look under the lock: the deploys (ours or another agent's) changed what is ready;
        # retention then plans from this same snapshot, as the flips just left it
        snapshot = observe(site, store, log)
        state_plan = make_plan(site, snapshot)
        apply_state(site, state_plan, log)
        seen = result.seen = after_state(snapshot, state_plan)
        if (failure := _run_retention(site, seen, log)) is not None:
            result.failures.append(failure)
    result.plan.to_flip, result.plan.kernels_write = state_plan.to_flip, state_plan.kernels_write
    result.plan.kernels_remove = state_plan.kernels_remove
    result.plan.kernel_clashes = state_plan.kernel_clashes
    for clash in state_plan.kernel_clashes:
        event(log, "kernel-name-refused", logging.WARNING, env=clash.env, reason=clash.reason)
        result.failures.append(clash.describe())
    result.seconds = time.monotonic() - started
    _record_ceiling(site, result, log)
    _record_pass(site, result)
    _report_rollout(site, store, result, seen, observed.builds, log)
    event(
        log,
        "pass",
        deployed=sum(o.result == "deployed" for o in result.outcomes),
        failed=len(result.failures),
        seconds=result.seconds,
    )
    return result


def refresh_state(site: SiteConfig, store: Store, log: logging.Logger) -> Plan:
    """Flips, kernelspecs and profiles only (no deploys), under the apply lock: what
    `rollback` runs right after moving `latest`, so kernel metadata follows at once."""
    with apply_lock(site.deploy_root):
        plan = make_plan(site, observe(site, store, log))
        apply_state(site, plan, log)
    return plan


def _report_rollout(
    site: SiteConfig,
    store: Store,
    result: PassResult,
    seen: Observed,
    builds: dict[tuple[str, str], BuildManifest],
    log: logging.Logger,
) -> None:
    """Check that `latest` imports on this node, then put this node's rollout report in
    the store; a failure is logged and retried next pass, never fatal."""
    try:
        node_failures = nodecheck.check_latest(site, builds, log)
        errors = {(o.env, o.build_id): o.reason for o in result.outcomes if o.result == "error"}
        node_report = report.collect_report(
            site,
            seen,
            seconds=result.seconds,
            store_ok=result.plan.store_ok,
            superseded=result.plan.superseded,
            errors=errors,
            node_failures=node_failures,
        )
        report.publish_report(store, node_report)
    except Exception as exc:  # the store may be down: the deploy root is still right
        event(log, "report-error", logging.WARNING, reason=f"{type(exc).__name__}: {exc}")
        result.failures.append(f"rollout report: {exc}")


def _record_ceiling(site: SiteConfig, result: PassResult, log: logging.Logger) -> None:
    """Which memory ceiling kernels get on this node (`status` shows it)."""
    try:
        ceiling.record_probe(site.deploy_root, site.agent.node, log)
    except Exception as exc:  # noqa: BLE001 - a probe must never fail a pass
        result.failures.append(f"memory ceiling probe: {exc}")


def _record_pass(site: SiteConfig, result: PassResult) -> None:
    """`state/agent/NODE.json`: when this node last finished a pass and what failed."""
    record = PassRecord(
        node=site.agent.node,
        time=isoformat(utcnow()),
        seconds=round(result.seconds, 3),
        ok=result.ok,
        failures=result.failures,
        outcomes=[asdict(o) for o in result.outcomes],
        store_ok=result.plan.store_ok,
    )
    atomic_write_json(layout.pass_record_path(site.deploy_root, site.agent.node), record.to_dict())
