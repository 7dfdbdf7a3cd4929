"""Per-build and per-deploy-root locks on the shared filesystem, so several agents
(one per node, all on one GPFS deploy root) unpack each build exactly once.

Callers: `deploy.deploy_build` (build lock) and `reconcile.run_pass` (apply lock).
Built on `fsutil.file_lock` (POSIX locks, dropped by the kernel when a holder dies).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ..fsutil import file_lock
from ..layout import apply_lock_path, build_lock_path


@contextlib.contextmanager
def build_lock(deploy_root: str | Path, env: str, build_id: str, *, wait: bool) -> Iterator[Path]:
    """Hold the lock for unpacking ENV/BUILD_ID; raises `fsutil.LockBusy` if not `wait`."""
    with file_lock(build_lock_path(deploy_root, env, build_id), wait=wait) as path:
        yield path


@contextlib.contextmanager
def apply_lock(deploy_root: str | Path) -> Iterator[Path]:
    """Serialise flips and kernelspec writes so each agent plans from what it then applies."""
    with file_lock(apply_lock_path(deploy_root), wait=True) as path:
        yield path
