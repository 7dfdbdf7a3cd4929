"""HTTP plumbing the JSON API and the webhook share: bounded bodies and JSON errors.

Called by `api` and `webhook`; no hook state here.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

MAX_BODY = 1024 * 1024  # a GitHub release payload is ~20 kB; refuse anything silly


def json_error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="nsls2-hook"'} if status == 401 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


async def read_body(request: Request) -> bytes | None:
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


def too_large() -> JSONResponse:
    return json_error(413, f"request body is larger than {MAX_BODY} bytes")


async def json_body(request: Request) -> tuple[Any, Response | None]:
    """The request's JSON body, or a 413/422 response saying what is wrong with it."""
    body = await read_body(request)
    if body is None:
        return None, too_large()
    try:
        return json.loads(body), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, json_error(422, f"malformed JSON: {exc}")
