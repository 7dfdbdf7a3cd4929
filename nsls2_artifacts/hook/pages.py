"""The staff web pages (HTML): environments, build requests, store builds, sign-in, and
the forms that build, cancel and promote.

`app.create_app` mounts `routes()`. GET pages are plain functions, which Starlette runs
in its thread pool (they read SQLite, the store and logs); the POST handlers await the
form on the event loop and do everything else through `run_in_threadpool`. Every form
POST goes through one check, `staff_form`: a signed-in session and its CSRF token.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..names import label_problem
from ..rollout import build_failures, served_latest
from .auth import SESSION_COOKIE, SESSION_SECONDS, SIGNIN_COOKIE, Auth, Session
from .context import (
    LOG_CHUNK,
    Hook,
    client_address,
    hook_of,
    nodes,
    promote_refusal,
    read_log,
    rollout,
    store_build_context,
    tail_log,
)
from .envs import is_env, list_envs, summary
from .queue import PUBLISHED, BuildRequest
from .web import json_error

# -- templates -------------------------------------------------------------------------------


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


def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("nsls2_artifacts", "hook/templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = _size
    env.filters["duration"] = _duration
    return env


def _session(request: Request) -> Session | None:
    return hook_of(request).auth.session(request.cookies.get(SESSION_COOKIE))


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render a page (blocking: the session check and the pause flag read SQLite)."""
    hook = hook_of(request)
    html = hook.templates.get_template(name).render(
        request=request,
        session=_session(request),
        paused=hook.queue.paused,
        **context,
    )
    return HTMLResponse(html, status_code=status)


def _error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return _page(request, "error.html", status=status, status_code=status, message=message)


async def _error(request: Request, status: int, message: object) -> HTMLResponse:
    """`_error_page` from an async handler (off the event loop)."""
    return await run_in_threadpool(_error_page, request, status, str(message))


def _no_env(request: Request, env: str) -> HTMLResponse:
    return _error_page(request, 404, f"no environment {env!r} in {hook_of(request).site.manifests}")


# -- pages (sync: Starlette runs them in its thread pool) ------------------------------------


def index(request: Request) -> HTMLResponse:
    hook = hook_of(request)
    active = hook.queue.active()
    seen, nodes_error = nodes(hook)
    envs = []
    for name in list_envs(hook.site):
        info = summary(hook.site, hook.store, name)
        newest = info.latest.build_id if info.latest else None
        envs.append(
            {
                "summary": info,
                "serving": served_latest(seen, name),
                # a build the nodes refused is never "on its way": say it failed
                "newest_failed": build_failures(seen, name, newest) if newest else {},
                "last": hook.queue.last_finished(name),
                "active": [r for r in active if r.env == name],
            }
        )
    return _page(
        request,
        "index.html",
        envs=envs,
        active=active,
        history=hook.queue.history(limit=50),
        nodes=seen,
        nodes_error=nodes_error,
        schedule=hook.schedule,
        nightly_next=hook.queue.get_meta("nightly_next"),
    )


def env_page(request: Request) -> HTMLResponse:
    hook = hook_of(request)
    env = request.path_params["env"]
    if not is_env(hook.site, env):
        return _no_env(request, env)
    info = summary(hook.site, hook.store, env)
    seen, _error = nodes(hook)
    served, served_detail = served_latest(seen, env)
    return _page(
        request,
        "env.html",
        env=env,
        summary=info,
        served=served,  # "latest" is what live nodes serve, never merely the newest
        served_detail=served_detail,
        failed={b.build_id: f for b in info.builds if (f := build_failures(seen, env, b.build_id))},
        history=hook.queue.history(env=env, limit=50),
        promoted=request.query_params.get("promoted"),
    )


def store_build_page(request: Request) -> HTMLResponse:
    hook = hook_of(request)
    env, build_id = request.path_params["env"], request.path_params["build_id"]
    if not is_env(hook.site, env):
        return _no_env(request, env)
    context = store_build_context(hook, env, build_id)
    if context is None:
        return _error_page(request, 404, f"no committed build {env}/{build_id} in the store")
    return _page(
        request,
        "store_build.html",
        env=env,
        rollout=rollout(hook, env, build_id),
        request_record=hook.queue.for_build_id(env, build_id),
        promoted=request.query_params.get("promoted"),
        **context,
    )


