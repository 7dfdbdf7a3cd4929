"""Tiled client profiles for every `beamlines:` entry, in DEPLOY_ROOT/etc/tiled/profiles.

Called by `reconcile` each pass. Kernels get `TILED_SITE_PROFILES` pointing here, so
`from tiled.client import from_profile; from_profile("csx")` reaches that beamline's
catalog (and databroker on top of it). Each file holds one profile named after the
beamline; files we wrote but whose beamline left the config are removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from .. import layout
from ..config import Beamline, SiteConfig
from ..fsutil import atomic_write_text

HEADER = "# written by nsls2-artifacts agent from the site config `beamlines:`; do not edit\n"


def profile_uri(beamline: Beamline) -> str:
    """The server URI with the beamline's catalog path, in the form tiled's from_uri takes."""
    uri = beamline.uri.rstrip("/")
    if not beamline.path:
        return uri
    tail = "/".join(beamline.path)
    if "/api/v1/metadata" in uri:
        return f"{uri}/{tail}"
    if uri.endswith("/api"):
        return f"{uri}/v1/metadata/{tail}"
    return f"{uri}/api/v1/metadata/{tail}"


def render_profile(beamline: Beamline) -> str:
    body = {beamline.name: {"uri": profile_uri(beamline)}}
    return HEADER + yaml.safe_dump(body, sort_keys=True)


def write_profiles(site: SiteConfig) -> tuple[list[str], list[str]]:
    """Make the profile directory match `site.beamlines`; returns (written, removed)."""
    directory = layout.profiles_dir(site.deploy_root)
    directory.mkdir(parents=True, exist_ok=True)
    written, removed = [], []
    for name, beamline in sorted(site.beamlines.items()):
        path = directory / f"{name}.yml"
        text = render_profile(beamline)
        if _read(path) != text:
            atomic_write_text(path, text)
            written.append(name)
    for path in sorted(directory.glob("*.yml")):
        if path.stem not in site.beamlines and (_read(path) or "").startswith(HEADER):
            os.unlink(path)
            removed.append(path.stem)
    write_beamline_envs(site)
    return written, removed


def render_beamline_envs(beamlines: Mapping[str, Beamline]) -> str:
    envs = {name: b.env for name, b in sorted(beamlines.items()) if b.env}
    return json.dumps(envs, indent=1, sort_keys=True) + "\n"


def write_beamline_envs(site: SiteConfig) -> None:
    """`beamlines.NAME.env` for the lab's beamline cards (layout.beamline_envs_file)."""
    path = layout.beamline_envs_file(site.deploy_root)
    text = render_beamline_envs(site.beamlines)
    if _read(path) != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
