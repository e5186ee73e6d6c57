"""Access tokens: HS256 JWTs with the contract's claims, and their verification.

Verification refuses anything but HS256 (so `alg: none` and key-confusion tricks fail), and
requires `exp`, `iat`, `iss`, `aud` and `sub`; expiry is checked against `jean_memory.clock`
so tests can move time.
"""

from __future__ import annotations

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
    """Try the current key, then the previous one: rotating the key logs nobody out."""
    options = {"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False}
    for index, secret in enumerate(secrets):
        try:
            return jwt.decode(token, secret, algorithms=[ALGORITHM], audience=audience, issuer=issuer, options=options)
        except jwt.InvalidSignatureError:
            if index == len(secrets) - 1:
                raise
    raise jwt.InvalidSignatureError("no verification key configured")


def verify_access_token(token: str, *, secrets: tuple[str, ...], issuer: str, audience: str) -> AccessTokenClaims:
    try:
        claims = _decode(token, secrets, issuer, audience)
    except jwt.InvalidAudienceError as exc:
        raise InvalidAccessToken("the token was issued for another resource") from exc
    except jwt.InvalidIssuerError as exc:
        raise InvalidAccessToken("the token was issued by another server") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidAccessToken(f"the token lacks the {exc.claim!r} claim") from exc
    except jwt.PyJWTError as exc:
        raise InvalidAccessToken("the token is malformed or its signature is invalid") from exc
    exp = claims["exp"]
    if not isinstance(exp, int | float) or exp <= clock.now():
        raise InvalidAccessToken("the token has expired")
    if not isinstance(claims.get("sid"), str) or not isinstance(claims.get("scope"), str):
        raise InvalidAccessToken("the token lacks its grant or scope")
    return AccessTokenClaims(
        sub=str(claims["sub"]),
        email=str(claims.get("email", "")),
        client=str(claims.get("client", "default")),
        client_id=str(claims.get("client_id", "")),
        scope=claims["scope"],
        grant_id=claims["sid"],
        exp=int(exp),
        jti=str(claims["jti"]),
        raw=claims,
    )
