"""Access tokens: HS256 JWTs with the contract's claims, and their verification.

Verification refuses anything but HS256 (so `alg: none` and key-confusion tricks fail),
requires `exp`, `iat`, `iss`, `aud`, `sub` and `jti`, and checks every claim's type and range;
expiry is checked against `jean_memory.clock` so tests can move time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jwt

from jean_memory import clock

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub", "jti")


class InvalidAccessToken(Exception):
    """The token must not be honoured; the message is safe to show (it never contains the token)."""


@dataclass(frozen=True)
class AccessTokenClaims:
    sub: str
    email: str
    client: str
    client_id: str
    scope: str
    grant_id: str
    exp: int
    jti: str
    raw: dict[str, Any]

    @property
    def scopes(self) -> list[str]:
        return self.scope.split()


def mint_access_token(
    *,
    secret: str,
    issuer: str,
    audience: str,
    user_id: str,
    email: str,
    client_profile: str,
    client_id: str,
    scope: str,
    grant_id: str,
    lifetime_seconds: int,
) -> tuple[str, int]:
    now = clock.now_int()
    claims = {
        "iss": issuer,
        "sub": user_id,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime_seconds,
        "jti": clock.new_id(),
        "email": email,
        "client": client_profile,
        "client_id": client_id,
        "scope": scope,
        "sid": grant_id,  # the grant ("session") this token belongs to, so revoking it stops the token
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM), lifetime_seconds


def _decode(token: str, secrets: tuple[str, ...], issuer: str, audience: str) -> dict[str, Any]:
    """Try the current key, then the previous one: rotating the key logs nobody out.

    Time claims are checked by `_checked_claims`, not PyJWT: it converts them with `int()`,
    which raises OverflowError on `Infinity` instead of rejecting the token."""
    options = {"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False, "verify_nbf": False}
    for index, secret in enumerate(secrets):
        try:
            return jwt.decode(token, secret, algorithms=[ALGORITHM], audience=audience, issuer=issuer, options=options)
        except jwt.InvalidSignatureError:
            if index == len(secrets) - 1:
                raise
    raise jwt.InvalidSignatureError("no verification key configured")


# Every claim the verifier reads, and what it must be. Only the key's holder can sign a token,
# but the verifier never trusts a value's type: a NaN `exp`, a list for `sub` or a lone
# surrogate in `sid` must end as a 401, not as an exception further on (issue 18, defect 4).
STRING_CLAIMS = ("iss", "aud", "sub", "jti", "sid", "scope", "client_id", "email", "client")
TIME_CLAIMS = ("exp", "iat", "nbf")  # nbf: we never mint it, but one present is honoured
MAX_STRING_CHARS = 4096  # the longest we mint is a client_id (a URL of at most 2,048)
MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z: the last second a datetime can hold
OPAQUE_ID = re.compile(r"[0-9a-f]{32}")  # clock.new_id(): user and grant ids


def _is_text(value: object) -> bool:
    if not isinstance(value, str) or len(value) > MAX_STRING_CHARS or "\x00" in value:
        return False
    try:
        value.encode("utf-8")  # a lone surrogate (valid JSON "\udfff") cannot reach the database
    except UnicodeEncodeError:
        return False
    return True


def _checked_claims(claims: dict[str, Any]) -> dict[str, Any]:
    """The claims when each has the type and range we mint; InvalidAccessToken naming the first
    one that does not. Integers only for times (JSON allows NaN, Infinity, 1e400 and booleans)."""
    for name in TIME_CLAIMS:
        if name not in claims and name == "nbf":
            continue
        value = claims.get(name)
        if type(value) is not int or not 0 <= value <= MAX_TIMESTAMP:
            raise InvalidAccessToken(f"the token's {name!r} claim is not a valid time")
    if claims["iat"] > claims["exp"]:
        raise InvalidAccessToken("the token was issued after it expires")
    for name in STRING_CLAIMS:
        if name in claims and not _is_text(claims[name]):
            raise InvalidAccessToken(f"the token's {name!r} claim is not valid text")
    if "sid" not in claims or "scope" not in claims:
        raise InvalidAccessToken("the token lacks its grant or scope")
    if not OPAQUE_ID.fullmatch(claims["sub"]) or not OPAQUE_ID.fullmatch(claims["sid"]):
        raise InvalidAccessToken("the token's subject or grant is not one this server issues")
    return claims


def verify_access_token(token: str, *, secrets: tuple[str, ...], issuer: str, audience: str) -> AccessTokenClaims:
    """The claims of a token we signed, for the given audience; raises InvalidAccessToken and
    nothing else, whatever the token holds. The caller still checks the grant (`sid`)."""
    try:
        claims = _decode(token, secrets, issuer, audience)
    except jwt.InvalidAudienceError as exc:
        raise InvalidAccessToken("the token was issued for another resource") from exc
    except jwt.InvalidIssuerError as exc:
        raise InvalidAccessToken("the token was issued by another server") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidAccessToken(f"the token lacks the {exc.claim!r} claim") from exc
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # PyJWT's own checks of odd claims (e.g. `aud` as a number) can raise plain errors.
        raise InvalidAccessToken("the token is malformed or its signature is invalid") from exc
    if not isinstance(claims, dict):
        raise InvalidAccessToken("the token is malformed or its signature is invalid")
    claims = _checked_claims(claims)
    if claims["exp"] <= clock.now():
        raise InvalidAccessToken("the token has expired")
    if claims.get("nbf", 0) > clock.now():
        raise InvalidAccessToken("the token is not valid yet")
    return AccessTokenClaims(
        sub=claims["sub"],
        email=claims.get("email", ""),
        client=claims.get("client", "default"),
        client_id=claims.get("client_id", ""),
        scope=claims["scope"],
        grant_id=claims["sid"],
        exp=claims["exp"],
        jti=claims["jti"],
        raw=claims,
    )
