"""Synthetic builds committed through the `Store` protocol, so the same test runs on
every backend (a directory, or a bucket of the session's S3 server)."""

from __future__ import annotations

import hashlib
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from nsls2_artifacts.records import (
    ArtifactInfo,
    BuildManifest,
    LockInfo,
    PackageRef,
    isoformat,
    make_build_id,
    utcnow,
)
from nsls2_artifacts.store import Store
from support.agent import T0, commit_build, fake_env_members, tar_bytes, write_site


def fake_build(store: Store, env: str, age_days: float, payload: bytes) -> str:
    """Commit a build of `env` made `age_days` ago whose artifact is `payload` * 100,
    through the store's own commit path; returns its build id."""
    created = utcnow() - timedelta(days=age_days)
    lock = b"version: 6\n# " + payload + b"\n"
    lock_sha = hashlib.sha256(lock).hexdigest()
    build_id = make_build_id(created, lock_sha)
    staging = store.staging_dir(env, build_id)
    (staging / "env.tar.zst").write_bytes(payload * 100)
    (staging / "pixi.lock").write_bytes(lock)
    store.commit_build(
        staging,
        BuildManifest(
            name=env,
            build_id=build_id,
            created=isoformat(created),
            platform="linux-64",
            display_name=f"NSLS-II {env}",
            smoke=("json",),
            artifact=ArtifactInfo(
                "env.tar.zst",
                hashlib.sha256(payload * 100).hexdigest(),
                len(payload) * 100,
                "tar.zst",
            ),
            lock=LockInfo("pixi.lock", lock_sha),
            packages=(PackageRef("python", "3.11.7", "0", "conda-forge"),),
            builder={"host": "test"},
            source={"manifest_sha256": "0" * 64},
        ),
    )
    return build_id


def s3_site(root: Path, server: Any, url: str | None = None, **kw: Any) -> tuple[Path, Any]:
    """A fake-env site (support.agent) whose store is a fresh prefix on `server`."""
    kw["store_options"] = {**server.site_options(), **kw.get("store_options", {})}
    return write_site(root, store=url or server.new_store_url(), **kw)


def commit_to(
    store: Store, scratch: Path, tag: str, hours: int = 0, env: str = "demo", extra: tuple = ()
) -> BuildManifest:
    """A good fake build (support.agent's fake env, made `hours` after T0) committed
    through the store's own publish path, on any backend."""
    archive = tar_bytes([*fake_env_members(tag), *extra])
    made = commit_build(scratch, env, archive, created=T0 + timedelta(hours=hours))
    staging = store.staging_dir(made.name, made.build_id)
    for name in (made.artifact.file, made.lock.file):
        shutil.copy(scratch / made.name / made.build_id / name, staging / name)
    store.commit_build(staging, made)
    return made
