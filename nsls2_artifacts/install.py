"""Install a solved environment into a scratch prefix: rattler for conda, then uv for PyPI.

`publish` calls `install` with a `Solution` from solve.py. Packages are downloaded and
extracted once into a shared cache (hard-linked into the prefix), which is also where
conda-pack later reads unmodified files from. Only this module and solve.py import rattler.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import rattler
from rattler.exceptions import (
    ExtractError,
    InstallerError,
    IoError,
    LinkError,
    TransactionError,
)

from .errors import InstallError
from .records import PackageRef
from .solve import PypiPin, Solution

# (stage, done, total): stage is "download" or "install"; total may be 0 when unknown
ProgressFn = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


class _Reporter(rattler.InstallerReporter):
    """Forward rattler's callbacks as (stage, done, total) counts of packages."""

    def __init__(self, progress: ProgressFn) -> None:
        self.progress = progress
        self.total = 0
        self.downloaded = 0
        self.linked = 0

    def on_transaction_start(self, total_operations: int) -> None:
        self.total = total_operations
        self.progress("install", 0, total_operations)

    def on_download_completed(self, download_idx: int) -> None:
        self.downloaded += 1
        self.progress("download", self.downloaded, self.total)

    def on_link_complete(self, index: int) -> None:
        self.linked += 1
        self.progress("install", self.linked, self.total)


def install(
    solution: Solution,
    prefix: str | Path,
    cache_dir: str | Path,
    *,
    progress: ProgressFn = _no_progress,
) -> None:
    """Create `prefix` from `solution`'s conda packages (PyPI ones: `install_pypi`)."""
    prefix = Path(prefix)
    canonical_urls = [r.url for r in solution.records]
    records = solution.install_records()  # the same objects, pointed at their mirrors
    try:
        asyncio.run(
            rattler.install(
                records,
                target_prefix=prefix,
                cache_dir=Path(cache_dir) / "pkgs",
                platform=rattler.Subdir(solution.platform),
                execute_link_scripts=False,
                show_progress=False,
                reporter=_Reporter(progress),
            )
        )
    except (InstallerError, LinkError, TransactionError, ExtractError, IoError, OSError) as exc:
        raise InstallError(f"installing {solution.env} into {prefix} failed: {exc}") from None
    finally:
        # the lock must keep naming the canonical channel, not this site's mirror
        for record, url in zip(records, canonical_urls, strict=True):
            record.url = url


def install_pypi(
    prefix: str | Path,
    requirements: list[str],
    *,
    pins: list[PypiPin] | None = None,
    progress: ProgressFn = _no_progress,
) -> list[PypiPin]:
    """`[pypi-dependencies]` (or, for `--locked`, the exact pins) into `prefix` with uv.

    Returns what uv added on top of the conda packages, so the lock can record it.
    """
    prefix = Path(prefix)
    wanted = [f"{p.name}=={p.version}" for p in pins] if pins else list(requirements)
    if not wanted:
        return []
    python = prefix / "bin" / "python"
    before = installed_distributions(prefix)
    progress("pypi", 0, len(wanted))
    command = [_uv(), "pip", "install", "--python", str(python), "--no-progress", *wanted]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InstallError(
            f"uv could not install the PyPI dependencies {wanted} into {prefix}:\n"
            f"{result.stderr.strip()}"
        )
    after = installed_distributions(prefix)
    added = sorted(set(after.items()) - set(before.items()))
    progress("pypi", len(wanted), len(wanted))
    return [
        PypiPin(name, version, f"https://pypi.org/project/{name}/{version}/")
        for name, version in added
    ]


def installed_distributions(prefix: str | Path) -> dict[str, str]:
    """Python distributions (name -> version) visible in the prefix's site-packages."""
    out: dict[str, str] = {}
    for site in Path(prefix).glob("lib/python3*/site-packages"):
        for info in site.glob("*.dist-info"):
            metadata = info / "METADATA"
            if not metadata.is_file():
                continue
            name = version = None
            with open(metadata, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if line.startswith("Name:"):
                        name = line.split(":", 1)[1].strip()
                    elif line.startswith("Version:"):
                        version = line.split(":", 1)[1].strip()
                    elif not line.strip():
                        break
            if name and version:
                out[name.lower().replace("_", "-")] = version
    return out


def prefix_packages(prefix: str | Path) -> list[PackageRef]:
    """The conda packages installed in `prefix`, read from its conda-meta records."""
    out = []
    for path in sorted(Path(prefix, "conda-meta").glob("*.json")):
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        out.append(
            PackageRef(
                name=data["name"],
                version=str(data["version"]),
                build=str(data["build"]),
                channel=str(data.get("channel", "")),
            )
        )
    return out


def _uv() -> str:
    """The uv binary: next to our interpreter (pip-installed `uv`), else on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("uv")
    if not found:
        raise InstallError("uv is needed for [pypi-dependencies] but is not installed")
    return found
