"""Which environments the hook can build, and what the store knows about each.

The app calls `list_envs` / `is_env` to validate requests, `nightly_opt_in` for the
nightly schedule, and `summaries` for the front page. An environment is a directory of
`site.manifests` holding a `pixi.toml`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config import SiteConfig
from ..errors import ManifestError, StoreError
from ..manifest import env_nightly
from ..names import env_name_problem
from ..records import BuildManifest, LtsRecord
from ..store import Store


def list_envs(site: SiteConfig) -> list[str]:
    root = Path(site.manifests)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if is_env(site, p.name))


def is_env(site: SiteConfig, name: str) -> bool:
    """True for a well-formed env name with a manifest (never follows `..` or slashes)."""
    return env_name_problem(name) is None and (Path(site.manifests) / name / "pixi.toml").is_file()


def smoke_lines(site: SiteConfig, env: str, module: str) -> list[str]:
    """`manifests/ENV/nsls2.yaml:N: <line>` for the `smoke:` key and for the line naming
    `module` in it, so the build page can point at what to edit; [] if unreadable."""
    path = Path(site.manifests) / env / "nsls2.yaml"
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found, in_smoke = [], False
    for number, line in enumerate(lines, 1):
        key = re.match(r"\s*([A-Za-z_]+)\s*:", line)
        if key and not line.lstrip().startswith("-"):
            in_smoke = key.group(1) == "smoke"
            if not in_smoke:
                continue
        if in_smoke and (key or re.search(rf"(?<![\w.]){re.escape(module)}(?![\w])", line)):
            found.append(f"manifests/{env}/nsls2.yaml:{number}: {line.strip()}")
    return found


def nightly_opt_in(site: SiteConfig, env: str) -> bool:
    """`nightly:` in manifests/ENV/nsls2.yaml (default true); an unreadable file opts out."""
    try:
        return env_nightly(site.manifests, env)
    except ManifestError:
        # A broken nsls2.yaml would fail the publish anyway; don't build it every night.
        return False


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


def summary(site: SiteConfig, store: Store, env: str) -> EnvSummary:
    """The store's builds and LTS labels of `env`; a store error is shown, not raised."""
    try:
        return EnvSummary(env, store.builds(env), store.lts(env))
    except StoreError as exc:
        return EnvSummary(env, error=str(exc))
