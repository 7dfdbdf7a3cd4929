"""The artifact store: immutable, checksummed builds behind one interface (`Store`).

The build side commits builds (`staging_dir` + `commit_build`, manifest.json last) and
LTS records; the agent, retention, `store` commands and the hook only read. Every caller
gets its store from `open_store(site)` and never sees the backend's layout. `Store` is two
contracts: `ArtifactStore` (builds, LTS records) and `NodeReports` (rollout reports).
Modules: `interface` (the protocol and shared checks), `filesystem` (the default),
`s3` (`store: s3://BUCKET/PREFIX`, boto3 imported only when used).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .filesystem import FilesystemStore, sha256_file
from .interface import (
    MANIFEST,
    ArtifactMismatchError,
    ArtifactReader,
    ArtifactStamp,
    ArtifactStore,
    InvalidBuild,
    NodeReports,
    Progress,
    Store,
    StoredNodeReport,
)

if TYPE_CHECKING:
    from ..config import SiteConfig


def open_store(site: SiteConfig | str | Path) -> Store:
    """The store backend for a site config (its `store:` and `store_options:`), or for a
    bare location (a directory, or s3://BUCKET/PREFIX with default options)."""
    from ..config import SiteConfig

    if isinstance(site, SiteConfig):
        location, options, local = site.store, site.store_options, site.local_dir
        refresh = site.agent.node_ttl_seconds / 3  # an unchanged report, rewritten this often
    else:
        location, options, local, refresh = site, None, None, 200.0
    if isinstance(location, str) and location.startswith("s3://"):
        from .s3 import S3Store

        return S3Store(location, options, local_dir=local, report_refresh_seconds=refresh)
    return FilesystemStore(location)


__all__ = [
    "MANIFEST",
    "ArtifactMismatchError",
    "ArtifactReader",
    "ArtifactStamp",
    "ArtifactStore",
    "FilesystemStore",
    "InvalidBuild",
    "NodeReports",
    "Progress",
    "Store",
    "StoredNodeReport",
    "open_store",
    "sha256_file",
]
