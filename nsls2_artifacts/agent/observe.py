"""Look: one snapshot of the store and the deploy root, gathered without changing anything.

`reconcile` plans deploys, flips and kernelspecs from it, `retention` plans its
tombstones and deletions from the same snapshot, and the pass's rollout report
(`report.collect_report`) is made from it (one look per pass, so they cannot disagree
about what is there). `nsls2-artifacts prune` and `status` take one the same way, so
`status` shows what the agent sees.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import layout
from ..config import SiteConfig
from ..errors import StoreError
from ..fsutil import read_json
from ..records import (
    BuildManifest,
    Hold,
    LtsRecord,
    Quarantine,
    ReadyRecord,
    RecordError,
    RetryRecord,
    parse_time,
)
from ..store import InvalidBuild, Store
from . import deploy, failures, kernels, latest
from .log import event


def node_platform() -> str:
    """This node's conda platform name (builds for other platforms are not deployed)."""
    machine = platform.machine()
    arch = {"x86_64": "64", "aarch64": "aarch64", "ppc64le": "ppc64le", "arm64": "arm64"}
    system = {"Linux": "linux", "Darwin": "osx"}.get(platform.system(), platform.system().lower())
    return f"{system}-{arch.get(machine, machine)}"


@dataclass
class Observed:
    """Everything a plan is computed from; gathered without changing anything."""

    store_ok: bool
    store_error: str
    manifests: dict[str, list[BuildManifest]]  # env -> committed builds, oldest first
    invalid: list[InvalidBuild]
    lts: dict[str, list[LtsRecord]]
    ready: dict[str, list[ReadyRecord]]  # env -> ready builds the store vouches for, oldest first
    current: dict[str, str | None]
    holds: dict[str, Hold | None]
    kernels: dict[str, dict[str, Any]]
    quarantined: dict[tuple[str, str], str]  # (env, build) -> reason, for this exact artifact
    builds: dict[tuple[str, str], BuildManifest]  # (env, build) -> its manifest (store or local)
    deleted: dict[str, set[str]] = field(default_factory=dict)  # env -> pruned here on purpose
    # env -> builds retention has tombstoned (-> tombstone mtime, ns): they lose their kernels
    tombstoned: dict[str, dict[str, int]] = field(default_factory=dict)
    # (env, build) -> the node fault whose backoff has not run out (failures.py)
    waiting: dict[tuple[str, str], RetryRecord] = field(default_factory=dict)
    # env -> every build directory under envs/ENV -> its ready record (None: not ready)
    dirs: dict[str, dict[str, ReadyRecord | None]] = field(default_factory=dict)
    hold_errors: dict[str, str] = field(default_factory=dict)  # env -> why its hold is unreadable
    invalid_lts: dict[str, list[InvalidBuild]] = field(default_factory=dict)
    local_envs: list[str] = field(default_factory=list)  # with a directory or tombstones here
    # every quarantine and retry record here (also of builds the store no longer lists)
    quarantine_records: list[Quarantine] = field(default_factory=list)
    deployed_envs: list[str] = field(default_factory=list)  # with a directory under envs/
    retrying: list[RetryRecord] = field(default_factory=list)
    platform: str = field(default_factory=lambda: node_platform())


def _local_manifest(deploy_root: Path, env: str, build_id: str) -> BuildManifest | None:
    try:
        return BuildManifest.from_dict(
            read_json(layout.build_dir(deploy_root, env, build_id) / layout.LOCAL_MANIFEST)
        )
    except (OSError, ValueError, RecordError):
        return None


def observe(site: SiteConfig, store: Store, log: logging.Logger) -> Observed:
    root = site.deploy_root
    obs = Observed(True, "", {}, [], {}, {}, {}, {}, kernels.installed(root), {}, {})
    try:
        for env in store.envs():
            obs.manifests[env] = store.builds(env)
            obs.invalid += store.invalid_builds(env)
            obs.lts[env] = store.lts(env)
            obs.invalid_lts[env] = store.invalid_lts(env)
    except StoreError as exc:
        obs.store_ok, obs.store_error = False, str(exc)
        obs.manifests, obs.lts, obs.invalid_lts = {}, {}, {}
        event(log, "store-unavailable", logging.WARNING, reason=str(exc))
    for env, builds in obs.manifests.items():
        for m in builds:
            obs.builds[(env, m.build_id)] = m
            if (q := deploy.quarantined_for(site, store, m)) is not None:
                obs.quarantined[(env, m.build_id)] = q.reason
            retry = failures.read_retry(site.deploy_root, env, m.build_id)
            if retry is not None and failures.waiting(retry):
                obs.waiting[(env, m.build_id)] = retry
    obs.quarantine_records = deploy.list_quarantined(root)
    obs.retrying = failures.list_retrying(root)
    obs.local_envs = sorted(set(layout.deployed_envs(root)) | set(layout.tombstoned_envs(root)))
    obs.deployed_envs = layout.deployed_envs(root)
    for env in sorted(set(obs.manifests) | set(obs.local_envs)):
        obs.deleted[env] = layout.deleted_builds(root, env)
        obs.tombstoned[env] = layout.tombstones(root, env)
        obs.dirs[env] = {b: layout.read_ready(root, env, b) for b in layout.build_dirs(root, env)}
        ready = sorted(
            (r for r in obs.dirs[env].values() if r is not None),
            key=lambda r: (parse_time(r.created), r.build_id),
        )
        obs.ready[env] = trusted_ready(ready, obs.manifests.get(env, []))
        obs.current[env] = latest.current_latest(root, env)
        obs.holds[env] = _hold_or_none(obs, root, env, log)
        for r in obs.ready[env]:
            if (env, r.build_id) not in obs.builds:
                manifest = _local_manifest(root, env, r.build_id)
                if manifest:
                    obs.builds[(env, r.build_id)] = manifest
    return obs


def _hold_or_none(obs: Observed, deploy_root: Path, env: str, log: logging.Logger) -> Hold | None:
    """An unreadable hold pins nothing for latest (it moves on as without one; retention
    keeps the env whole instead); say so."""
    try:
        return latest.read_hold(deploy_root, env)
    except RecordError as exc:
        obs.hold_errors[env] = str(exc)
        event(log, "hold-unreadable", logging.WARNING, env=env, reason=str(exc))
        return None


def trusted_ready(ready: list[ReadyRecord], committed: list[BuildManifest]) -> list[ReadyRecord]:
    """Ready records that the store's manifest vouches for (same artifact sha256); a build
    the store no longer lists keeps its record (it was deployed from a verified artifact)."""
    by_id = {m.build_id: m for m in committed}
    return [r for r in ready if r.build_id not in by_id or r.vouches_for(by_id[r.build_id])]
