"""The `envs/ENV/latest` alias: choose its target, flip it atomically, hold it on rollback.

`reconcile` asks `choose_latest` each pass and calls `flip`; the CLI's `rollback` calls
`rollback`. Latest only moves forward on its own (to the newest ready build by
`created`); a rollback writes `state/holds/ENV.json` and pins latest until a build
newer than the newest one at hold time is ready.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .. import layout
from ..errors import DeployError
from ..fsutil import atomic_symlink, atomic_write_json, fsync_dir
from ..records import Hold, ReadyRecord, isoformat, parse_time, utcnow

# the readers live in the layout, below the agent (status, store prune and the server
# extension read the link too); the agent keeps calling them by these names
current_latest = layout.current_latest
read_hold = layout.read_hold


def clear_hold(deploy_root: Path, env: str) -> None:
    path = layout.hold_path(deploy_root, env)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
        fsync_dir(path.parent)


def choose_latest(
    ready: list[ReadyRecord], current: str | None, hold: Hold | None
) -> tuple[str | None, bool]:
    """(build latest should name, whether the hold is over). None = leave it alone.

    `ready` is oldest first. Never backwards: a ready current target stays unless a newer
    ready build exists; an unready or missing one is replaced by the newest ready build.
    """
    if not ready:
        return None, False
    by_id = {r.build_id: r for r in ready}
    newest = ready[-1]
    if hold is not None:
        newer = parse_time(newest.created) > parse_time(hold.newest_at_hold_created)
        if hold.build_id in by_id and not newer:
            return hold.build_id, False
        release = True
    else:
        release = False
    if current in by_id and parse_time(by_id[current].created) >= parse_time(newest.created):
        return current, release
    return newest.build_id, release


def flip(deploy_root: Path, env: str, build_id: str) -> None:
    """Point latest at BUILD_ID with a relative link (temp symlink + os.replace + dir fsync)."""
    atomic_symlink(build_id, layout.latest_link(deploy_root, env))


def rollback(deploy_root: Path, env: str, build_id: str | None = None) -> tuple[str | None, str]:
    """Point latest at an older ready build (default: the one before it) and hold it there."""
    ready = layout.ready_builds(deploy_root, env)
    if not ready:
        raise DeployError(build_id or env, f"no ready builds of {env!r} under {deploy_root}")
    ids = [r.build_id for r in ready]
    current = current_latest(deploy_root, env)
    if build_id is None:
        if current not in ids or ids.index(current) == 0:
            raise DeployError(env, f"no ready build older than latest ({current}) to roll back to")
        build_id = ids[ids.index(current) - 1]
    if build_id not in ids:
        raise DeployError(build_id, f"not a ready build of {env!r} here (ready: {', '.join(ids)})")
    newest = ready[-1]
    hold = Hold(env, build_id, newest.build_id, newest.created, isoformat(utcnow()))
    atomic_write_json(layout.hold_path(deploy_root, env), hold.to_dict())
    flip(deploy_root, env, build_id)
    return current, build_id
