"""Publishing from tests: one rattler package cache for every test publish, kept between
runs (packages are extracted once)."""

from __future__ import annotations

from pathlib import Path

from nsls2_artifacts.devchannel import default_cache_dir

from .cli import run_cli

BUILD_CACHE = default_cache_dir() / "rattler-tests"


def cache_env(cache: Path = BUILD_CACHE) -> dict[str, str]:
    """Environment for a publish subprocess that shares the session's rattler cache."""
    return {"NSLS2_ARTIFACTS_CACHE": str(cache)}


def publish_build(config: Path, *args: str, timeout: float = 900) -> str:
    """`publish ARGS` with the shared cache; returns the new build id (its last line)."""
    out = run_cli(config, "publish", *args, check=False, env=cache_env(), timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]
