"""The deploy root's one trash, `state/trash/`: whatever leaves `envs/` is renamed there
first (atomic: a build directory is whole or gone, never half-visible), then removed.

Callers: `deploy` (stale partial, judge and incomplete dirs), `retention` (deleted builds);
`reconcile` and `retention` empty what a killed pass left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from pathlib import Path

from .. import layout
from ..fsutil import fsync_dir
from .log import event


def move_to_trash(deploy_root: str | Path, env: str, path: Path) -> Path | None:
    """Rename `path` (a directory or link under envs/ENV) into the trash; returns its new
    place, None if it was already gone."""
    target = layout.trash_dir(deploy_root) / f"{env}--{path.name}--{uuid.uuid4().hex[:8]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    fsync_dir(path.parent)
    return target


def remove(target: Path) -> None:
    """Delete one trashed entry (a directory, or a file or link)."""
    shutil.rmtree(target, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
        os.unlink(target)


def discard(deploy_root: str | Path, env: str, path: Path) -> None:
    """Move `path` into the trash, then delete it."""
    target = move_to_trash(deploy_root, env, path)
    if target is not None:
        remove(target)


def empty(deploy_root: str | Path, log: logging.Logger) -> list[str]:
    """Remove whatever an earlier (perhaps killed) pass left in the trash."""
    done = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(layout.trash_dir(deploy_root)):
            remove(Path(entry.path))
            done.append(entry.name)
            event(log, "trash-removed", entry=entry.name)
    # agents before the one trash left `envs/ENV/.trash-*` behind a killed pass
    for env in layout.deployed_envs(Path(deploy_root)):
        for legacy in layout.env_dir(deploy_root, env).glob(layout.LEGACY_TRASH_GLOB):
            remove(legacy)
            done.append(legacy.name)
    return done
