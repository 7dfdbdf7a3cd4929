"""The hook's app wiring: builds the `Hook`, mounts the pages, the JSON API and the
webhook, serves /healthz and /metrics, and runs the background loops while serving.

`create_app(site)` is called by `nsls2-artifacts hook serve` (cli/hook_cmd.py) and by
the tests. The routes live by audience: `pages` (staff in a browser), `api` (scripts,
bearer token), `webhook` (CI, HMAC signature); the work itself in queue.py and runner.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..config import SiteConfig
from ..errors import ArtifactsError
from ..fsutil import LockBusy, file_lock
from ..store import open_store
from . import api, metrics, pages, webhook
from .auth import Auth, FailureLimiter, new_session_key
from .builduser import check_build_user, hook_tokens
from .context import Hook, hook_of
from .nightly import run_nightly, site_schedule
from .queue import BuildQueue
from .runner import Runner

log = logging.getLogger("nsls2_artifacts.hook")


class HookStateBusyError(ArtifactsError):
    """Another hook process already serves this state directory."""


# -- ops (sync: Starlette runs them in its thread pool, off the event loop) ------------------


def healthz(request: Request) -> Response:
    hook = hook_of(request)
    try:
        active = hook.queue.active()
        paused = hook.queue.paused
    except Exception as exc:  # noqa: BLE001 - any database failure means unhealthy
        return JSONResponse({"ok": False, "error": f"queue database: {exc}"}, status_code=503)
    dead = [name for name, task in hook.tasks.items() if task.done()]
    if dead:
        return JSONResponse({"ok": False, "error": f"stopped: {', '.join(dead)}"}, status_code=503)
    return JSONResponse(
        {
            "ok": True,
            "queued": sum(r.state == "queued" for r in active),
            "running": sum(r.state == "running" for r in active),
            "paused": paused,
        }
    )


def metrics_page(request: Request) -> Response:
    return PlainTextResponse(
        metrics.render(hook_of(request).queue), media_type="text/plain; version=0.0.4"
    )


# -- the app ---------------------------------------------------------------------------------


def _routes() -> list[Route]:
    return [
        *pages.routes(),
        *api.routes(),
        *webhook.routes(),
        Route("/healthz", healthz),
        Route("/metrics", metrics_page),
    ]


def _hook(site: SiteConfig, state_dir: Path) -> Hook:
    build_user = check_build_user(site)  # first: it makes state_dir private
    tokens, names = hook_tokens(site)
    queue = BuildQueue(state_dir / "hook.sqlite")
    return Hook(
        site=site,
        queue=queue,
        runner=Runner(site, queue, state_dir / "logs", build_user=build_user),
        auth=Auth(
            tokens,
            new_session_key(state_dir),  # memory only: builds must not mint sessions
            os.environ.get(site.hook.webhook_secret_env) or None,
            memory=queue,
            names=names,
        ),
        store=open_store(site),
        templates=pages.templates(),
        schedule=site_schedule(site),
        limiter=FailureLimiter(
            site.hook.max_failed_signins, site.hook.failed_signin_window_seconds
        ),
    )


def _start_loops(hook: Hook) -> None:
    hook.tasks["runner"] = asyncio.create_task(hook.runner.run_forever())
    hook.tasks["history"] = asyncio.create_task(
        hook.runner.forget_history_daily(hook.site.hook.keep_history_days)
    )
    if hook.schedule is not None:
        hook.tasks["nightly"] = asyncio.create_task(
            run_nightly(hook.site, hook.schedule, hook.queue, hook.runner.wake)
        )


def create_app(site: SiteConfig) -> Starlette:
    """The hook for `site`: routes plus, while serving, the build runner and nightly timer."""
    state_dir = Path(site.hook_state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    hook = _hook(site, state_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            # One hook per state directory: two would both start the same queued builds.
            lock = file_lock(state_dir / "hook.lock", wait=False)
            lock.__enter__()
        except LockBusy:
            raise HookStateBusyError(
                f"another hook is already running with state directory {state_dir}"
            ) from None
        try:
            recovered = await asyncio.to_thread(hook.runner.recover)
            if recovered:
                log.warning(
                    "marked build requests %s failed: the previous hook stopped mid-build",
                    recovered,
                )
            _start_loops(hook)
            yield
            for task in hook.tasks.values():
                task.cancel()
            await hook.runner.shutdown()
        finally:
            lock.__exit__(None, None, None)

    app = Starlette(routes=_routes(), lifespan=lifespan)
    app.state.hook = hook
    return app
