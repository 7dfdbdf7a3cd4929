"""`hook demo` (`just hook-demo`): a local site file with a fresh staff token, in one step.

The file takes the embedded default config (paths made absolute against the current
directory, so the demo hook sees the same store and manifests as `just demo`), with no
nightly schedule and one named token. Called by cli/hook_cmd.py.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from ..config import SiteFile
from ..fsutil import atomic_write_text
from .auth import new_token, token_hash

_PATH_KEYS = ("manifests", "store", "deploy_root")


def write_demo_site(directory: str | Path, listen: str) -> tuple[Path, str]:
    """Write DIRECTORY/site.yaml; returns (its path, the new token)."""
    directory = Path(directory).absolute()
    base = Path.cwd()
    data = yaml.safe_load(
        resources.files("nsls2_artifacts").joinpath("default-site.yaml").read_text()
    )
    defaults = SiteFile()  # the file holds only what differs from the schema's defaults
    for key in _PATH_KEYS:
        data[key] = str((base / data.get(key, getattr(defaults, key))).resolve())
    data["channel_mirrors"] = {
        name: url if "://" in url else str((base / url).resolve())
        for name, url in (data.get("channel_mirrors") or {}).items()
    }
    value = new_token()
    data["hook"] = {
        **data.get("hook", {}),
        "listen": listen,
        "tokens_sha256": [{"name": "demo staff", "sha256": token_hash(value)}],
        "nightly": None,
        "state_dir": str(directory / "state"),
    }
    path = directory / "site.yaml"
    header = "# Written by `nsls2-artifacts hook demo`: a local demo hook. Safe to delete.\n"
    atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False), mode=0o600)
    return path, value
