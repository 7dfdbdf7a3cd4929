"""The hook's Starlette app: staff web page, JSON API, CI webhook, /healthz and /metrics.

`create_app(site)` is called by `nsls2-artifacts hook serve` (cli/hook_cmd.py) and by
the tests. Reads (pages, logs) are open; everything that queues, cancels or promotes
needs a bearer token (API), a signed-in session plus CSRF token (forms) or a valid
webhook signature. The work itself happens in queue.py and runner.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from ..config import SiteConfig
from ..errors import ArtifactsError
from ..fsutil import LockBusy, file_lock
from ..names import label_problem
from ..rollout import build_rollout, read_nodes, served_latest, user_message
from ..store import Store, open_store
from . import metrics
from .auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    SIGNIN_COOKIE,
    Auth,
    FailureLimiter,
    Session,
    load_or_create_key,
)
from .diff import diff_builds, previous_build
from .envs import is_env, list_envs, summary
from .nightly import Schedule, run_nightly, site_schedule
from .queue import BuildQueue
from .runner import Runner

log = logging.getLogger("nsls2_artifacts.hook")

MAX_BODY = 1024 * 1024  # a GitHub release payload is ~20 kB; refuse anything silly
LOG_CHUNK = 256 * 1024


class HookStateBusyError(ArtifactsError):
    """Another hook process already serves this state directory."""


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


# -- small helpers ---------------------------------------------------------------------------


def _size(value: int | None) -> str:
    if value is None:
        return ""
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("nsls2_artifacts", "hook/templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = _size
    env.filters["duration"] = _duration
    return env


def _hook(request: Request) -> Hook:
    return request.app.state.hook


def _session(request: Request) -> Session | None:
    return _hook(request).auth.session(request.cookies.get(SESSION_COOKIE))


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    hook = _hook(request)
    html = hook.templates.get_template(name).render(
        request=request,
        session=_session(request),
        paused=hook.queue.paused,
        **context,
    )
    return HTMLResponse(html, status_code=status)


def _error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return _page(request, "error.html", status=status, status_code=status, message=message)


def _json_error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="nsls2-hook"'} if status == 401 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _read_log(path: Path, offset: int, limit: int = LOG_CHUNK) -> tuple[str, int]:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(limit)
    except FileNotFoundError:
        return "", offset
    return data.decode(errors="replace"), offset + len(data)


def _tail_log(path: Path) -> tuple[str, int, bool]:
    """The end of a log for the page: (text, size, truncated)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "", 0, False
    start = max(0, size - LOG_CHUNK)
    text, end = _read_log(path, start, size - start)
    return text, end, start > 0


async def _read_body(request: Request) -> bytes | None:
    """The raw body, or None once it grows past MAX_BODY (read no further than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_body(request: Request) -> tuple[Any, Response | None]:
    """The request's JSON body, or a 413/422 response saying what is wrong with it."""
    body = await _read_body(request)
    if body is None:
        return None, _json_error(413, f"request body is larger than {MAX_BODY} bytes")
    try:
        return json.loads(body), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, _json_error(422, f"malformed JSON: {exc}")


# -- pages -------------------------------------------------------------------------------------


def index(request: Request) -> HTMLResponse:
    hook = _hook(request)
    active = hook.queue.active()
    nodes, nodes_error = _nodes(hook)
    envs = [
        {
            "summary": summary(hook.site, hook.store, name),
            "serving": served_latest(nodes, name),
            "last": hook.queue.last_finished(name),
            "active": [r for r in active if r.env == name],
        }
        for name in list_envs(hook.site)
    ]
    return _page(
        request,
        "index.html",
        envs=envs,
        active=active,
        history=hook.queue.history(limit=50),
        nodes=nodes,
        nodes_error=nodes_error,
        schedule=hook.schedule,
        nightly_next=hook.queue.get_meta("nightly_next"),
    )


