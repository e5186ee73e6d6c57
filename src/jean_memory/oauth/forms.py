"""Request bodies of the unauthenticated endpoints, read under a size cap.

Anyone may post to registration, token, revocation, sign-in, consent and authorization, so
none of them may buffer or parse more than the cap. The cap counts the bytes as they arrive:
a chunked body carries no Content-Length to check beforehand.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.datastructures import ImmutableMultiDict
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


def is_valid_text(value: Any) -> bool:
    """Whether every string in `value` (a JSON value, or form fields as pairs) is valid Unicode.

    JSON may spell a lone surrogate (`"a\\udfff"`) and a multipart part may name a charset
    (`unicode-escape`) that decodes to one: such a string is no text, cannot be encoded as
    UTF-8, and failed at the database insert. Checked once where outside input is parsed.
    Walked without recursion: a JSON document nested nearly as deep as the parser allows
    must not overflow the stack here."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return True


async def read_form(request: Request, limit: int = MAX_BODY_BYTES) -> ImmutableMultiDict[str, str]:
    """The form's text fields, parsed from a body read under `limit`; OAuthError (413) past it,
    (400 invalid_request) for a field that is not valid Unicode.
    Files (possible in a multipart POST) are no parameter values: they count as absent rather
    than reaching code that expects strings."""
    body = await read_limited_body(request, limit)
    # Starlette's own body cache: `request.form()` then parses these bytes instead of the
    # (already consumed) stream, keeping its 400 for malformed multipart.
    request._body = body
    form = await request.form()
    fields = ImmutableMultiDict([(k, v) for k, v in form.multi_items() if isinstance(v, str)])
    await form.close()
    if not is_valid_text(list(fields.multi_items())):
        raise OAuthError("invalid_request", "a form field is not valid Unicode text (e.g. a lone surrogate)")
    return fields


def repeated(params: Iterable[tuple[str, object]], may_repeat: frozenset[str] = frozenset()) -> str | None:
    """The first parameter sent more than once, if any. RFC 6749 §3.1: request and response
    parameters MUST NOT be included more than once; taking the first or the last value would let
    two parties read one request differently. `resource` may repeat (RFC 8707) and is judged by
    its own rule."""
    seen: set[str] = set()
    for name, _ in params:
        if name in seen and name not in may_repeat:
            return name
        seen.add(name)
    return None


def check_single(form: ImmutableMultiDict[str, str]) -> None:
    """OAuthError invalid_request naming a repeated parameter (token and revocation requests)."""
    name = repeated(form.multi_items())
    if name is not None:
        raise OAuthError("invalid_request", f"the parameter {name} was sent more than once")
