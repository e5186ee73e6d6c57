"""An API key's last use is recorded at most once a minute (issue 17: one write per legacy
request was a statement, and on SQLite a writer lock, for nothing the person can see)."""

from __future__ import annotations

from jean_memory import clock
from jean_memory.accounts.api_keys import LAST_USED_EVERY_SECONDS, api_key_user_id, create_api_key, list_api_keys
from jean_memory.accounts.users import create_user


def test_the_last_use_is_written_once_a_minute(engine) -> None:
    user = create_user(engine, "keys@example.com", "a long enough password")
    key = create_api_key(engine, user.id)
    assert api_key_user_id(engine, key) == user.id
    first = list_api_keys(engine, user.id)[0].last_used_at
    assert first is not None

    clock.advance(LAST_USED_EVERY_SECONDS - 1)
    assert api_key_user_id(engine, key) == user.id
    assert list_api_keys(engine, user.id)[0].last_used_at == first  # within the minute: no write

    clock.advance(2)
    assert api_key_user_id(engine, key) == user.id
    assert list_api_keys(engine, user.id)[0].last_used_at > first + LAST_USED_EVERY_SECONDS  # written again


def test_an_unknown_key_is_refused_and_writes_nothing(engine) -> None:
    user = create_user(engine, "keys2@example.com", "a long enough password")
    create_api_key(engine, user.id)
    assert api_key_user_id(engine, "jm_sk_not-a-key") is None
    assert list_api_keys(engine, user.id)[0].last_used_at is None
