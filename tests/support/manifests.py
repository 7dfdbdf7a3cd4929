"""Environment manifests (`manifests/ENV/{pixi.toml,nsls2.yaml}`) fabricated for a test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PIXI_TOML = """[workspace]
name = "{name}"
channels = ["conda-forge"]
platforms = ["linux-64"]

[dependencies]
{deps}
"""


def write_env(manifests: Path, name: str, deps: dict[str, str], **nsls2: Any) -> Path:
    """A manifest directory: pixi.toml with `deps` and an nsls2.yaml with `nsls2` fields."""
    path = manifests / name
    path.mkdir(parents=True, exist_ok=True)
    lines = "\n".join(f'{pkg} = "{spec}"' for pkg, spec in deps.items())
    (path / "pixi.toml").write_text(PIXI_TOML.format(name=name, deps=lines))
    meta = {"display_name": f"Test {name}", "smoke": [], **nsls2}
    (path / "nsls2.yaml").write_text(yaml.safe_dump(meta))
    return path


def edit_pixi_toml(config: Path, old: str, new: str, env: str = "demo") -> None:
    """Replace `old` (which must be there) by `new` in the site's manifests/ENV/pixi.toml."""
    toml = config.parent / "manifests" / env / "pixi.toml"
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new))
