"""Node heartbeats and the shared filesystem's clock.

Every agent pass writes `DEPLOY_ROOT/state/nodes/NODE.json` (the builds in use on that
node, from its /proc scan) through `retention.run_pass`; retention reads all of them to
decide what may be deleted, and `nodes list` / `nodes retire` show and retire them.
All ages are measured with file mtimes as the shared filesystem records them, never with
a node's own clock, so clock skew between nodes cannot make a heartbeat look fresh.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .. import __version__, layout
from ..errors import PruneError
from ..fsutil import atomic_write_json, fsync_dir, read_json
from ..procscan import ScanResult
from ..records import NodeHeartbeat, RecordError, isoformat, utcnow


def span(seconds: float) -> str:
    """A short human duration: 45s, 12m, 3.5h, 2d, 2.5d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            value = seconds / size
            return (
                f"{value:.0f}{unit}" if abs(value - round(value)) < 0.05 else f"{value:.1f}{unit}"
            )
    return f"{seconds:.0f}s"


def fs_now_ns(deploy_root: str | Path, node: str) -> int:
    """Now, as the shared filesystem's clock says: write a probe file, read back its mtime."""
    probe = layout.clock_probe_path(deploy_root, node)
    probe.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"clock probe\n")  # a data write makes the file server stamp the mtime
        os.fsync(fd)
        return os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)


def scan_heartbeat(node: str, scan: ScanResult, keys: dict[str, str]) -> NodeHeartbeat:
    """The heartbeat for one scan; `keys` maps each scanned build dir to "ENV/BUILD_ID"."""
    in_use = {
        keys[path]: list(uses) for path, uses in sorted(scan.uses.items()) if uses and path in keys
    }
    return NodeHeartbeat(
        node=node,
        time=isoformat(utcnow()),  # informational only; ages come from the file's mtime
        version=__version__,
        in_use=in_use,
        complete=scan.complete,
        unknown=list(scan.unknown),
    )


def write_heartbeat(deploy_root: str | Path, heartbeat: NodeHeartbeat) -> int:
    """Write NODE.json atomically; returns its mtime (ns) as the shared filesystem recorded it."""
    path = layout.heartbeat_path(deploy_root, heartbeat.node)
    atomic_write_json(path, heartbeat.to_dict())
    return os.stat(path).st_mtime_ns


# Heartbeat mtimes may run ahead of the probe by this much (two writes to one file server
# race; NFS rounds); beyond it the heartbeat counts as stale until its node writes again.
FUTURE_TOLERANCE_SECONDS = 60.0


@dataclass(frozen=True)
class NodeReport:
    """One node's last heartbeat as found on disk (or why it could not be read)."""

    node: str
    mtime_ns: int
    heartbeat: NodeHeartbeat | None
    error: str | None = None

    def age_seconds(self, now_ns: int) -> float:
        return max(0, now_ns - self.mtime_ns) / 1e9

    def ahead_seconds(self, now_ns: int) -> float:
        """How far the heartbeat's mtime lies in the future of the shared clock (0: not)."""
        return max(0, self.mtime_ns - now_ns) / 1e9

    def from_the_future(self, now_ns: int) -> bool:
        # a touched file or a clock that jumped back: its age would read 0 for as long as
        # the skew lasts, so it proves nothing about the node being alive
        return self.ahead_seconds(now_ns) > FUTURE_TOLERANCE_SECONDS

    def stale(self, now_ns: int, ttl_seconds: float) -> bool:
        return self.from_the_future(now_ns) or self.age_seconds(now_ns) > ttl_seconds

    def stale_reason(self, now_ns: int) -> str:
        """Why `stale` holds, for retention's "kept: node N ..." and `nodes list`."""
        if self.from_the_future(now_ns):
            return f"heartbeat dated {span(self.ahead_seconds(now_ns))} in the future"
        return f"stale since {self.since}"

    @property
    def since(self) -> str:
        """The heartbeat's mtime as an ISO time (for "stale since …")."""
        return isoformat(datetime.fromtimestamp(self.mtime_ns / 1e9, UTC))


def read_reports(deploy_root: str | Path) -> list[NodeReport]:
    """Every non-retired node's heartbeat; an unreadable one is reported with its error."""
    reports = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.scandir(layout.nodes_dir(deploy_root)), key=lambda e: e.name):
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            node = entry.name[: -len(".json")]
            try:
                mtime_ns = entry.stat(follow_symlinks=False).st_mtime_ns
            except FileNotFoundError:
                continue  # retired between listing and stat
            try:
                heartbeat = NodeHeartbeat.from_dict(read_json(entry.path))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, RecordError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                reports.append(NodeReport(node, mtime_ns, None, f"{entry.path}: {reason}"))
                continue
            if heartbeat.node != node:  # a heartbeat speaks only for the node it is stored as
                reason = f"{entry.path}: names node {heartbeat.node!r}, not {node!r}"
                reports.append(NodeReport(node, mtime_ns, None, reason))
                continue
            reports.append(NodeReport(node, mtime_ns, heartbeat))
    return reports


def retire(deploy_root: str | Path, node: str) -> Path:
    """Move NODE.json to state/nodes/retired/ so it stops blocking deletion."""
    source = layout.heartbeat_path(deploy_root, node)
    target = layout.retired_nodes_dir(deploy_root) / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except FileNotFoundError:
        known = ", ".join(r.node for r in read_reports(deploy_root)) or "none"
        raise PruneError(
            f"no heartbeat for node {node!r} in {source.parent} (known: {known})"
        ) from None
    fsync_dir(source.parent)
    fsync_dir(target.parent)
    return target