def env_page(request: Request) -> HTMLResponse:
    hook = _hook(request)
    env = request.path_params["env"]
    if not is_env(hook.site, env):
        return _error_page(request, 404, f"no environment {env!r} in {hook.site.manifests}")
    return _page(
        request,
        "env.html",
        env=env,
        summary=summary(hook.site, hook.store, env),
        history=hook.queue.history(env=env, limit=50),
        promoted=request.query_params.get("promoted"),
    )


def _store_build_context(hook: Hook, env: str, build_id: str) -> dict[str, Any] | None:
    info = summary(hook.site, hook.store, env)
    build = next((b for b in info.builds if b.build_id == build_id), None)
    if build is None:
        return None
    return {
        "build": build,
        "labels": info.labels_for(build_id),
        "diff": diff_builds(previous_build(info.builds, build_id), build),
        "is_latest": info.latest is not None and info.latest.build_id == build_id,
    }


def _nodes(hook: Hook) -> tuple[list[Any], str]:
    return read_nodes(hook.store, hook.site.agent.node_ttl_seconds)


def _rollout(hook: Hook, env: str, build_id: str) -> dict[str, Any] | None:
    """ENV/BUILD_ID across the nodes (from their reports in the store), plus the message
    staff send users once every live node serves it; None if the build is not in the store."""
    context = _store_build_context(hook, env, build_id)
    if context is None:
        return None
    build, diff = context["build"], context["diff"]
    nodes, error = _nodes(hook)
    view = build_rollout(nodes, env, build_id, build.display_name, error)
    changed = [(c.name, c.old, c.new) for c in diff.changed]
    message = user_message(
        view.kernel, build, diff.added, diff.removed, changed, first=diff.old_build is None
    )
    return {**view.to_dict(), "message": message if view.complete else None}


def _rollout_html(hook: Hook, rollout: dict[str, Any]) -> str:
    macro = hook.templates.get_template("macros.html").module.rollout_section  # type: ignore[attr-defined]
    return str(macro(rollout))


def build_rollout_json(request: Request) -> JSONResponse:
    """The rollout of a request's build, for the build page's live section (polled)."""
    hook = _hook(request)
    record = hook.queue.get(request.path_params["id"])
    if record is None:
        return _json_error(404, f"no build request #{request.path_params['id']}")
    rollout = None
    if record.build_id and is_env(hook.site, record.env):
        rollout = _rollout(hook, record.env, record.build_id)
    html = _rollout_html(hook, rollout) if rollout else ""
    return JSONResponse(
        {"state": record.state, "done": record.done, "rollout": rollout, "html": html}
    )


def store_build_page(request: Request) -> HTMLResponse:
    hook = _hook(request)
    env, build_id = request.path_params["env"], request.path_params["build_id"]
    if not is_env(hook.site, env):
        return _error_page(request, 404, f"no environment {env!r} in {hook.site.manifests}")
    context = _store_build_context(hook, env, build_id)
    if context is None:
        return _error_page(request, 404, f"no committed build {env}/{build_id} in the store")
    return _page(
        request,
        "store_build.html",
        env=env,
        rollout=_rollout(hook, env, build_id),
        request_record=hook.queue.for_build_id(env, build_id),
        promoted=request.query_params.get("promoted"),
        **context,
    )


def build_page(request: Request) -> HTMLResponse:
    hook = _hook(request)
    record = hook.queue.get(request.path_params["id"])
    if record is None:
        return _error_page(request, 404, f"no build request #{request.path_params['id']}")
    text, offset, truncated = _tail_log(hook.runner.log_path(record.id))
    store_context = rollout = None
    if record.build_id and is_env(hook.site, record.env):
        store_context = _store_build_context(hook, record.env, record.build_id)
        rollout = _rollout(hook, record.env, record.build_id)
    return _page(
        request,
        "build.html",
        record=record,
        rollout=rollout,
        log_text=text,
        log_offset=offset,
        log_truncated=truncated,
        store=store_context,
    )


