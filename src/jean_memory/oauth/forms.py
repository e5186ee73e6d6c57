"""Request bodies of the unauthenticated endpoints, read under a size cap.

Anyone may post to registration, token, revocation, sign-in, consent and authorization, so
none of them may buffer or parse more than the cap. The cap counts the bytes as they arrive:
a chunked body carries no Content-Length to check beforehand.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request

from jean_memory.oauth.errors import OAuthError

MAX_BODY_BYTES = 64 * 1024


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The body, or a 413 as soon as it passes `limit` (never buffering an oversized upload)."""
    too_large = OAuthError("invalid_request", f"request body is larger than {limit // 1024} KiB", 413)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request, limit: int = MAX_BODY_BYTES) -> FormData:
    """The form, parsed from a body read under `limit`; OAuthError (413) past it."""
    body = await read_limited_body(request, limit)
    # Starlette's own body cache: `request.form()` then parses these bytes instead of the
    # (already consumed) stream, keeping its 400 for malformed multipart.
    request._body = body
    return await request.form()
