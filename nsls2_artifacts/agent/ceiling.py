"""Which memory ceiling kernels get on this node: probed by the agent after each pass and
kept in DEPLOY_ROOT/state/memory/NODE.json, which `status` shows per node.

The probe (`kernel_ceiling.probe`) looks from the agent's own cgroup, changing nothing:
a cgroup2 subtree with the memory controller delegated, a writable cgroup v1 memory
hierarchy, or RLIMIT_DATA, and why the cgroups are not used. Kernels start from the
user's Jupyter server, whose cgroup may differ (Delegate= is set per unit): `status
--check-kernels` starts real kernels and reports what each one really got.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import RecordError
from ..fsutil import atomic_write_json
from ..layout import memory_probe_path, read_record, state_dir
from ..records import MemoryProbe, isoformat, utcnow
from . import kernel_ceiling
from .log import event


def record_probe(deploy_root: Path, node: str, log: logging.Logger) -> MemoryProbe:
    """Probe and write this node's record when what it says changed (an unreadable record
    is written afresh: only this node's agent writes it, and the probe is the truth)."""
    found = kernel_ceiling.probe()
    path = memory_probe_path(deploy_root, node)
    try:
        old = read_record(path, MemoryProbe.from_dict)
    except RecordError:
        old = None
    same = (found.mechanism, found.detail, found.cgroup)
    if old is not None and old.node == node and (old.mechanism, old.detail, old.cgroup) == same:
        return old
    probe = MemoryProbe(
        node=node,
        mechanism=found.mechanism,
        detail=found.detail,
        checked=isoformat(utcnow()),
        cgroup=found.cgroup,
    )
    atomic_write_json(path, probe.to_dict())
    event(log, "memory-ceiling", mechanism=found.mechanism, detail=found.detail)
    return probe


def read_probes(deploy_root: Path) -> dict[str, dict[str, Any]]:
    """node -> its last probe ({mechanism, detail, checked}); an unreadable one says why,
    naming the file and the field."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((state_dir(deploy_root) / "memory").glob("*.json")):
        try:
            probe = read_record(path, MemoryProbe.from_dict)
        except RecordError as exc:
            found[path.stem] = {"mechanism": "unknown", "detail": f"unreadable: {exc}"}
            continue
        if probe is not None:  # gone since the listing
            found[path.stem] = {k: getattr(probe, k) for k in ("mechanism", "detail", "checked")}
    return found
