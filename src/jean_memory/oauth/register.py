"""RFC 7591 dynamic client registration: POST JSON, 201 with the client's record."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse

from jean_memory.db.engine import run_db
from jean_memory.db.rate_limits import REGISTRATIONS
from jean_memory.oauth.clients import ClientMetadataError, register_client
from jean_memory.oauth.errors import NO_STORE, OAuthError
from jean_memory.oauth.service import OAuthService
from jean_memory.oauth.throttle import over_limit, too_many_requests

MAX_BODY_BYTES = 64 * 1024


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The body, or a 413 as soon as it passes `limit` (never buffering an oversized upload)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise OAuthError("invalid_request", f"request body is larger than {limit // 1024} KiB", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise OAuthError("invalid_request", f"request body is larger than {limit // 1024} KiB", 413)
        chunks.append(chunk)
    return b"".join(chunks)


class RegistrationEndpoint:
    def __init__(self, service: OAuthService) -> None:
        self._service = service

    async def __call__(self, request: Request) -> JSONResponse:
        if await over_limit(self._service, request, REGISTRATIONS):
            return too_many_requests(REGISTRATIONS)
        try:
            raw = await read_limited_body(request, MAX_BODY_BYTES)
            try:
                body = json.loads(raw or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise OAuthError("invalid_client_metadata", "the request body must be a JSON object") from exc
            if not isinstance(body, dict):
                raise OAuthError("invalid_client_metadata", "the request body must be a JSON object")
            registration = await run_db(register_client, self._service.engine, body)
        except ClientMetadataError as exc:
            return OAuthError(exc.error, exc.description).response()
        except OAuthError as exc:
            return exc.response()
        return JSONResponse(registration.response_body(), status_code=201, headers=NO_STORE)
