"""The CI webhook (`POST /api/webhook`): a GitHub-style HMAC-signed delivery queues
latest builds of the envs `hook.webhook_repos` lists for the repository.

`app.create_app` mounts `routes()`. Checks, in order: body size, signature, a unique
delivery id, JSON, the repository, then replay (delivery id and body remembered in
hook.sqlite). The answer lists the queued build *requests* (`request_ids`; `ids` is
the same list under its older name).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .context import Hook, hook_of
from .envs import is_env
from .web import json_error, read_body, too_large


def _tag(payload: dict[str, Any]) -> str:
    """The tag (or branch) a CI payload is about: a release's tag_name, a push's ref."""
    release = payload.get("release")
    if isinstance(release, dict) and isinstance(release.get("tag_name"), str):
        return release["tag_name"][:100]
    ref = payload.get("ref")
    if isinstance(ref, str) and ref:
        return ref.removeprefix("refs/tags/").removeprefix("refs/heads/")[:100]
    return ""


def _wanted_envs(hook: Hook, repo: str) -> list[str] | None:
    # GitHub treats owner/name case-insensitively; so does the config lookup.
    repos = {name.lower(): envs for name, envs in hook.site.hook.webhook_repos.items()}
    return repos.get(repo.lower())


def _queue(hook: Hook, envs: list[str], who: str) -> list[dict[str, Any]]:
    requests = []
    for env in envs:
        record, joined = hook.queue.request(env, source="webhook", requested_by=who)
        requests.append({"env": env, "request_id": record.id, "id": record.id, "joined": joined})
    return requests


async def webhook(request: Request) -> Response:
    """A CI job asks for builds: HMAC-signed body; envs come from hook.webhook_repos."""
    hook = hook_of(request)
    body = await read_body(request)
    if body is None:
        return too_large()
    signature = request.headers.get("x-hub-signature-256")
    if not hook.auth.webhook_secret:
        return json_error(403, f"webhook disabled: ${hook.site.hook.webhook_secret_env} is not set")
    if not signature:
        return json_error(401, "missing X-Hub-Signature-256 header")
    if not hook.auth.webhook_ok(body, signature):
        return json_error(403, "X-Hub-Signature-256 does not match the body")
    delivery = request.headers.get("x-github-delivery", "").strip()
    if not delivery or len(delivery) > 200:
        return json_error(400, "missing X-GitHub-Delivery header (a unique id per delivery)")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return json_error(422, f"malformed JSON: {exc}")
    if request.headers.get("x-github-event") == "ping":
        return JSONResponse({"pong": True})
    repo = payload.get("repository", {}).get("full_name") if isinstance(payload, dict) else None
    if not isinstance(repo, str):
        return json_error(422, "payload has no repository.full_name")
    wanted = _wanted_envs(hook, repo)
    if not wanted:
        return json_error(404, f"repository {repo!r} is not in hook.webhook_repos")
    envs = await run_in_threadpool(lambda: [e for e in wanted if is_env(hook.site, e)])
    if not envs:
        return json_error(404, f"none of {wanted} (for {repo}) has a manifest")
    if not await run_in_threadpool(hook.auth.first_delivery, delivery, body):
        return json_error(409, f"delivery {delivery} (or the same body) was already received")
    who = f"webhook:{repo}" + (f" {tag}" if (tag := _tag(payload)) else "")
    requests = await run_in_threadpool(_queue, hook, envs, who)
    hook.runner.wake()
    ids = [r["request_id"] for r in requests]
    return JSONResponse({"builds": requests, "request_ids": ids, "ids": ids}, status_code=202)


def routes() -> list[Route]:
    return [Route("/api/webhook", webhook, methods=["POST"])]