def build_log(request: Request) -> JSONResponse:
    """Log text from `offset` on, for the page's live log (polled while a build runs)."""
    hook = _hook(request)
    record = hook.queue.get(request.path_params["id"])
    if record is None:
        return _json_error(404, f"no build request #{request.path_params['id']}")
    try:
        offset = max(0, int(request.query_params.get("offset", "0")))
    except ValueError:
        return _json_error(422, "offset must be an integer")
    text, end = _read_log(hook.runner.log_path(record.id), offset)
    more = len(text.encode()) >= LOG_CHUNK
    return JSONResponse(
        {"text": text, "offset": end, "state": record.state, "done": record.done and not more}
    )


# -- sign-in and forms -----------------------------------------------------------------------


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _safe_next(value: str | None) -> str:
    # Only local paths: never redirect a signed-in user to another site.
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def signin_form(request: Request, status: int = 200, error: str = "") -> HTMLResponse:
    nonce, cookie = _hook(request).auth.new_signin_nonce()
    response = _page(
        request,
        "signin.html",
        status=status,
        nonce=nonce,
        error=error,
        next=_safe_next(request.query_params.get("next")),
    )
    _cookie(response, request, SIGNIN_COOKIE, cookie, 1800)
    return response


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _retry_after(hook: Hook, request: Request) -> int:
    """Whole seconds this client must wait after too many wrong tokens; 0 if none."""
    wait = hook.limiter.retry_after(_client(request))
    return int(wait) + 1 if wait else 0


async def signin(request: Request) -> Response:
    hook = _hook(request)
    form = await request.form()
    if not hook.auth.signin_nonce_ok(request.cookies.get(SIGNIN_COOKIE), form.get("csrf")):
        return _error_page(request, 403, "the sign-in form expired or was not ours; try again")
    if wait := _retry_after(hook, request):
        response = signin_form(
            request, status=429, error=f"Too many wrong tokens; try again in {wait} s."
        )
        response.headers["Retry-After"] = str(wait)
        return response
    client = _client(request)
    match = hook.auth.check_token(str(form.get("token", "")))
    if match is None:
        hook.limiter.failed(client)
        return signin_form(request, status=403, error="That token is not valid.")
    hook.limiter.succeeded(client)
    _session_record, cookie = hook.auth.new_session(match)
    response = RedirectResponse(_safe_next(str(form.get("next", "/"))), status_code=303)
    _cookie(response, request, SESSION_COOKIE, cookie, SESSION_SECONDS)
    response.delete_cookie(SIGNIN_COOKIE, path="/")
    return response


async def _form_session(request: Request) -> tuple[Session | None, Any, Response | None]:
    """(session, form, error response): a form POST needs a session and its CSRF token."""
    form = await request.form()
    session = _session(request)
    if session is None:
        return (
            None,
            form,
            _error_page(request, 403, "sign in first: this action needs a staff token"),
        )
    if not Auth.csrf_ok(session, form.get("csrf")):
        return None, form, _error_page(request, 403, "missing or wrong CSRF token; reload the page")
    return session, form, None


async def signout(request: Request) -> Response:
    session, _form, error = await _form_session(request)
    if error:
        return error
    assert session is not None
    await run_in_threadpool(_hook(request).auth.end_session, session)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def form_build(request: Request) -> Response:
    hook = _hook(request)
    session, _form, error = await _form_session(request)
    if error:
        return error
    env = request.path_params["env"]
    if not is_env(hook.site, env):
        return _error_page(request, 404, f"no environment {env!r} in {hook.site.manifests}")
    record, _joined = await run_in_threadpool(
        hook.queue.request, env, source="web", requested_by=session.who
    )
    hook.runner.wake()
    return RedirectResponse(f"/builds/{record.id}", status_code=303)


