"""Properties of the pure functions that guard the doors (issue 12, "Then"), checked by
hypothesis over generated input rather than a handful of examples.

Each property states what the function promises whatever comes from outside: redirect URIs
match only themselves (or, for a loopback `http` URI, the same URI on another port, RFC 8252
§7.3); a resource indicator resolves to ours only when it is one of our spellings (RFC 8707);
PKCE accepts only the verifier whose S256 hash is the challenge (RFC 7636 §4.6); form bodies
parse to the fields that were sent or to an OAuth error; and no mangled access token gets
anything from the verifier but its own rejection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import json
import math
import string
from urllib.parse import urlencode

import jwt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from jean_memory.oauth.errors import OAuthError
from jean_memory.oauth.forms import read_form, read_limited_body, repeated
from jean_memory.oauth.jwt_tokens import InvalidAccessToken, mint_access_token, verify_access_token
from jean_memory.oauth.redirects import RedirectUriError, check_registrable, matches_registered
from jean_memory.oauth.resource import canonical_resource, resolve_resource
from jean_memory.oauth.token import pkce_matches

# Quick enough for the whole file to stay well under 20 s; deterministic so a failure repeats.
settings.register_profile(
    "doors", max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("doors")


# Any text, including what no well-behaved client sends: controls, brackets, lone surrogates.
any_text = st.text(st.characters(codec=None), max_size=60)
url_ish = st.one_of(
    any_text,
    st.builds(
        "".join,
        st.lists(
            st.sampled_from(
                [
                    "http",
                    "https",
                    ":",
                    "//",
                    "/",
                    "[",
                    "]",
                    "::1",
                    "127.0.0.1",
                    "@",
                    "#",
                    "?",
                    "%",
                    "x",
                    ":8080",
                    "é",
                    "\udfff",
                    " ",
                ]
            ),
            max_size=10,
        ),
    ),
)

# --- redirect URIs (oauth/redirects.py) ------------------------------------------------------------

SCHEMES = ["http", "https", "HTTP", "com.example.app", "javascript"]
HOSTS = ["127.0.0.1", "localhost", "[::1]", "claude.ai", "LOCALHOST", "127.0.0.2", "evil.example"]
PORTS = ["", ":80", ":8080", ":33418", ":0", ":99999", ":x"]
PATHS = ["", "/", "/callback", "/Callback", "/callback/", "/a/b"]
QUERIES = ["", "?", "?a=1", "?a=2"]
USERINFOS = ["", "user@", "claude.ai@"]
FRAGMENTS = ["", "#", "#frag"]


@st.composite
def redirect_parts(draw: st.DrawFn) -> dict[str, str]:
    return {
        "scheme": draw(st.sampled_from(SCHEMES)),
        "userinfo": draw(st.sampled_from(USERINFOS)),
        "host": draw(st.sampled_from(HOSTS)),
        "port": draw(st.sampled_from(PORTS)),
        "path": draw(st.sampled_from(PATHS)),
        "query": draw(st.sampled_from(QUERIES)),
        "fragment": draw(st.sampled_from(FRAGMENTS)),
    }


def build(parts: dict[str, str]) -> str:
    return f"{parts['scheme']}://{parts['userinfo']}{parts['host']}{parts['port']}{parts['path']}{parts['query']}{parts['fragment']}"


LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "LOCALHOST", "127.0.0.2"}
VALID_PORTS = {"", ":80", ":8080", ":33418", ":0"}


def differs_only_in_loopback_port(a: dict[str, str], b: dict[str, str]) -> bool:
    """The oracle: both loopback `http` without user information or fragment, with numeric
    ports, and equal in everything else (the host compared without regard to case)."""

    def eligible(p: dict[str, str]) -> bool:
        return (
            p["scheme"].lower() == "http"
            and p["host"] in LOOPBACK
            and not p["userinfo"]
            and not p["fragment"]
            and p["port"] in VALID_PORTS
        )

    same_rest = a["host"].lower() == b["host"].lower() and (a["path"], a["query"]) == (b["path"], b["query"])
    return eligible(a) and eligible(b) and same_rest


@given(redirect_parts(), st.lists(redirect_parts(), min_size=1, max_size=3))
def test_a_redirect_uri_matches_only_itself_or_its_loopback_twin_on_another_port(requested, registered):
    expected = any(build(requested) == build(r) or differs_only_in_loopback_port(requested, r) for r in registered)
    assert matches_registered(build(requested), [build(r) for r in registered]) is expected


@given(redirect_parts())
def test_every_registrable_uri_matches_itself_and_obeys_the_registration_rules(parts):
    uri = build(parts)
    try:
        accepted = check_registrable(uri)
    except RedirectUriError:
        return
    assert accepted == uri and matches_registered(uri, [uri])
    assert not parts["fragment"] and not parts["userinfo"]
    assert parts["scheme"].lower() != "javascript"
    if parts["scheme"].lower() == "http":
        assert parts["host"] in LOOPBACK


@given(url_ish)
@example("http://[127.0.0.1/callback")
def test_registration_rejects_any_text_with_its_own_error(uri):
    with contextlib.suppress(RedirectUriError):
        check_registrable(uri)


@given(url_ish)
@example("http://[::1/callback")
def test_matching_any_text_against_a_loopback_registration_never_raises(uri):
    assert matches_registered(uri, ["http://127.0.0.1/callback"]) in (True, False)


# --- resource indicators (oauth/resource.py) ---------------------------------------------------------

OUR_RESOURCE = "https://memory.example.com/mcp"


@st.composite
def our_spellings(draw: st.DrawFn) -> str:
    """`https://memory.example.com/mcp` as RFC 8707 lets a client spell it: scheme and host in
    any case, the default port written out or not, a trailing slash or not."""
    scheme = "".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in "https")
    host = "".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in "memory.example.com")
    port = draw(st.sampled_from(["", ":443"]))
    slash = draw(st.sampled_from(["", "/"]))
    return f"{scheme}://{host}{port}/mcp{slash}"


@given(our_spellings())
def test_every_spelling_of_our_resource_resolves_to_it(spelling):
    assert resolve_resource(spelling, OUR_RESOURCE) == OUR_RESOURCE
    assert canonical_resource(spelling) == OUR_RESOURCE


@given(
    our_spellings(),
    st.sampled_from(
        [
            ("https://", "http://"),
            ("memory.example.com", "memory.example.com.evil.example"),
            ("memory.example.com", "evil.example"),
            ("/mcp", "/mcpx"),
            ("/mcp", "/other/mcp"),
            ("/mcp", "/MCP"),
            ("/mcp", "/mcp?x=1"),
            ("/mcp", "/mcp#frag"),
            ("/mcp", "/mcp//"),
            (".com", ".com:8443"),
        ]
    ),
)
def test_any_other_resource_is_invalid_target(spelling, change):
    old, new = change
    lowered = spelling.lower()
    if old not in lowered:
        return
    other = lowered.replace(old, new, 1)
    with pytest.raises(OAuthError) as refused:
        resolve_resource(other, OUR_RESOURCE)
    assert refused.value.error == "invalid_target"


@given(st.from_regex(r"\A(https?)://[a-z0-9.\-]{1,20}(:[0-9]{1,5})?(/[a-z0-9/]*)?(\?[a-z=&]*)?\Z"))
def test_canonical_form_is_a_fixed_point(url):
    once = canonical_resource(url)
    assert canonical_resource(once) == once


@given(url_ish)
@example("https://[::1/mcp")
def test_any_text_as_resource_gets_invalid_target_or_our_resource(text):
    try:
        assert resolve_resource(text, OUR_RESOURCE) == OUR_RESOURCE
    except OAuthError as refused:
        assert refused.error == "invalid_target"


# --- PKCE (oauth/token.py) ------------------------------------------------------------------------

UNRESERVED = string.ascii_letters + string.digits + "-._~"
verifiers = st.text(st.sampled_from(UNRESERVED), min_size=43, max_size=128)


def s256(verifier: str) -> str:
    """RFC 7636 §4.2, written out here rather than taken from the code under test."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


