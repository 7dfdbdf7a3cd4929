"""HTTP plumbing the JSON API and the webhook share: bounded bodies, bodies decoded into
typed records, and JSON errors.

Called by `api` and `webhook`; no hook state here.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import RecordError
from ..schema import Record

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


class Body(Record, frozen=True):
    """A JSON request body. Fields it does not declare are ignored, as they always were
    (a script may send more); `EXAMPLE` ends every error about it, so the caller sees the
    shape it should have sent."""

    EXAMPLE: ClassVar[str] = "{}"


B = TypeVar("B", bound=Body)


async def body_of(request: Request, kind: type[B]) -> B | Response:
    """The request's JSON body as a `kind`, or the 413/422 response: malformed JSON, or the
    record's error naming the field ("POST /api/builds body: field 'env': expected str,
    got int"), then `kind.EXAMPLE`."""
    data, error = await json_body(request)
    if error is not None:
        return error
    try:
        return kind.from_dict(data)
    except RecordError as exc:
        return json_error(422, f"{exc}; a body looks like {kind.EXAMPLE}")