def request_page(request: Request) -> HTMLResponse:
    """One build request: its log, the build it made, that build's rollout and diff."""
    hook = hook_of(request)
    request_id = request.path_params["id"]
    record = hook.queue.get(request_id)
    if record is None:
        return _error_page(request, 404, f"no build request #{request_id}")
    text, offset, truncated = tail_log(hook.runner.log_path(record.id))
    store_context = view = None
    if record.build_id and is_env(hook.site, record.env):
        store_context = store_build_context(hook, record.env, record.build_id)
        view = _request_rollout(hook, record)
    return _page(
        request,
        "build.html",
        record=record,
        rollout=view,
        log_text=text,
        log_offset=offset,
        log_truncated=truncated,
        store=store_context,
    )


def request_log(request: Request) -> JSONResponse:
    """Log text from `offset` on, for the page's live log (polled while a build runs)."""
    hook = hook_of(request)
    record = hook.queue.get(request.path_params["id"])
    if record is None:
        return json_error(404, f"no build request #{request.path_params['id']}")
    try:
        offset = max(0, int(request.query_params.get("offset", "0")))
    except ValueError:
        return json_error(422, "offset must be an integer")
    text, end = read_log(hook.runner.log_path(record.id), offset)
    more = len(text.encode()) >= LOG_CHUNK
    return JSONResponse(
        {"text": text, "offset": end, "state": record.state, "done": record.done and not more}
    )


def _request_rollout(hook: Hook, record: BuildRequest) -> dict[str, Any] | None:
    """The rollout of the build a request *published*; None otherwise (a "no change"
    request names the existing newest build, but nothing new rolls out)."""
    if record.state != PUBLISHED or not record.build_id or not is_env(hook.site, record.env):
        return None
    return rollout(hook, record.env, record.build_id)


def _rollout_html(hook: Hook, view: dict[str, Any]) -> str:
    macro = hook.templates.get_template("macros.html").module.rollout_section  # type: ignore[attr-defined]
    return str(macro(view))


def request_rollout(request: Request) -> JSONResponse:
    """The rollout of a request's build, for the request page's live section (polled)."""
    hook = hook_of(request)
    record = hook.queue.get(request.path_params["id"])
    if record is None:
        return json_error(404, f"no build request #{request.path_params['id']}")
    view = _request_rollout(hook, record)
    html = _rollout_html(hook, view) if view else ""
    return JSONResponse({"state": record.state, "done": record.done, "rollout": view, "html": html})


# -- sign-in ---------------------------------------------------------------------------------


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
    nonce, cookie = hook_of(request).auth.new_signin_nonce()
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


def _signin(request: Request, form: FormData) -> Response:
    hook = hook_of(request)
    if not hook.auth.signin_nonce_ok(request.cookies.get(SIGNIN_COOKIE), form.get("csrf")):
        return _error_page(request, 403, "the sign-in form expired or was not ours; try again")
    # The token first: a valid one always signs in, however many wrong ones came from
    # this address (a proxy or NAT address is shared); only wrong ones are limited.
    match = hook.auth.check_token(str(form.get("token", "")))
    if match is None:
        if wait := hook.limiter.wrong_token(client_address(request)):
            seconds = int(wait) + 1
            response = signin_form(
                request, status=429, error=f"Too many wrong tokens; try again in {seconds} s."
            )
            response.headers["Retry-After"] = str(seconds)
            return response
        return signin_form(request, status=403, error="That token is not valid.")
    _session_record, cookie = hook.auth.new_session(match)
    response = RedirectResponse(_safe_next(str(form.get("next", "/"))), status_code=303)
    _cookie(response, request, SESSION_COOKIE, cookie, SESSION_SECONDS)
    response.delete_cookie(SIGNIN_COOKIE, path="/")
    return response


async def signin(request: Request) -> Response:
    form = await request.form()
    return await run_in_threadpool(_signin, request, form)