@given(verifiers)
def test_pkce_accepts_the_verifier_of_the_challenge(verifier):
    assert pkce_matches(verifier, s256(verifier))


@given(verifiers, verifiers)
def test_pkce_refuses_any_other_verifier(verifier, other):
    if other != verifier:
        assert not pkce_matches(other, s256(verifier))


@given(any_text, any_text)
@example("a" * 43, "é" * 43)
@example("é" * 43, "a" * 43)
def test_pkce_never_raises(verifier, challenge):
    """Whatever a client sends as code_verifier (the token endpoint checks its syntax first,
    but the comparison must not depend on that) is a plain yes or no."""
    assert pkce_matches(verifier, challenge) in (True, False)


# --- form bodies (oauth/forms.py) -----------------------------------------------------------------


def request_for(body_chunks: list[bytes], content_type: str, declared: int | None = None) -> Request:
    headers = [(b"content-type", content_type.encode("latin-1"))]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(body_chunks) - 1}
        for i, chunk in enumerate(body_chunks or [b""])
    ]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/oauth/token", "headers": headers, "query_string": b""}
    return Request(scope, receive)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


field_text = st.text(st.characters(codec="utf-8"), max_size=30)


@given(st.lists(st.tuples(field_text.filter(bool), field_text), max_size=8), st.integers(1, 7))
def test_a_form_parses_to_exactly_the_fields_sent_however_it_is_chunked(fields, pieces):
    body = urlencode(fields).encode()
    size = max(1, len(body) // pieces)
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    form = run(read_form(request_for(chunks, "application/x-www-form-urlencoded")))
    assert form.multi_items() == fields


@given(
    st.binary(max_size=300), st.sampled_from(["application/x-www-form-urlencoded", "multipart/form-data; boundary=b"])
)
def test_any_body_parses_to_text_fields_or_an_error_the_endpoint_answers(body, content_type):
    """Only strings come out (a file in a multipart body counts as absent); malformed
    multipart is Starlette's own 400, which the app answers, not a traceback."""
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    try:
        form = run(read_form(request_for([body], content_type)))
    except (HTTPException, MultiPartException, OAuthError):
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in form.multi_items())


