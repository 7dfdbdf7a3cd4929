"""`GET /nsls2/api/beamlines`: the beamline data-access profiles the agent wrote from the site
config's `beamlines:` (DEPLOY_ROOT/etc/tiled/profiles), for the lab extension's beamline
cards. Read-only.

Registered by the server extension (`extension._load_jupyter_server_extension`); the deploy
roots are those of the NSLS-II kernelspecs Jupyter sees, as for `/nsls2/api/kernels`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from .. import layout
from ..errors import RecordError
from ..schema import decode
from .deployed import build_catalogue

API_PATH = "nsls2/api/beamlines"
log = logging.getLogger(__name__)


def profile_names(deploy_roots: Iterable[Path]) -> list[str]:
    """The tiled profile names in every deploy root's profile directory (an unreadable or
    malformed file is skipped: it cannot be connected to anyway)."""
    names: set[str] = set()
    for root in deploy_roots:
        for path in sorted(layout.profiles_dir(root).glob("*.yml")):
            with contextlib.suppress(OSError, yaml.YAMLError):
                data = yaml.safe_load(path.read_text())
                if isinstance(data, dict):
                    names.update(str(name) for name in data)
    return sorted(names)


def configured_envs(deploy_roots: Iterable[Path]) -> dict[str, str]:
    """`beamlines.NAME.env` of the site config as the agent wrote it (beamline -> env); an
    unreadable or malformed file counts as none (logged, naming the file and the beamline):
    the cards fall back to the envs listing the beamline."""
    envs: dict[str, str] = {}
    for root in deploy_roots:
        try:
            found = layout.read_record(layout.beamline_envs_file(root), _beamline_envs)
        except RecordError as exc:
            log.warning("ignoring %s", exc)
            continue
        envs.update(found or {})
    return envs


def _beamline_envs(data: Any) -> dict[str, str]:
    return decode(data, dict[str, str], "beamline-envs.json")


class BeamlinesHandler(APIHandler):
    """`{"beamlines": [NAME, ...]}`, authorized like `GET /api/kernelspecs`."""

    auth_resource = "kernelspecs"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        specs = self.kernel_spec_manager.find_kernel_specs()
        roots = build_catalogue(specs).deploy_roots
        names = await asyncio.to_thread(profile_names, roots)
        envs = await asyncio.to_thread(configured_envs, roots)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"beamlines": names, "envs": envs}))