# -- forms -----------------------------------------------------------------------------------


def _form_problem(request: Request, form: FormData) -> tuple[Session | None, Response | None]:
    """(session, None) for a signed-in form POST with its CSRF token, else (None, page)."""
    session = _session(request)
    if session is None:
        return None, _error_page(request, 403, "sign in first: this action needs a staff token")
    if not Auth.csrf_ok(session, form.get("csrf")):
        return None, _error_page(request, 403, "missing or wrong CSRF token; reload the page")
    return session, None


StaffForm = Callable[[Request, Hook, Session, FormData], Awaitable[Response]]


def staff_form(endpoint: StaffForm) -> Callable[[Request], Awaitable[Response]]:
    """The one check of every form POST: `endpoint(request, hook, session, form)` runs
    only for a signed-in session whose CSRF token the form carries."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        form = await request.form()
        session, error = await run_in_threadpool(_form_problem, request, form)
        if error is not None:
            return error
        assert session is not None
        return await endpoint(request, hook_of(request), session, form)

    return guarded


@staff_form
async def signout(request: Request, hook: Hook, session: Session, form: FormData) -> Response:
    await run_in_threadpool(hook.auth.end_session, session)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@staff_form
async def form_build(request: Request, hook: Hook, session: Session, form: FormData) -> Response:
    env = request.path_params["env"]
    if not await run_in_threadpool(is_env, hook.site, env):
        return await run_in_threadpool(_no_env, request, env)
    record, _joined = await run_in_threadpool(
        hook.queue.request, env, source="web", requested_by=session.who
    )
    hook.runner.wake()
    return RedirectResponse(f"/builds/{record.id}", status_code=303)


@staff_form
async def form_cancel(request: Request, hook: Hook, session: Session, form: FormData) -> Response:
    request_id = request.path_params["id"]
    if await run_in_threadpool(hook.queue.get, request_id) is None:
        return await _error(request, 404, f"no build request #{request_id}")
    await hook.runner.cancel(request_id, session.who)
    return RedirectResponse(f"/builds/{request_id}", status_code=303)


@staff_form
async def form_promote(request: Request, hook: Hook, session: Session, form: FormData) -> Response:
    env = request.path_params["env"]
    build_id, label = str(form.get("build_id", "")), str(form.get("label", "")).strip()
    if not await run_in_threadpool(is_env, hook.site, env):
        return await run_in_threadpool(_no_env, request, env)
    if problem := label_problem(label):
        return await _error(request, 422, problem)
    context = await run_in_threadpool(store_build_context, hook, env, build_id)
    if context is None:
        return await _error(request, 404, f"no committed build {env}/{build_id} in the store")
    allow_failed = form.get("allow_failed") == "1"
    if context["failures"] and not allow_failed:
        refused = promote_refusal(env, build_id, context["failures"])
        hint = "On the page: tick “Promote anyway” next to the Promote button."
        return await _error(request, 409, f"{refused}\n\n{hint}")
    ok, output = await hook.runner.promote(env, build_id, label, allow_failed=allow_failed)
    if not ok:
        return await _error(
            request, 500, f"promote {env} {build_id} --lts {label} failed:\n{output}"
        )
    return RedirectResponse(
        f"/envs/{quote(env)}/builds/{quote(build_id)}?promoted={quote(label)}", status_code=303
    )


def routes() -> list[Route]:
    # /builds/N is a build *request*'s page (its id is the queue's); store builds live
    # under /envs/ENV/builds/BUILD_ID.
    return [
        Route("/", index),
        Route("/signin", signin_form, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/envs/{env}", env_page),
        Route("/envs/{env}/build", form_build, methods=["POST"]),
        Route("/envs/{env}/promote", form_promote, methods=["POST"]),
        Route("/envs/{env}/builds/{build_id}", store_build_page),
        Route("/builds/{id:int}", request_page),
        Route("/builds/{id:int}/log", request_log),
        Route("/builds/{id:int}/rollout", request_rollout),
        Route("/builds/{id:int}/cancel", form_cancel, methods=["POST"]),
    ]
