"""Rate limits at the HTTP edge of the authorization server, keyed by client address."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from jean_memory.db import rate_limits
from jean_memory.db.engine import run_db
from jean_memory.oauth.service import OAuthService


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def over_limit(service: OAuthService, request: Request, limit: rate_limits.Limit) -> bool:
    """Count this request against `limit`; True when the address is over it."""
    return await run_db(rate_limits.exceeded, service.engine, limit, client_address(request))


def too_many_requests(limit: rate_limits.Limit) -> JSONResponse:
    wait = rate_limits.retry_after(limit)
    return JSONResponse(
        {"error": "too_many_requests", "error_description": f"too many requests from your address; retry in {wait} s"},
        status_code=429,
        headers={"Retry-After": str(wait), "Cache-Control": "no-store"},
    )
