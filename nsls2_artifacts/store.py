"""The artifact store: immutable, checksummed builds behind a small interface.

Layout (filesystem backend, the default):
    STORE/ENV/BUILD_ID/env.tar.zst     conda-pack archive
    STORE/ENV/BUILD_ID/pixi.lock       the lock the env was installed from
    STORE/ENV/BUILD_ID/manifest.json   written LAST: its presence commits the build
    STORE/ENV/lts/LABEL.json           {"build_id": ..., "promoted": ...}

The build side calls `put_build`; the agent, prune and the hook only read. A build
directory without manifest.json is an incomplete publish and invisible to readers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import StoreError
from .fsutil import atomic_write_json, file_lock, fsync_dir, read_json
from .records import BuildManifest, LtsRecord, RecordError, is_build_id

MANIFEST = "manifest.json"
STAGING_PREFIX = ".staging-"
HASH_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class InvalidBuild:
    """A committed build whose manifest.json could not be read; skipped, never fatal."""

    env: str
    build_id: str
    reason: str


def sha256_file(path: str | Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class Store(Protocol):
    """What every backend offers. Listings raise StoreError when the store is unreachable."""

    def envs(self) -> list[str]: ...
    def builds(self, env: str) -> list[BuildManifest]: ...
    def invalid_builds(self, env: str) -> list[InvalidBuild]: ...
    def manifest(self, env: str, build_id: str) -> BuildManifest: ...
    def artifact_path(self, env: str, build_id: str) -> Path: ...
    def lock_path(self, env: str, build_id: str) -> Path: ...
    def lts(self, env: str) -> list[LtsRecord]: ...
    def set_lts(self, record: LtsRecord) -> None: ...
    def delete_build(self, env: str, build_id: str) -> None: ...


class FilesystemStore:
    """The store as a directory tree (a shared or DTN-synced filesystem)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- reading ---------------------------------------------------------------------------

    def _scan(self, path: Path) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(path) as entries:
                return list(entries)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list store directory {path}: {exc.strerror}") from exc

    def envs(self) -> list[str]:
        if not self.root.is_dir():
            raise StoreError(f"store root {self.root} does not exist or is not a directory")
        return sorted(
            e.name for e in self._scan(self.root) if e.is_dir() and not e.name.startswith(".")
        )

    def _committed_ids(self, env: str) -> list[str]:
        return sorted(
            e.name
            for e in self._scan(self.root / env)
            if is_build_id(e.name) and os.path.exists(os.path.join(e.path, MANIFEST))
        )

    def _load(self, env: str, build_id: str) -> BuildManifest:
        path = self.root / env / build_id / MANIFEST
        try:
            manifest = BuildManifest.from_dict(read_json(path))
        except FileNotFoundError:
            raise StoreError(f"{env}/{build_id}: no such committed build in {self.root}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{path}: invalid JSON: {exc}") from None
        except RecordError as exc:
            raise StoreError(f"{path}: {exc}") from None
        if manifest.name != env or manifest.build_id != build_id:
            raise StoreError(
                f"{path}: names {manifest.name}/{manifest.build_id}, but lives at {env}/{build_id}"
            )
        return manifest

    def builds(self, env: str) -> list[BuildManifest]:
        """Committed, readable builds of `env`, oldest first (by `created`)."""
        found = []
        for build_id in self._committed_ids(env):
            with contextlib.suppress(StoreError):
                found.append(self._load(env, build_id))
        return sorted(found, key=lambda m: (m.created_at, m.build_id))

    def invalid_builds(self, env: str) -> list[InvalidBuild]:
        bad = []
        for build_id in self._committed_ids(env):
            try:
                self._load(env, build_id)
            except StoreError as exc:
                bad.append(InvalidBuild(env, build_id, str(exc)))
        return bad

    def manifest(self, env: str, build_id: str) -> BuildManifest:
        return self._load(env, build_id)

    def artifact_path(self, env: str, build_id: str) -> Path:
        return self.root / env / build_id / self._load(env, build_id).artifact.file

    def lock_path(self, env: str, build_id: str) -> Path:
        return self.root / env / build_id / self._load(env, build_id).lock.file

    def lts(self, env: str) -> list[LtsRecord]:
        records = []
        for entry in self._scan(self.root / env / "lts"):
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            label = entry.name[: -len(".json")]
            with contextlib.suppress(OSError, ValueError, RecordError):
                records.append(LtsRecord.from_dict(env, label, read_json(entry.path)))
        return sorted(records, key=lambda r: r.label)

    # -- writing (build host only) ---------------------------------------------------------

    def set_lts(self, record: LtsRecord) -> None:
        self._load(record.env, record.build_id)  # only committed builds can be promoted
        atomic_write_json(self.root / record.env / "lts" / f"{record.label}.json", record.to_dict())

    @contextlib.contextmanager
    def publish_lock(self, env: str, *, wait: bool = False) -> Iterator[None]:
        """One publish per env at a time; a second one refuses (or waits) instead of racing."""
        from .errors import BuildLockedError
        from .fsutil import LockBusy

        try:
            with file_lock(self.root / env / ".publish.lock", wait=wait):
                yield
        except LockBusy:
            raise BuildLockedError(
                f"another publish of {env!r} is running (lock {self.root / env / '.publish.lock'})"
            ) from None

    def staging_dir(self, env: str, build_id: str) -> Path:
        """A fresh directory on the store's filesystem to write a build into before commit."""
        path = self.root / env / f"{STAGING_PREFIX}{build_id}-{os.getpid()}"
        path.mkdir(parents=True)
        return path

    def clean_staging(self, env: str) -> list[Path]:
        """Remove leftovers of killed publishes (call while holding `publish_lock`)."""
        removed = []
        for entry in self._scan(self.root / env):
            if entry.name.startswith(STAGING_PREFIX):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(Path(entry.path))
        return removed

    def commit_build(self, staging: Path, manifest: BuildManifest) -> Path:
        """Move a staged build into place; manifest.json is written last and atomically."""
        for name in (manifest.artifact.file, manifest.lock.file):
            with open(staging / name, "rb") as handle:
                os.fsync(handle.fileno())
        final = self.root / manifest.name / manifest.build_id
        if final.exists():
            raise StoreError(f"{manifest.name}/{manifest.build_id} already exists in the store")
        os.rename(staging, final)
        fsync_dir(final.parent)
        atomic_write_json(final / MANIFEST, manifest.to_dict())
        return final

    def delete_build(self, env: str, build_id: str) -> None:
        """Un-commit first (manifest.json goes), then remove the files."""
        path = self.root / env / build_id
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path / MANIFEST)
            fsync_dir(path)
        shutil.rmtree(path, ignore_errors=True)


def open_store(root: str | Path) -> FilesystemStore:
    """The store backend for a site config's `store:` value (filesystem for now)."""
    return FilesystemStore(root)
