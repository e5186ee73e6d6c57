"""RFC 7591 dynamic client registration: POST JSON, 201 with the client's record."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse

from jean_memory.db.rate_limits import REGISTRATIONS
from jean_memory.oauth.clients import ClientMetadataError, register_client
from jean_memory.oauth.errors import NO_STORE, OAuthError
from jean_memory.oauth.forms import MAX_BODY_BYTES, is_valid_text, read_limited_body
from jean_memory.oauth.service import OAuthService
from jean_memory.oauth.throttle import over_limit, too_many_requests
from jean_memory.off_loop import run_db


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
            except (ValueError, RecursionError) as exc:  # bad JSON, a 5,000-digit number, deep nesting
                raise OAuthError("invalid_client_metadata", "the request body must be a JSON object") from exc
            if not isinstance(body, dict):
                raise OAuthError("invalid_client_metadata", "the request body must be a JSON object")
            if not is_valid_text(body):
                raise OAuthError(
                    "invalid_client_metadata",
                    "the request body holds text that is not valid Unicode (e.g. a lone surrogate such as \\udfff)",
                )
            registration = await run_db(register_client, self._service.engine, body)
        except ClientMetadataError as exc:
            return OAuthError(exc.error, exc.description).response()
        except OAuthError as exc:
            return exc.response()
        return JSONResponse(registration.response_body(), status_code=201, headers=NO_STORE)
