"""Shared fixtures: the offline conda channel (built once, cached) and per-test sites.

Every end-to-end test solves and installs from `offline_channel`, a real conda channel
made from PyPI wheels by `nsls2_artifacts.devchannel`, and works in a site of its own
(`make_site`): a site config in tmp_path with its own store and deploy root.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.cli import CLI, run_cli  # noqa: F401 - the test modules import them from here
from support.sites import write_site_config

from nsls2_artifacts.config import SiteConfig
from nsls2_artifacts.devchannel import build_channel, default_cache_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def offline_channel() -> Path:
    """A conda channel with python (this interpreter), ipykernel, databroker, numpy, six."""
    return build_channel(default_cache_dir() / "test-channel")


@pytest.fixture
def make_site(tmp_path: Path, offline_channel: Path) -> Callable[..., tuple[Path, SiteConfig]]:
    """Write a site config under tmp_path (own store, deploy root, copy of manifests/)."""

    def factory(name: str = "site", **overrides: Any) -> tuple[Path, SiteConfig]:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        manifests = root / "manifests"
        if not manifests.exists():
            shutil.copytree(REPO / "manifests", manifests)
        base: dict[str, Any] = {
            "manifests": "./manifests",
            "store": "./store",
            "deploy_root": "./deploy",
            "channel_mirrors": {"conda-forge": str(offline_channel)},
            "retention": {"lts_years": 3, "keep_latest": 3, "grace_days": 7},
            "agent": {"poll_seconds": 2, "node": "test-node", "node_ttl_seconds": 600},
            "beamlines": {},
        }
        return write_site_config(root, {**base, **overrides})

    return factory