async def form_cancel(request: Request) -> Response:
    hook = _hook(request)
    session, _form, error = await _form_session(request)
    if error:
        return error
    build = request.path_params["id"]
    if hook.queue.get(build) is None:
        return _error_page(request, 404, f"no build request #{build}")
    await hook.runner.cancel(build, session.who)
    return RedirectResponse(f"/builds/{build}", status_code=303)


async def form_promote(request: Request) -> Response:
    hook = _hook(request)
    _session_record, form, error = await _form_session(request)
    if error:
        return error
    env = request.path_params["env"]
    build_id, label = str(form.get("build_id", "")), str(form.get("label", "")).strip()
    if not is_env(hook.site, env):
        return _error_page(request, 404, f"no environment {env!r} in {hook.site.manifests}")
    if problem := label_problem(label):
        return _error_page(request, 422, problem)
    if await run_in_threadpool(_store_build_context, hook, env, build_id) is None:
        return _error_page(request, 404, f"no committed build {env}/{build_id} in the store")
    ok, output = await hook.runner.promote(env, build_id, label)
    if not ok:
        return _error_page(
            request, 500, f"promote {env} {build_id} --lts {label} failed:\n{output}"
        )
    return RedirectResponse(
        f"/envs/{quote(env)}/builds/{quote(build_id)}?promoted={quote(label)}", status_code=303
    )


# -- API ---------------------------------------------------------------------------------------


def _api_auth(request: Request) -> tuple[str | None, Response | None]:
    hook = _hook(request)
    if wait := _retry_after(hook, request):
        response = _json_error(429, f"too many wrong tokens; try again in {wait} s")
        response.headers["Retry-After"] = str(wait)
        return None, response
    status, match = hook.auth.bearer(request.headers.get("authorization"))
    if status == 401:
        return None, _json_error(401, "missing bearer token (Authorization: Bearer TOKEN)")
    if status == 403:
        hook.limiter.failed(_client(request))
        return None, _json_error(403, "token not accepted")
    return hook.auth.who(match), None


async def api_request_build(request: Request) -> Response:
    hook = _hook(request)
    who, error = _api_auth(request)
    if error:
        return error
    data, error = await _json_body(request)
    if error:
        return error
    if not isinstance(data, dict) or not isinstance(data.get("env"), str):
        return _json_error(422, 'expected a JSON object like {"env": "base"}')
    env = data["env"]
    if not is_env(hook.site, env):
        return _json_error(404, f"no environment {env!r}", envs=list_envs(hook.site))
    record, joined = await run_in_threadpool(
        hook.queue.request, env, source="api", requested_by=who
    )
    hook.runner.wake()
    return JSONResponse(
        {"id": record.id, "env": env, "state": record.state, "joined": joined,
         "url": f"/builds/{record.id}"},
        status_code=202,
    )  # fmt: skip


async def api_get_build(request: Request) -> Response:
    _who, error = _api_auth(request)
    if error:
        return error
    hook = _hook(request)
    record = await run_in_threadpool(hook.queue.get, request.path_params["id"])
    if record is None:
        return _json_error(404, f"no build request #{request.path_params['id']}")
    rollout = None
    if record.build_id and is_env(hook.site, record.env):
        rollout = await run_in_threadpool(_rollout, hook, record.env, record.build_id)
    return JSONResponse({**record.to_dict(), "rollout": rollout})


async def api_list_builds(request: Request) -> Response:
    _who, error = _api_auth(request)
    if error:
        return error
    hook = _hook(request)
    env = request.query_params.get("env")
    records = await run_in_threadpool(lambda: hook.queue.history(env=env, limit=200))
    return JSONResponse([r.to_dict() for r in records])


async def api_cancel_build(request: Request) -> Response:
    who, error = _api_auth(request)
    if error:
        return error
    hook = _hook(request)
    build = request.path_params["id"]
    if hook.queue.get(build) is None:
        return _json_error(404, f"no build request #{build}")
    cancelled = await hook.runner.cancel(build, who)
    return JSONResponse({"id": build, "cancelled": cancelled, **hook.queue.get(build).to_dict()})


