"""Store retention: decide which committed builds to delete from the artifact store.

Called by `nsls2-artifacts store prune [--dry-run]`. Every committed build gets a decision
with a reason. Kept: every LTS-labelled build (LTS artifacts are never deleted), the newest
`keep_latest` builds, builds younger than `grace_days`, and the build a deploy root's
`latest` points at. Deleting is `ArtifactStore.delete_build` (manifest.json first). Leftovers of
interrupted publishes (uncommitted files, unfinished uploads) are removed too, under the
env's publish lock. The deployed copies on the cluster are the agent's business (its own
prune, with in-use checks). Policy, so it sits above the store package, which only stores.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from . import layout
from .config import RetentionPolicy, SiteConfig
from .errors import BuildLockedError, ManifestError, StoreError
from .manifest import env_retention
from .records import RetentionDecision, utcnow
from .store import ArtifactStore


def plan(
    site: SiteConfig, store: ArtifactStore, now: datetime | None = None
) -> list[RetentionDecision]:
    """One decision ("keep" or "delete") per committed or unreadable build, oldest first."""
    now = now or utcnow()
    decisions: list[RetentionDecision] = []
    for env in store.envs():
        decisions.extend(_plan_env(site, store, env, now))
    return decisions


def apply(store: ArtifactStore, decisions: list[RetentionDecision]) -> list[RetentionDecision]:
    """Delete what `plan` marked; returns the deletions that failed (as "error" decisions)."""
    failed = []
    for decision in decisions:
        if decision.action != "delete":
            continue
        try:
            store.delete_build(decision.env, decision.build_id)
        except (OSError, StoreError) as exc:
            failed.append(RetentionDecision(decision.env, decision.build_id, "error", str(exc)))
    return failed


def leftovers(store: ArtifactStore) -> list[tuple[str, str]]:
    """(env, name) of every leftover of an interrupted publish."""
    return [(env, name) for env in store.envs() for name in store.uncommitted(env)]


def clean_leftovers(store: ArtifactStore) -> list[tuple[str, str]]:
    """Remove leftovers of interrupted publishes, skipping envs being published right now."""
    removed = []
    for env in store.envs():
        try:
            with store.publish_lock(env):
                removed += [(env, name) for name in store.clean_uncommitted(env)]
        except BuildLockedError:
            continue  # a publish is running: its files are not leftovers
    return removed


def _policy(site: SiteConfig, env: str) -> tuple[RetentionPolicy, str]:
    """The site policy with the env's nsls2.yaml overrides (the agent's prune uses the same).
    Raises ManifestError naming file and field when the overrides are malformed."""
    policy, overridden = env_retention(site.manifests, env, site.retention)
    return policy, "nsls2.yaml policy" if overridden else "site policy"


def _plan_env(
    site: SiteConfig, store: ArtifactStore, env: str, now: datetime
) -> list[RetentionDecision]:
    try:
        policy, source = _policy(site, env)
    except ManifestError as exc:  # as the agent does: keep everything rather than guess
        return [
            RetentionDecision(env, b.build_id, "keep", f"bad retention override: {exc}")
            for b in [*store.invalid_builds(env), *store.builds(env)]
        ]
    builds = store.builds(env)
    labels: dict[str, list[str]] = {}
    for record in store.lts(env):
        labels.setdefault(record.build_id, []).append(record.label)
    newest = {m.build_id for m in builds[-policy.keep_latest :]} if policy.keep_latest else set()
    latest_target = layout.current_latest(site.deploy_root, env)
    grace = timedelta(days=policy.grace_days)
    out = [
        RetentionDecision(
            env, bad.build_id, "keep", f"manifest unreadable, never deleted: {bad.reason}"
        )
        for bad in store.invalid_builds(env)
    ]
    for build in builds:
        keep_reasons = []
        if build.build_id in labels:
            keep_reasons.append("LTS " + ", ".join(sorted(labels[build.build_id])))
        if build.build_id in newest:
            keep_reasons.append(f"one of the newest {policy.keep_latest} ({source})")
        age = now - build.created_at
        if age < grace:
            keep_reasons.append(f"younger than {policy.grace_days:g} days")
        if build.build_id == latest_target:
            keep_reasons.append("latest on the deploy root")
        if keep_reasons:
            out.append(RetentionDecision(env, build.build_id, "keep", "; ".join(keep_reasons)))
        else:
            out.append(
                RetentionDecision(
                    env,
                    build.build_id,
                    "delete",
                    f"{age.days} days old, not among the newest {policy.keep_latest}, no LTS label",
                )
            )
    return out
