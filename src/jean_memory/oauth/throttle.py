"""Rate limits at the HTTP edge of the authorization server, keyed by client address."""

from __future__ import annotations

import ipaddress

from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import JSONResponse

from jean_memory import clock
from jean_memory.db import rate_limits
from jean_memory.oauth.errors import ErrorCode
from jean_memory.oauth.service import OAuthService
from jean_memory.off_loop import run_db


def client_address(request: Request) -> str:
    """The key the limits count by: the IPv4 address, or the /64 an IPv6 address is in (one
    household or server usually holds a whole /64, so counting single addresses limits nobody)."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # Not an address (a proxy passed the client's own X-Forwarded-For on): any text of any
        # length, which must still fit the bucket column (200 characters on PostgreSQL).
        return host if len(host) <= 64 else "digest:" + clock.sha256_hex(host)[:32]
    if not isinstance(address, ipaddress.IPv6Address):
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


async def over_limit(service: OAuthService, request: Request, limit: rate_limits.Limit) -> bool:
    """Count this request against `limit`; True when the address is over it."""
    return await run_db(rate_limits.exceeded, service.engine, limit, client_address(request))


def too_many_requests(limit: rate_limits.Limit) -> JSONResponse:
    wait = rate_limits.retry_after(limit)
    error: ErrorCode = "too_many_requests"
    return JSONResponse(
        {"error": error, "error_description": f"too many requests from your address; retry in {wait} s"},
        status_code=429,
        headers={"Retry-After": str(wait), "Cache-Control": "no-store"},
    )


async def sign_in_refused(engine: Engine, request: Request) -> str | None:
    """Count this sign-in attempt as a failure before the password is checked, and say why it
    is refused when the address is over the limit (else None). Counted first: a count read first
    and raised only after the slow password check let any number of parallel guesses through.
    The OAuth sign-in form and the pages' /signin share the one limit."""
    address = client_address(request)
    if (
        await run_db(rate_limits.hit, engine, rate_limits.SIGN_IN_FAILURES, address)
        > rate_limits.SIGN_IN_FAILURES.max_count
    ):
        minutes = -(-rate_limits.retry_after(rate_limits.SIGN_IN_FAILURES) // 60)
        return f"Too many failed sign-ins. Try again in {minutes} minutes."
    return None


async def sign_in_succeeded(engine: Engine, request: Request) -> None:
    """A correct password: the attempt counted by `sign_in_refused` was not a failure."""
    await run_db(rate_limits.take_back, engine, rate_limits.SIGN_IN_FAILURES, client_address(request))


async def sign_up_refused(engine: Engine, request: Request) -> str | None:
    """Count a sign-up attempt (/setup, /join); say why it is refused when the address is over
    the limit, else None. Every attempt counts, successful or not: each one hashes a password,
    and under `JEAN_MEMORY_SIGNUP=open` nothing else stands in the way of a flood."""
    if await run_db(rate_limits.exceeded, engine, rate_limits.SIGN_UPS, client_address(request)):
        minutes = -(-rate_limits.retry_after(rate_limits.SIGN_UPS) // 60)
        return f"Too many sign-ups from your network. Try again in {minutes} minutes."
    return None
