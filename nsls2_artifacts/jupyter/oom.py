"""Tell the user when a kernel's memory cgroup stopped it, instead of a silent "kernel died".

The server extension starts one `OomWatcher` per Jupyter server. Every second it reads
`oom_kill` of each running NSLS-II kernel's cgroup (memory.events on cgroup v2,
memory.oom_control on v1; the cgroup is named after the kernel id by kernel_ceiling.py, so
it is found even after the process is gone) and, when it grew, emits a Jupyter server
event (`EVENT_SCHEMA_ID`) that JupyterLab receives through `serviceManager.events`; the
lab extension shows it as a notification (labextension_src/src/memory.ts). A kernel that
runs under RLIMIT_DATA has no cgroup: its MemoryError explains itself inside the kernel.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tornado.ioloop import PeriodicCallback

from ..agent import kernel_ceiling
from ..kernelmeta import kernel_metadata_or_none

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp

EVENT_SCHEMA_ID = "https://nsls2.github.io/nsls2-artifacts/events/kernel-memory"
POLL_MS = 1000  # the user hears of a kill within a second or two (the issue asks for 5 s)

EVENT_SCHEMA: dict[str, Any] = {
    "$id": EVENT_SCHEMA_ID,
    "version": "1",
    "title": "NSLS-II kernel stopped at its memory ceiling",
    "description": "The kernel's cgroup killed it for using more memory than its ceiling.",
    "type": "object",
    "required": ["kernel_id", "kernel_name", "limit", "oom_kills", "message"],
    "properties": {
        "kernel_id": {"title": "kernel id", "type": "string"},
        "kernel_name": {"title": "kernelspec name", "type": "string"},
        "display_name": {"title": "kernel display name", "type": "string"},
        "limit": {"title": "the ceiling in bytes", "type": ["integer", "null"]},
        "oom_kills": {"title": "kills so far in this kernel's cgroup", "type": "integer"},
        "message": {"title": "what to tell the user", "type": "string"},
    },
}


def human_size(n: int | None) -> str:
    if not n:
        return "its memory ceiling"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:g} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def message_for(display_name: str, limit: int | None) -> str:
    return (
        f"The kernel {display_name} was stopped: it used more than {human_size(limit)} of "
        "memory, this kernel's ceiling. Its variables are lost; Jupyter restarts it. Work "
        "in smaller chunks or memory-map large files (numpy.memmap), or ask your beamline "
        "staff to raise the ceiling for this environment (kernels.memory_limit)."
    )


@dataclass
class Watched:
    """One kernel being watched: where its cgroups would be, and the kills already told."""

    kernel_name: str
    display_name: str
    limit: int | None
    directories: list[str]
    told: int = 0


class OomWatcher:
    """Polls the cgroups of the server's NSLS-II kernels; emits an event per new kill."""

    def __init__(self, serverapp: ServerApp) -> None:
        self.app = serverapp
        self.log = serverapp.log
        self.watched: dict[str, Watched] = {}
        self.app.event_logger.register_event_schema(EVENT_SCHEMA)
        self.callback = PeriodicCallback(self.poll, POLL_MS)

    def start(self) -> None:
        # the server's loop is not running yet while extensions load (init_ioloop's advice)
        self.app.io_loop.call_later(0, self.callback.start)

    def poll(self) -> None:
        """One look at every kernel (a few small file reads each)."""
        try:
            running = set(self.app.kernel_manager.list_kernel_ids())
        except Exception:  # noqa: BLE001 - the server is shutting down
            return
        for kernel_id in running - set(self.watched):
            watched = self._watch(kernel_id)
            if watched is not None:
                self.watched[kernel_id] = watched
        for kernel_id in list(self.watched):
            if kernel_id not in running:
                self._forget(kernel_id)
                continue
            self._check(kernel_id, self.watched[kernel_id])

    def _watch(self, kernel_id: str) -> Watched | None:
        try:
            manager = self.app.kernel_manager.get_kernel(kernel_id)
            spec = manager.kernel_spec
        except Exception:  # noqa: BLE001 - gone, or its spec deleted since start
            return None
        nsls2 = kernel_metadata_or_none(spec.metadata) if spec else None
        if nsls2 is None:
            return None  # not an NSLS-II kernel: none of ours to watch
        limit = nsls2.memory_limit
        return Watched(
            kernel_name=manager.kernel_name,
            display_name=spec.display_name,
            limit=limit if isinstance(limit, int) else None,
            directories=kernel_ceiling.cgroup_dir_for(kernel_id),
        )

    def _check(self, kernel_id: str, watched: Watched) -> None:
        # a cgroup is new for each kernel id and kept across its restarts: kills start at 0
        kills = max((kernel_ceiling.read_oom_kills(d) or 0 for d in watched.directories), default=0)
        if kills <= watched.told:
            return
        watched.told = kills
        message = message_for(watched.display_name, watched.limit)
        self.log.warning("nsls2-artifacts: kernel %s: %s", kernel_id, message)
        self.app.event_logger.emit(
            schema_id=EVENT_SCHEMA_ID,
            data={
                "kernel_id": kernel_id,
                "kernel_name": watched.kernel_name,
                "display_name": watched.display_name,
                "limit": watched.limit,
                "oom_kills": kills,
                "message": message,
            },
        )

    def _forget(self, kernel_id: str) -> None:
        """The kernel was shut down: remove its (now empty) cgroup; busy ones stay."""
        watched = self.watched.pop(kernel_id)
        for directory in watched.directories:
            with contextlib.suppress(OSError):
                os.rmdir(directory)
