"""The Jupyter server extension: notebooks remember the build they ran on, and a small REST
API tells the JupyterLab extension which NSLS-II kernels exist, which were retired and what
each running kernel really runs.

jupyter_server loads it through `nsls2_artifacts.jupyter._jupyter_server_extension_points`
(enabled by the `jupyter_server_config.d` file the package installs). It registers:
- a contents-manager pre-save hook: on every notebook save, when a session for that path has
  an NSLS-II kernel, `metadata.nsls2 = {"env", "build_id", "track"}`;
- `GET /nsls2/api/kernels`, authenticated and authorized like `GET /api/kernelspecs`;
- an `OomWatcher` (oom.py): a kernel its memory cgroup stopped becomes a server event
  (`kernel-memory`) that the lab extension shows as a notification.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from ..kernelmeta import KernelMetadata, kernel_metadata_or_none
from . import beamlines, oom
from .deployed import (
    MANAGED,
    Catalogue,
    ConcreteBuild,
    build_catalogue,
    build_of_process,
    deploy_root_of_spec,
)

if TYPE_CHECKING:
    from jupyter_client.manager import KernelManager
    from jupyter_server.serverapp import ServerApp

API_PATH = "nsls2/api/kernels"


def _load_jupyter_server_extension(serverapp: ServerApp) -> None:
    recorder = BuildRecorder(serverapp)
    serverapp.contents_manager.register_pre_save_hook(recorder.pre_save)
    route = url_path_join(serverapp.web_app.settings["base_url"], API_PATH)
    serverapp.web_app.add_handlers(".*$", [(route, KernelsHandler, {"recorder": recorder})])
    beamlines_route = url_path_join(serverapp.web_app.settings["base_url"], beamlines.API_PATH)
    serverapp.web_app.add_handlers(".*$", [(beamlines_route, beamlines.BeamlinesHandler)])
    oom.OomWatcher(serverapp).start()
    serverapp.log.info("nsls2-artifacts: recording builds in saved notebooks; API at /%s", API_PATH)


def _norm(path: str) -> str:
    return path.strip("/")


class BuildRecorder:
    """Answers "which build does this notebook's kernel run" from the server's own state."""

    def __init__(self, serverapp: ServerApp) -> None:
        self.app = serverapp
        self.log = serverapp.log

    # --- the pre-save hook -------------------------------------------------------------
    def pre_save(self, model: dict[str, Any], path: str, **_: Any) -> None:
        """Add `metadata.nsls2` to a notebook being saved; leaves any other save alone."""
        if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
            return
        record = self.record_for(path)
        if record is None:
            return
        metadata = model["content"].setdefault("metadata", {})
        if isinstance(metadata, dict):
            previous = metadata.get(MANAGED)
            # the lab extension's beamline notebooks say which beamline they are for
            beamline = previous.get("beamline") if isinstance(previous, dict) else None
            metadata[MANAGED] = {**record, "beamline": beamline} if beamline else record

    def record_for(self, path: str) -> dict[str, str] | None:
        """`{"env", "build_id", "track"}` for the first NSLS-II kernel in a session on
        `path`; None when no such kernel runs or its build cannot be known."""
        for kernel_id in self._session_kernel_ids(path):
            manager = self._kernel(kernel_id)
            nsls2 = self._spec_nsls2(manager) if manager else None
            if not nsls2:
                continue
            build = self.concrete_build(manager, nsls2)
            track = nsls2.track
            if build is None:
                self.log.warning(
                    "nsls2-artifacts: %s: cannot tell which build kernel %s (%s) runs; "
                    "metadata.nsls2 left as it was",
                    path,
                    kernel_id,
                    manager.kernel_name,
                )
                return None
            return {"env": build.env, "build_id": build.build_id, "track": track}
        return None

    def _session_kernel_ids(self, path: str) -> list[str]:
        # The hook is synchronous and the session API is async; the session table is a
        # local sqlite db. A fresh cursor (connection.execute) so that an async caller
        # iterating the manager's shared cursor is not disturbed.
        rows = self.app.session_manager.connection.execute(
            "SELECT path, kernel_id FROM session"
        ).fetchall()
        return [row[1] for row in rows if row[1] and _norm(row[0] or "") == _norm(path)]

    def _kernel(self, kernel_id: str) -> KernelManager | None:
        try:
            return self.app.kernel_manager.get_kernel(kernel_id)
        except KeyError:
            return None

    @staticmethod
    def _spec_nsls2(manager: KernelManager) -> KernelMetadata | None:
        try:
            spec = manager.kernel_spec  # the spec this kernel was started from
        except Exception:  # noqa: BLE001 - a spec deleted since start: not ours to judge
            return None
        nsls2 = kernel_metadata_or_none(spec.metadata) if spec else None
        return nsls2 if nsls2 and nsls2.env else None

    def concrete_build(self, manager: KernelManager, nsls2: KernelMetadata) -> ConcreteBuild | None:
        """What the kernel process runs (/proc); an LTS kernel falls back to its spec."""
        spec = manager.kernel_spec
        deploy_root = deploy_root_of_spec(spec.resource_dir) if spec.resource_dir else None
        pid = getattr(manager.provisioner, "pid", None)  # LocalProvisioner
        if pid and deploy_root:
            build = build_of_process(int(pid), [deploy_root])
            if build:
                return build
        if not nsls2.is_latest and nsls2.build_id and deploy_root:
            return ConcreteBuild(nsls2.env, nsls2.build_id, deploy_root)
        return None

    # --- the REST API ------------------------------------------------------------------
    def catalogue(self) -> Catalogue:
        return build_catalogue(self.app.kernel_spec_manager.find_kernel_specs())

    def running(self) -> dict[str, dict[str, Any]]:
        """Running NSLS-II kernels: kernel id -> {kernel_name, env, build_id (None if unknown)}."""
        found: dict[str, dict[str, Any]] = {}
        for kernel_id in self.app.kernel_manager.list_kernel_ids():
            manager = self._kernel(kernel_id)
            nsls2 = self._spec_nsls2(manager) if manager else None
            if not nsls2:
                continue
            build = self.concrete_build(manager, nsls2)
            found[kernel_id] = {
                "kernel_name": manager.kernel_name,
                "env": build.env if build else nsls2.env,
                "build_id": build.build_id if build else None,
            }
        return found


class KernelsHandler(APIHandler):
    """`GET /nsls2/api/kernels`: NSLS-II kernelspecs, retired kernels, running builds."""

    auth_resource = "kernelspecs"

    def initialize(self, recorder: BuildRecorder) -> None:
        self.recorder = recorder

    @web.authenticated
    @authorized
    async def get(self) -> None:
        catalogue = await asyncio.to_thread(self.recorder.catalogue)
        model = {
            "kernelspecs": {name: k.to_dict() for name, k in sorted(catalogue.kernels.items())},
            "retired": {name: r.to_dict() for name, r in sorted(catalogue.retired.items())},
            "running": self.recorder.running(),
        }
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(model))
