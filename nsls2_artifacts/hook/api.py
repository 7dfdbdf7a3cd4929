"""The hook's JSON API for scripts (`/api/*` except the webhook): queue, inspect and
cancel build requests, list envs, hold the queue.

`app.create_app` mounts `routes()`. Every endpoint takes its caller from one
dependency, `staff_api`, which checks the bearer token and the wrong-token limiter.
The integer in `/api/builds/N` is a build *request* id (the queue's row), not a store
build id; responses carry it as `request_id` and, for scripts written before the
rename, as `id`. Request bodies are typed records (`web.Body`): a missing field or one of
the wrong type is a 422 naming it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..names import label_problem
from .context import (
    Hook,
    client_address,
    env_info,
    hook_of,
    nodes,
    promote_refusal,
    rollout,
    store_build_context,
)
from .envs import is_env, list_envs
from .queue import PUBLISHED
from .web import Body, body_of, json_error

StaffEndpoint = Callable[[Request, Hook, str], Awaitable[Response]]


def _authenticate(hook: Hook, request: Request) -> tuple[str | None, Response | None]:
    """(who, None) for a configured bearer token, else (None, the 401/403/429 answer).

    The token is checked first: a valid one is never refused, however many wrong ones
    came from the same address (everyone behind a proxy or NAT shares it); only wrong
    tokens count, and past the limit they get 429 instead of 403."""
    status, match = hook.auth.bearer(request.headers.get("authorization"))
    if status == 401:
        return None, json_error(401, "missing bearer token (Authorization: Bearer TOKEN)")
    if status == 200 and match is not None:
        return hook.auth.who(match), None
    if wait := hook.limiter.wrong_token(client_address(request)):
        seconds = int(wait) + 1
        response = json_error(429, f"too many wrong tokens; try again in {seconds} s")
        response.headers["Retry-After"] = str(seconds)
        return None, response
    return None, json_error(403, "token not accepted")


def staff_api(endpoint: StaffEndpoint) -> Callable[[Request], Awaitable[Response]]:
    """The one auth dependency of the API: `endpoint(request, hook, who)` runs only for
    a caller with a valid bearer token; `who` names the token's owner for the history."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        hook = hook_of(request)
        who, error = _authenticate(hook, request)
        if error is not None:
            return error
        assert who is not None
        return await endpoint(request, hook, who)

    return guarded


class BuildBody(Body, frozen=True):
    RECORD: ClassVar[str] = "POST /api/builds body"
    EXAMPLE: ClassVar[str] = '{"env": "base"}'

    env: str


class QueueBody(Body, frozen=True):
    RECORD: ClassVar[str] = "POST /api/queue body"
    EXAMPLE: ClassVar[str] = '{"paused": true}'

    paused: bool


class PromoteBody(Body, frozen=True):
    RECORD: ClassVar[str] = "POST /api/envs/ENV/promote body"
    EXAMPLE: ClassVar[str] = '{"build_id": "...", "label": "2026-3"}'

    build_id: str
    label: str
    allow_failed: bool = False


def _request_id(request: Request) -> int:
    return int(request.path_params["id"])


def _no_request(request_id: int) -> JSONResponse:
    return json_error(404, f"no build request #{request_id}")


@staff_api
async def request_build(request: Request, hook: Hook, who: str) -> Response:
    body = await body_of(request, BuildBody)
    if isinstance(body, Response):
        return body
    env = body.env
    if not await run_in_threadpool(is_env, hook.site, env):
        envs = await run_in_threadpool(list_envs, hook.site)
        return json_error(404, f"no environment {env!r}", envs=envs)
    record, joined = await run_in_threadpool(
        hook.queue.request, env, source="api", requested_by=who
    )
    hook.runner.wake()
    return JSONResponse(
        {"request_id": record.id, "id": record.id, "env": env, "state": record.state,
         "joined": joined, "url": f"/builds/{record.id}"},
        status_code=202,
    )  # fmt: skip


