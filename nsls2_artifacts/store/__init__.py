"""The artifact store: immutable, checksummed builds behind one interface (`Store`).

The build side commits builds (`staging_dir` + `commit_build`, manifest.json last) and
LTS records; the agent, retention, `store` commands and the hook only read. Every caller
gets its store from `open_store(site.store)` and never sees the backend's layout.
Modules: `interface` (the protocol and shared checks), `filesystem` (the default).
"""

from __future__ import annotations

from pathlib import Path

from .filesystem import FilesystemStore, sha256_file
from .interface import (
    MANIFEST,
    ArtifactMismatchError,
    ArtifactStamp,
    InvalidBuild,
    Progress,
    Store,
    StoredNodeReport,
)


def open_store(location: str | Path) -> Store:
    """The store backend for a site config's `store:` value."""
    return FilesystemStore(location)


__all__ = [
    "MANIFEST",
    "ArtifactMismatchError",
    "ArtifactStamp",
    "FilesystemStore",
    "InvalidBuild",
    "Progress",
    "Store",
    "StoredNodeReport",
    "open_store",
    "sha256_file",
]
