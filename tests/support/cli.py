"""`nsls2-artifacts` as a real subprocess, with the site config given explicitly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "nsls2_artifacts.cli"]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment plus `extra`, without a config from the caller's shell."""
    env = {**os.environ, **(extra or {})}
    env.pop("NSLS2_ARTIFACTS_CONFIG", None)
    return env


def run_cli(
    config: Path, *args: str, check: bool = True, timeout: float = 600, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run `nsls2-artifacts ARGS[0] --config CONFIG ARGS[1:]`; raise on failure if `check`."""
    env = cli_env(kwargs.pop("env", {}))
    result = subprocess.run(
        [*CLI, *args[:1], "--config", str(config), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kwargs,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"nsls2-artifacts {' '.join(args)} failed ({result.returncode}):\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result
