"""What every part of the hook app shares: the `Hook` (site, queue, runner, auth, store)
and the read-side views that both the pages and the JSON API show.

Built once by `app.create_app`; read by `pages`, `api` and `webhook`. Everything here
that touches SQLite, the store or a log file blocks: callers run it in a thread
(`starlette.concurrency.run_in_threadpool`, or a sync endpoint, which Starlette runs
in its thread pool), never on the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment
from starlette.requests import Request

from ..config import SiteConfig
from ..errors import PromoteRefusedError
from ..records import BuildManifest
from ..rollout import (
    NodeSeen,
    build_failures,
    build_rollout,
    read_nodes,
    reason_gist,
    served_latest,
    user_message,
)
from ..store import Store
from .auth import Auth, FailureLimiter
from .diff import diff_builds, previous_build
from .envs import smoke_lines, summary
from .nightly import Schedule
from .queue import BuildQueue
from .runner import Runner

LOG_CHUNK = 256 * 1024  # the most log text one page or poll returns


@dataclass
class Hook:
    """Everything the routes need, built once per app (no globals)."""

    site: SiteConfig
    queue: BuildQueue
    runner: Runner
    auth: Auth
    store: Store
    templates: Environment
    schedule: Schedule | None
    limiter: FailureLimiter  # wrong tokens per client address
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # background loops


def hook_of(request: Request) -> Hook:
    return request.app.state.hook


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# -- store builds and their rollout ----------------------------------------------------------


def store_build_context(hook: Hook, env: str, build_id: str) -> dict[str, Any] | None:
    """ENV/BUILD_ID as the store has it, with its labels and diff; None if not committed."""
    info = summary(hook.site, hook.store, env)
    build = next((b for b in info.builds if b.build_id == build_id), None)
    if build is None:
        return None
    return {
        "build": build,
        "labels": info.labels_for(build_id),
        "diff": diff_builds(previous_build(info.builds, build_id), build),
        "is_latest": info.latest is not None and info.latest.build_id == build_id,
        "failures": failures(hook, env, build_id),
    }


def nodes(hook: Hook) -> tuple[list[NodeSeen], str]:
    return read_nodes(hook.store, hook.site.agent.node_ttl_seconds)


def failures(hook: Hook, env: str, build_id: str) -> dict[str, str]:
    """Node -> reason for the nodes that report ENV/BUILD_ID failed (promote refuses it)."""
    seen, _error = nodes(hook)
    return build_failures(seen, env, build_id)


def promote_refusal(env: str, build_id: str, failed: dict[str, str]) -> PromoteRefusedError:
    """Why the page and the API refuse to promote a failed build (each reason's gist)."""
    gists = {node: reason_gist(reason) for node, reason in failed.items()}
    return PromoteRefusedError(env, build_id, gists)


def fixes(hook: Hook, build: BuildManifest, missing: list[str]) -> list[dict[str, str]]:
    """What to change for each module a failure names: the `smoke:` line of nsls2.yaml
    when the build's own smoke list imports it, else a node's `agent.node_imports`."""
    advice = []
    for module in missing:
        top = module.split(".")[0]
        if module in build.smoke or top in build.smoke:
            where = "\n".join(smoke_lines(hook.site, build.name, top)) or (
                f"manifests/{build.name}/nsls2.yaml: smoke: {list(build.smoke)}"
            )
            text = (
                f"{module} is in this env's smoke list but not in the build: add the "
                f"package that provides it to manifests/{build.name}/pixi.toml, or remove "
                f"it from smoke:, then build again"
            )
        else:
            where = "agent.node_imports in the failing nodes' site config"
            text = (
                f"{module} is not in this env's smoke list: the failing nodes import it "
                f"for their users (agent.node_imports); add the package to "
                f"manifests/{build.name}/pixi.toml, or drop it from those nodes' node_imports"
            )
        advice.append({"module": module, "where": where, "text": text})
    return advice


def rollout(hook: Hook, env: str, build_id: str) -> dict[str, Any] | None:
    """ENV/BUILD_ID across the nodes (from their reports in the store), plus the message
    staff send users once every live node serves it; None if the build is not in the store."""
    context = store_build_context(hook, env, build_id)
    if context is None:
        return None
    build, diff = context["build"], context["diff"]
    seen, error = nodes(hook)
    view = build_rollout(seen, env, build_id, build.display_name, error)
    changed = [(c.name, c.old, c.new) for c in diff.changed]
    message = user_message(
        view.kernel, build, diff.added, diff.removed, changed, first=diff.old_build is None
    )
    return {
        **view.to_dict(),
        "message": message if view.complete else None,
        "fix": fixes(hook, build, view.missing),
    }


def env_info(hook: Hook, name: str, seen: list[NodeSeen]) -> dict[str, Any]:
    """One env for `GET /api/envs`: the store's builds and what live nodes serve."""
    info = summary(hook.site, hook.store, name)
    last = hook.queue.last_finished(name)
    serving, serving_detail = served_latest(seen, name)
    failed = {b.build_id: f for b in info.builds if (f := build_failures(seen, name, b.build_id))}
    return {
        "env": name,
        "latest": info.latest.build_id if info.latest else None,  # the store's newest
        "serving": serving,  # what live nodes' `latest` points at (users get this one)
        "serving_detail": serving_detail,
        "failed": failed,  # build -> {node: reason}: builds nodes refused (never latest)
        "builds": [b.build_id for b in info.builds],
        "lts": {r.label: r.build_id for r in info.lts},
        "last_build": last.to_dict() if last else None,
        "store_error": info.error or None,
    }


# -- build logs ------------------------------------------------------------------------------


def read_log(path: Path, offset: int, limit: int = LOG_CHUNK) -> tuple[str, int]:
    """Log text from byte `offset` on (at most `limit` bytes) and the offset after it."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(limit)
    except FileNotFoundError:
        return "", offset
    return data.decode(errors="replace"), offset + len(data)


def tail_log(path: Path) -> tuple[str, int, bool]:
    """The end of a log for the page: (text, size, truncated)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "", 0, False
    start = max(0, size - LOG_CHUNK)
    text, end = read_log(path, start, size - start)
    return text, end, start > 0