def _env_info(hook: Hook, name: str, nodes: list[Any]) -> dict[str, Any]:
    info = summary(hook.site, hook.store, name)
    last = hook.queue.last_finished(name)
    serving, serving_detail = served_latest(nodes, name)
    return {
        "env": name,
        "latest": info.latest.build_id if info.latest else None,
        "serving": serving,  # what live nodes' `latest` points at (users get this one)
        "serving_detail": serving_detail,
        "builds": [b.build_id for b in info.builds],
        "lts": {r.label: r.build_id for r in info.lts},
        "last_build": last.to_dict() if last else None,
        "store_error": info.error or None,
    }


async def api_envs(request: Request) -> Response:
    _who, error = _api_auth(request)
    if error:
        return error
    hook = _hook(request)

    def infos() -> list[dict[str, Any]]:
        nodes, _error = _nodes(hook)
        return [_env_info(hook, n, nodes) for n in list_envs(hook.site)]

    envs = await run_in_threadpool(infos)
    return JSONResponse(envs)


async def api_queue(request: Request) -> Response:
    """GET: the queue; POST {"paused": bool}: hold or release it (e.g. store maintenance)."""
    _who, error = _api_auth(request)
    if error:
        return error
    hook = _hook(request)
    if request.method == "POST":
        data, error = await _json_body(request)
        if error:
            return error
        if not isinstance(data, dict) or not isinstance(data.get("paused"), bool):
            return _json_error(422, 'expected a JSON object like {"paused": true}')
        await run_in_threadpool(hook.queue.set_paused, data["paused"])
        hook.runner.wake()
    active = await run_in_threadpool(hook.queue.active)
    return JSONResponse({"paused": hook.queue.paused, "active": [r.to_dict() for r in active]})


def _webhook_tag(payload: dict[str, Any]) -> str:
    """The tag (or branch) a CI payload is about: a release's tag_name, a push's ref."""
    release = payload.get("release")
    if isinstance(release, dict) and isinstance(release.get("tag_name"), str):
        return release["tag_name"][:100]
    ref = payload.get("ref")
    if isinstance(ref, str) and ref:
        return ref.removeprefix("refs/tags/").removeprefix("refs/heads/")[:100]
    return ""


async def webhook(request: Request) -> Response:
    """A CI job asks for builds: HMAC-signed body; envs come from hook.webhook_repos."""
    hook = _hook(request)
    body = await _read_body(request)
    if body is None:
        return _json_error(413, f"request body is larger than {MAX_BODY} bytes")
    signature = request.headers.get("x-hub-signature-256")
    if not hook.auth.webhook_secret:
        return _json_error(
            403, f"webhook disabled: ${hook.site.hook.webhook_secret_env} is not set"
        )
    if not signature:
        return _json_error(401, "missing X-Hub-Signature-256 header")
    if not hook.auth.webhook_ok(body, signature):
        return _json_error(403, "X-Hub-Signature-256 does not match the body")
    delivery = request.headers.get("x-github-delivery", "").strip()
    if not delivery or len(delivery) > 200:
        return _json_error(400, "missing X-GitHub-Delivery header (a unique id per delivery)")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return _json_error(422, f"malformed JSON: {exc}")
    if request.headers.get("x-github-event") == "ping":
        return JSONResponse({"pong": True})
    repo = payload.get("repository", {}).get("full_name") if isinstance(payload, dict) else None
    if not isinstance(repo, str):
        return _json_error(422, "payload has no repository.full_name")
    # GitHub treats owner/name case-insensitively; so does the config lookup.
    repos = {name.lower(): envs for name, envs in hook.site.hook.webhook_repos.items()}
    wanted = repos.get(repo.lower())
    if not wanted:
        return _json_error(404, f"repository {repo!r} is not in hook.webhook_repos")
    envs = [e for e in wanted if is_env(hook.site, e)]
    if not envs:
        return _json_error(404, f"none of {wanted} (for {repo}) has a manifest")
    if not await run_in_threadpool(hook.auth.first_delivery, delivery, body):
        return _json_error(409, f"delivery {delivery} (or the same body) was already received")
    builds = []
    who = f"webhook:{repo}" + (f" {tag}" if (tag := _webhook_tag(payload)) else "")
    for env in envs:
        record, joined = await run_in_threadpool(
            hook.queue.request, env, source="webhook", requested_by=who
        )
        builds.append({"env": env, "id": record.id, "joined": joined})
    hook.runner.wake()
    return JSONResponse({"builds": builds, "ids": [b["id"] for b in builds]}, status_code=202)


