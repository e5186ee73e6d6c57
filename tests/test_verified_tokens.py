"""The token check remembers tokens it verified (issue 17), but never past their expiry and
never for a token it refused."""

from __future__ import annotations

import pytest

from jean_memory import clock
from jean_memory.oauth.jwt_tokens import mint_access_token
from jean_memory.oauth.revoked_grants import RevocationCache
from jean_memory.oauth.verify import InvalidAccessToken, TokenVerifier
from tests.support.servers import make_settings

USER = clock.new_id()


@pytest.fixture
def verifier(engine, tmp_path) -> TokenVerifier:
    settings = make_settings("sqlite://", tmp_path, 8000)
    return TokenVerifier(settings, RevocationCache(engine, 30))


def token_for(verifier: TokenVerifier, secret: str | None = None, lifetime: int = 60) -> str:
    settings = verifier.settings
    token, _ = mint_access_token(
        secret=secret or settings.jwt_secret_key,
        issuer=settings.issuer,
        audience=settings.resource,
        user_id=USER,
        email="u1@example.com",
        client_profile="claude",
        client_id="c1",
        scope="memory",
        grant_id=clock.new_id(),
        lifetime_seconds=lifetime,
    )
    return token


def test_a_remembered_token_still_expires(verifier: TokenVerifier) -> None:
    token = token_for(verifier)
    assert verifier.verify_signed(token).sub == USER
    assert verifier.verify_signed(token).sub == USER  # the remembered answer
    clock.advance(61)
    with pytest.raises(InvalidAccessToken, match="expired"):
        verifier.verify_signed(token)


def test_a_refused_token_is_refused_every_time(verifier: TokenVerifier) -> None:
    forged = token_for(verifier, secret="another-key-0123456789abcdef0123456789abcdef")
    for _ in range(2):
        with pytest.raises(InvalidAccessToken):
            verifier.verify_signed(forged)
    good = token_for(verifier)
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    verifier.verify_signed(good)
    with pytest.raises(InvalidAccessToken):
        verifier.verify_signed(tampered)
