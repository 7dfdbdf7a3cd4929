"""Publishing from tests: one rattler package cache for every test publish of a checkout,
kept between runs (packages are extracted once)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from nsls2_artifacts.devchannel import default_cache_dir

from .cli import run_cli


def checkout_cache(checkout: Path) -> Path:
    """The test publishes' cache of one checkout. Per checkout, because test runs of two
    checkouts at once (two worktrees, each possibly with another dev channel) shared one
    before: when one re-extracted a package the other was linking from, the other's
    install or pack failed with "No such file". Runs of one checkout reuse it."""
    key = hashlib.sha256(str(checkout.resolve()).encode()).hexdigest()[:12]
    return default_cache_dir() / f"rattler-tests-{key}"


BUILD_CACHE = checkout_cache(Path(__file__).resolve().parents[2])


def cache_env(cache: Path = BUILD_CACHE) -> dict[str, str]:
    """Environment for a publish subprocess that shares the session's rattler cache."""
    return {"NSLS2_ARTIFACTS_CACHE": str(cache)}


def publish_build(config: Path, *args: str, timeout: float = 900) -> str:
    """`publish ARGS` with the shared cache; returns the new build id (its last line)."""
    out = run_cli(config, "publish", *args, check=False, env=cache_env(), timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]
