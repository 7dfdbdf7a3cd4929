"""Does the build `latest` points at import on this node? Checked once per node and build.

Several nodes share one deploy root, so a build is deployed (and smoke-tested) once, on
whichever node took its lock; the other nodes may differ (CPU, drivers, mounts, the
modules their users need, `agent.node_imports`). After each pass `reconcile.run_pass`
asks `check_latest` to import the smoke modules plus the node's own with the env's python
here; the result is kept under state/nodecheck/NODE/ and goes into the node's rollout
report. It never moves `latest` (shared by every node): it tells staff which node fails.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .. import layout
from ..config import SiteConfig
from ..errors import DeployError
from ..fsutil import atomic_write_json
from ..records import BuildManifest, NodeCheck, RecordError, isoformat, utcnow
from . import latest
from .deploy import memory_limit_for, smoke_test
from .log import event


def _imports(site: SiteConfig, manifest: BuildManifest | None, ready_smoke: tuple[str, ...]):
    smoke = manifest.smoke if manifest else ready_smoke
    return tuple(dict.fromkeys([*smoke, *site.agent.node_imports]))


def _previous(path: Path, imports: tuple[str, ...]) -> str | None | bool:
    """The recorded result for these imports: a reason, None (passed), False (none yet)."""
    try:
        check = layout.read_record(path, NodeCheck.from_dict)
    except RecordError:
        return False  # unreadable: check again
    if check is None or check.imports != imports:
        return False  # none yet, or node_imports changed: check again
    return check.reason or None


def check_latest(
    site: SiteConfig, builds: dict[tuple[str, str], BuildManifest], log: logging.Logger
) -> dict[tuple[str, str], str]:
    """(env, build) -> why it fails to import here, for every env's latest target."""
    root, node = site.deploy_root, site.agent.node
    failures = {}
    for env in layout.deployed_envs(root):
        build_id = latest.current_latest(root, env)
        ready = layout.read_ready(root, env, build_id) if build_id else None
        if build_id is None or ready is None:
            continue
        imports = _imports(site, builds.get((env, build_id)), ready.smoke)
        if ready.node == node and not site.agent.node_imports:
            continue  # smoke-tested on this very node when it was deployed
        path = layout.node_check_path(root, node, env, build_id)
        result = _previous(path, imports)
        if result is False:
            limit = memory_limit_for(site, builds.get((env, build_id)))
            result = _run_check(site, env, build_id, imports, limit)
            check = NodeCheck(imports, result or "", isoformat(utcnow()))
            atomic_write_json(path, check.to_dict())
            if result:
                event(
                    log, "node-check-failed", logging.ERROR, env=env, build=build_id, reason=result
                )
            else:
                event(log, "node-check", env=env, build=build_id, imports=len(imports))
        if result:
            failures[(env, build_id)] = result
        _forget_gone(root, node, env)
    return failures


def _forget_gone(root: Path, node: str, env: str) -> None:
    """Drop the records of builds no longer deployed here (retention deleted them)."""
    present = set(layout.build_dirs(root, env))
    directory = layout.node_check_path(root, node, env, "x").parent
    for record in directory.glob("*.json"):
        if record.stem not in present:
            record.unlink(missing_ok=True)


def _run_check(
    site: SiteConfig, env: str, build_id: str, imports: tuple[str, ...], limit: int | None
) -> str | None:
    prefix = layout.build_dir(site.deploy_root, env, build_id)
    try:
        smoke_test(prefix, imports, site.agent.smoke_timeout_seconds, build_id, limit)
    except DeployError as exc:
        # the output's last line names the import that failed (the traceback is in the log)
        last = str(exc).removeprefix(f"{build_id}: ").rsplit(" | ", 1)[-1]
        return f"smoke import failed on this node: {last.removeprefix('smoke failed ')}"
    return None
