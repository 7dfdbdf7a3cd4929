"""Which environments the hook can build, and what the store knows about each.

The app calls `list_envs` / `is_env` to validate requests, `nightly_opt_in` for the
nightly schedule, and `summaries` for the front page. An environment is a directory of
`site.manifests` holding a `pixi.toml`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import SiteConfig
from ..errors import StoreError
from ..records import BuildManifest, LtsRecord, is_build_id
from ..store import MANIFEST, FilesystemStore

_ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def list_envs(site: SiteConfig) -> list[str]:
    root = Path(site.manifests)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if _ENV_NAME.match(p.name) and is_env(site, p.name)
    )


def is_env(site: SiteConfig, name: str) -> bool:
    """True for a well-formed env name with a manifest (never follows `..` or slashes)."""
    return bool(_ENV_NAME.match(name)) and (Path(site.manifests) / name / "pixi.toml").is_file()


def nightly_opt_in(site: SiteConfig, env: str) -> bool:
    """`nightly:` in manifests/ENV/nsls2.yaml (default true); an unreadable file opts out."""
    path = Path(site.manifests) / env / "nsls2.yaml"
    if not path.exists():
        return True
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        # A broken nsls2.yaml would fail the publish anyway; don't build it every night.
        return False
    value = data.get("nightly", True) if isinstance(data, dict) else True
    return value is not False


@dataclass(frozen=True)
class EnvSummary:
    """What the front page shows for one environment (store side)."""

    name: str
    builds: list[BuildManifest] = field(default_factory=list)
    lts: list[LtsRecord] = field(default_factory=list)
    error: str = ""

    @property
    def latest(self) -> BuildManifest | None:
        return self.builds[-1] if self.builds else None

    def labels_for(self, build_id: str) -> list[str]:
        return [r.label for r in self.lts if r.build_id == build_id]


class ManifestCache:
    """Parsed `manifest.json`s of committed builds, keyed by the file's identity.

    A committed manifest never changes, but every page lists every build, and parsing a
    few dozen manifests of a few hundred packages each per request is most of a page's
    cost. The key (inode, mtime, size) makes a deleted-and-republished build re-read.
    """

    def __init__(self, store: FilesystemStore, limit: int = 4096) -> None:
        self.store = store
        self.limit = limit
        self._cache: dict[tuple[str, str], tuple[tuple[int, int, int], BuildManifest]] = {}

    def builds(self, env: str) -> list[BuildManifest]:
        """Like `FilesystemStore.builds`: committed, readable builds, oldest first."""
        found = []
        env_dir = Path(self.store.root) / env
        try:
            entries = sorted(os.scandir(env_dir), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list store directory {env_dir}: {exc.strerror}") from exc
        for entry in entries:
            if not is_build_id(entry.name):
                continue
            try:
                st = os.stat(os.path.join(entry.path, MANIFEST))
            except OSError:
                continue  # not committed (yet)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            cached = self._cache.get((env, entry.name))
            if cached is None or cached[0] != key:
                try:
                    cached = (key, self.store.manifest(env, entry.name))
                except StoreError:
                    continue  # unreadable: FilesystemStore.invalid_builds reports it
                if len(self._cache) >= self.limit:
                    self._cache.clear()
                self._cache[(env, entry.name)] = cached
            found.append(cached[1])
        return sorted(found, key=lambda m: (m.created_at, m.build_id))


def summary(site: SiteConfig, cache: ManifestCache, env: str) -> EnvSummary:
    """The store's builds and LTS labels of `env`; a store error is shown, not raised."""
    try:
        return EnvSummary(env, cache.builds(env), cache.store.lts(env))
    except StoreError as exc:
        return EnvSummary(env, error=str(exc))