@staff_api
async def get_request(request: Request, hook: Hook, who: str) -> Response:
    request_id = _request_id(request)

    def read() -> dict[str, Any] | None:
        record = hook.queue.get(request_id)
        if record is None:
            return None
        view = None
        # only a build the request published rolls out ("no change" names an old one)
        if record.state == PUBLISHED and record.build_id and is_env(hook.site, record.env):
            view = rollout(hook, record.env, record.build_id)
        return {**record.to_dict(), "rollout": view}

    answer = await run_in_threadpool(read)
    return _no_request(request_id) if answer is None else JSONResponse(answer)


@staff_api
async def list_requests(request: Request, hook: Hook, who: str) -> Response:
    env = request.query_params.get("env")
    records = await run_in_threadpool(lambda: hook.queue.history(env=env, limit=200))
    return JSONResponse([r.to_dict() for r in records])


@staff_api
async def cancel_request(request: Request, hook: Hook, who: str) -> Response:
    request_id = _request_id(request)
    if await run_in_threadpool(hook.queue.get, request_id) is None:
        return _no_request(request_id)
    cancelled = await hook.runner.cancel(request_id, who)
    record = await run_in_threadpool(hook.queue.get, request_id)
    assert record is not None
    return JSONResponse({**record.to_dict(), "cancelled": cancelled})


@staff_api
async def envs(request: Request, hook: Hook, who: str) -> Response:
    def infos() -> list[dict[str, Any]]:
        seen, _error = nodes(hook)
        return [env_info(hook, name, seen) for name in list_envs(hook.site)]

    return JSONResponse(await run_in_threadpool(infos))


@staff_api
async def queue(request: Request, hook: Hook, who: str) -> Response:
    """GET: the queue; POST {"paused": bool}: hold or release it (e.g. store maintenance)."""
    if request.method == "POST":
        body = await body_of(request, QueueBody)
        if isinstance(body, Response):
            return body
        await run_in_threadpool(hook.queue.set_paused, body.paused)
        hook.runner.wake()

    def read() -> dict[str, Any]:
        return {
            "paused": hook.queue.paused,
            "active": [r.to_dict() for r in hook.queue.active()],
        }

    return JSONResponse(await run_in_threadpool(read))


@staff_api
async def promote(request: Request, hook: Hook, who: str) -> Response:
    """POST {"build_id": ..., "label": ..., "allow_failed": false}: `promote ENV BUILD_ID
    --lts LABEL`; 409 (with the nodes' reasons) for a build nodes report as failed,
    unless allow_failed is true."""
    env = request.path_params["env"]
    body = await body_of(request, PromoteBody)
    if isinstance(body, Response):
        return body
    build_id, label, allow_failed = body.build_id, body.label.strip(), body.allow_failed
    if not await run_in_threadpool(is_env, hook.site, env):
        return json_error(404, f"no environment {env!r}")
    if problem := label_problem(label):
        return json_error(422, problem)
    context = await run_in_threadpool(store_build_context, hook, env, build_id)
    if context is None:
        return json_error(404, f"no committed build {env}/{build_id} in the store")
    if context["failures"] and not allow_failed:
        refused = promote_refusal(env, build_id, context["failures"])
        return json_error(409, f"{refused} (API: allow_failed: true)", failed=context["failures"])
    ok, output = await hook.runner.promote(env, build_id, label, allow_failed=allow_failed)
    if not ok:
        return json_error(500, f"promote {env} {build_id} --lts {label} failed", output=output)
    return JSONResponse(
        {"env": env, "build_id": build_id, "label": label, "promoted_by": who,
         "allowed_failed": bool(context["failures"])}
    )  # fmt: skip


def routes() -> list[Route]:
    # /api/builds/N names a build *request*; the paths stay as documented for scripts.
    return [
        Route("/api/builds", request_build, methods=["POST"]),
        Route("/api/builds", list_requests, methods=["GET"]),
        Route("/api/builds/{id:int}", get_request, methods=["GET"]),
        Route("/api/builds/{id:int}/cancel", cancel_request, methods=["POST"]),
        Route("/api/envs", envs, methods=["GET"]),
        Route("/api/envs/{env}/promote", promote, methods=["POST"]),
        Route("/api/queue", queue, methods=["GET", "POST"]),
    ]