# -- ops ---------------------------------------------------------------------------------------


def healthz(request: Request) -> Response:
    hook = _hook(request)
    try:
        active = hook.queue.active()
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
            "paused": hook.queue.paused,
        }
    )


def metrics_page(request: Request) -> Response:
    return PlainTextResponse(
        metrics.render(_hook(request).queue), media_type="text/plain; version=0.0.4"
    )


# -- the app -----------------------------------------------------------------------------------


def _routes() -> list[Route]:
    return [
        Route("/", index),
        Route("/signin", signin_form, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/envs/{env}", env_page),
        Route("/envs/{env}/build", form_build, methods=["POST"]),
        Route("/envs/{env}/promote", form_promote, methods=["POST"]),
        Route("/envs/{env}/builds/{build_id}", store_build_page),
        Route("/builds/{id:int}", build_page),
        Route("/builds/{id:int}/log", build_log),
        Route("/builds/{id:int}/rollout", build_rollout_json),
        Route("/builds/{id:int}/cancel", form_cancel, methods=["POST"]),
        Route("/api/builds", api_request_build, methods=["POST"]),
        Route("/api/builds", api_list_builds, methods=["GET"]),
        Route("/api/builds/{id:int}", api_get_build, methods=["GET"]),
        Route("/api/builds/{id:int}/cancel", api_cancel_build, methods=["POST"]),
        Route("/api/envs", api_envs, methods=["GET"]),
        Route("/api/queue", api_queue, methods=["GET", "POST"]),
        Route("/api/webhook", webhook, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/metrics", metrics_page),
    ]


def create_app(site: SiteConfig) -> Starlette:
    """The hook for `site`: routes plus, while serving, the build runner and nightly timer."""
    state_dir = Path(site.hook_state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    queue = BuildQueue(state_dir / "hook.sqlite")
    secret = os.environ.get(site.hook.webhook_secret_env) or None
    store = open_store(site)
    hook = Hook(
        site=site,
        queue=queue,
        runner=Runner(site, queue, state_dir / "logs"),
        auth=Auth(
            site.hook.tokens_sha256,
            load_or_create_key(state_dir / "session.key"),
            secret,
            memory=queue,
            names=site.hook.token_names,
        ),
        store=store,
        templates=_templates(),
        schedule=site_schedule(site),
        limiter=FailureLimiter(
            site.hook.max_failed_signins, site.hook.failed_signin_window_seconds
        ),
    )

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
            recovered = hook.runner.recover()
            if recovered:
                log.warning(
                    "marked builds %s failed: the previous hook stopped mid-build", recovered
                )
            hook.tasks["runner"] = asyncio.create_task(hook.runner.run_forever())
            hook.tasks["history"] = asyncio.create_task(
                hook.runner.forget_history_daily(site.hook.keep_history_days)
            )
            if hook.schedule is not None:
                hook.tasks["nightly"] = asyncio.create_task(
                    run_nightly(site, hook.schedule, queue, hook.runner.wake)
                )
            yield
            for task in hook.tasks.values():
                task.cancel()
            await hook.runner.shutdown()
        finally:
            lock.__exit__(None, None, None)

    app = Starlette(routes=_routes(), lifespan=lifespan)
    app.state.hook = hook
    return app
