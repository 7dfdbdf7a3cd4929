"""Site configs written under a test's directory and loaded back through `load_config`."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from nsls2_artifacts.config import SiteConfig, load_config

REPO = Path(__file__).resolve().parents[2]


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides`; a mapping overriding a mapping is merged one level deep."""
    data = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def write_site_yaml(root: Path, data: dict[str, Any], dirs: Iterable[str] = ("store",)) -> Path:
    """Write `root/site.yaml` from `data` and create `dirs` under `root` (not validated:
    some tests write a bad config on purpose)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    for name in dirs:
        (root / name).mkdir(exist_ok=True)
    return path


def node_config(config: Path, node: str, **agent: Any) -> Path:
    """Another node's site file next to `config`: the same store and deploy root, its own
    `agent.node` (plus `agent` settings)."""
    data = yaml.safe_load(config.read_text())
    data["agent"] = {**(data.get("agent") or {}), "node": node, **agent}
    path = config.parent / f"site-{node}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def rewrite_config(config: Path, **overrides: Any) -> SiteConfig:
    """Change top-level fields of an existing site file; returns it loaded again."""
    data = yaml.safe_load(config.read_text())
    data.update(overrides)
    config.write_text(yaml.safe_dump(data))
    return load_config(config)


def write_site_config(
    root: Path, data: dict[str, Any], dirs: Iterable[str] = ("store",)
) -> tuple[Path, SiteConfig]:
    """`write_site_yaml`, then load it back through the real config loader."""
    path = write_site_yaml(root, data, dirs)
    return path, load_config(path)


def write_demo_site(root: Path, channel: Path, **overrides: Any) -> tuple[Path, SiteConfig]:
    """A site under `root` that publishes the repo's envs from the offline `channel`: a copy
    of manifests/ (kept if there is one), its own store and deploy root, test-node's agent
    and retention's defaults; `overrides` replace whole top-level keys."""
    if not (root / "manifests").exists():
        shutil.copytree(REPO / "manifests", root / "manifests")
    base: dict[str, Any] = {
        "manifests": "./manifests",
        "store": "./store",
        "deploy_root": "./deploy",
        "channel_mirrors": {"conda-forge": str(channel)},
        "retention": {"lts_years": 3, "keep_latest": 3, "grace_days": 7},
        "agent": {"poll_seconds": 2, "node": "test-node", "node_ttl_seconds": 600},
        "beamlines": {},
    }
    return write_site_config(root, {**base, **overrides})