@given(st.integers(1, 4096), st.integers(1, 8), st.booleans())
def test_a_body_past_the_limit_is_413_however_it_arrives(limit, pieces, declare):
    body = b"a" * (limit + 1)
    size = max(1, len(body) // pieces)
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    with pytest.raises(OAuthError) as refused:
        run(read_limited_body(request_for(chunks, "text/plain", len(body) if declare else None), limit))
    assert refused.value.status == 413
    assert run(read_limited_body(request_for([body[:limit]], "text/plain"), limit)) == body[:limit]


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.just("")), max_size=8), st.sets(st.sampled_from("abcde")))
def test_repeated_names_the_first_parameter_sent_twice(params, may_repeat):
    seen: set[str] = set()
    first = None
    for name, _ in params:
        if name in seen and name not in may_repeat:
            first = name
            break
        seen.add(name)
    assert repeated(params, frozenset(may_repeat)) == first


# --- access tokens (oauth/jwt_tokens.py) ----------------------------------------------------------

SECRET = "property-secret-0123456789abcdef0123456789abcdef"
ISSUER = "https://memory.example.com"
AUDIENCE = "https://memory.example.com/mcp"


@functools.cache
def mint() -> str:
    """One token for the whole module (its `jti` is random), so a mangled copy can be compared
    with the very token it came from."""
    token, _ = mint_access_token(
        secret=SECRET,
        issuer=ISSUER,
        audience=AUDIENCE,
        user_id="user-1",
        email="a@example.com",
        client_profile="claude",
        client_id="jmc_1",
        scope="memory",
        grant_id="grant-1",
        lifetime_seconds=3600,
    )
    return token


def verify(token: str):  # type: ignore[no-untyped-def]
    return verify_access_token(token, secrets=(SECRET,), issuer=ISSUER, audience=AUDIENCE)


def segments(token: str) -> list[bytes] | None:
    """The bytes each base64url segment stands for (None if one does not decode): two spellings
    of one token differ only in the unused low bits of a segment's last character."""
    try:
        return [base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in token.split(".")]
    except (ValueError, TypeError):
        return None


@st.composite
def mangled_tokens(draw: st.DrawFn) -> str:
    token = mint()
    kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "swap", "segments", "prefix"]))
    position = draw(st.integers(0, len(token) - 1))
    char = draw(st.characters(codec=None))
    if kind == "replace":
        return token[:position] + char + token[position + 1 :]
    if kind == "insert":
        return token[:position] + char + token[position:]
    if kind == "delete":
        return token[:position] + token[position + 1 :]
    if kind == "truncate":
        return token[:position]
    if kind == "swap":
        header, payload, signature = token.split(".")
        return ".".join(draw(st.permutations([header, payload, signature])))
    if kind == "segments":
        parts = token.split(".")
        count = draw(st.integers(0, 6))
        return ".".join((parts * 3)[:count])
    return draw(any_text) + token


@given(mangled_tokens())
def test_a_mangled_token_gets_only_the_verifiers_rejection(token):
    """Unless it decodes to the very bytes of the original (base64's spare bits), a changed
    token is refused, and by InvalidAccessToken only: no other exception reaches the endpoint."""
    original = mint()
    try:
        claims = verify(token)
    except InvalidAccessToken:
        return
    assert segments(token) == segments(original), f"a changed token was accepted: {token!r}"
    assert claims.sub == "user-1"


@given(any_text)
def test_any_text_as_a_token_gets_only_the_verifiers_rejection(text):
    with pytest.raises(InvalidAccessToken):
        verify(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | st.just(10**400),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)


@given(st.sampled_from(["exp", "iat", "sub", "sid", "scope", "jti", "email", "client", "client_id"]), json_values)
@example("exp", math.nan)
@example("exp", math.inf)
def test_a_signed_token_with_any_claim_value_is_honoured_or_refused_never_raises(claim, value):
    """Only the key's holder can sign one, but the verifier must not raise on any claim's type
    or range (issue 18 defect 4): the answer is claims of the right types, or InvalidAccessToken."""
    claims = jwt.decode(mint(), SECRET, algorithms=["HS256"], audience=AUDIENCE)
    claims[claim] = value
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    signing_input = header + b"." + payload
    signature = base64.urlsafe_b64encode(hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest()).rstrip(b"=")
    token = (signing_input + b"." + signature).decode()
    try:
        verified = verify(token)
    except InvalidAccessToken:
        return
    assert isinstance(verified.exp, int) and isinstance(verified.sub, str) and isinstance(verified.scope, str)
