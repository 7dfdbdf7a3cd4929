"""Which memory ceiling kernels get on this node: probed by the agent after each pass and
kept in DEPLOY_ROOT/state/memory/NODE.json, which `status` shows per node.

The probe (`kernel_ceiling.probe`) looks from the agent's own cgroup, changing nothing:
a cgroup2 subtree with the memory controller delegated, a writable cgroup v1 memory
hierarchy, or RLIMIT_DATA, and why the cgroups are not used. Kernels start from the
user's Jupyter server, whose cgroup may differ (Delegate= is set per unit): `status
--check-kernels` starts real kernels and reports what each one really got.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from ..fsutil import atomic_write_json
from ..layout import memory_probe_path, state_dir
from ..records import isoformat, utcnow
from . import kernel_ceiling
from .log import event


def record_probe(deploy_root: Path, node: str, log: logging.Logger) -> dict[str, Any]:
    """Probe and write this node's record when what it says changed."""
    found = kernel_ceiling.probe().to_dict()
    path = memory_probe_path(deploy_root, node)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in found} == found:
            return old
    record = {**found, "node": node, "checked": isoformat(utcnow())}
    atomic_write_json(path, record)
    event(log, "memory-ceiling", mechanism=found["mechanism"], detail=found["detail"])
    return record


def read_probes(deploy_root: Path) -> dict[str, dict[str, Any]]:
    """node -> its last probe ({mechanism, detail, checked}); unreadable ones say so."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((state_dir(deploy_root) / "memory").glob("*.json")):
        try:
            data = json.loads(path.read_text())
            found[path.stem] = {k: data.get(k) for k in ("mechanism", "detail", "checked")}
        except (OSError, ValueError, AttributeError) as exc:
            found[path.stem] = {"mechanism": "unknown", "detail": f"unreadable: {exc}"}
    return found
