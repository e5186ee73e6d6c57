"""The `jean-memory user ...` and `apikey ...` commands: accounts and keys from the shell.

Each command opens the database the server uses (same settings), so a change takes effect on a
running server: a revoked key or a disabled account is refused on its next request (access
tokens within the revocation cache's lifetime, 30 s by default). Errors go to stderr with exit
status 1.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from jean_memory.accounts.api_keys import ApiKeyError, create_api_key, list_api_keys, revoke_api_key
from jean_memory.accounts.invites import create_invite
from jean_memory.accounts.lifecycle import (
    delete_user,
    disable_user,
    enable_user,
    list_users,
    require_user,
    set_password,
)
from jean_memory.accounts.passwords import WeakPasswordError
from jean_memory.accounts.users import AccountError, create_user, normalise_email
from jean_memory.config import ConfigError, load_settings
from jean_memory.db.engine import create_engine
from jean_memory.db.migrate import upgrade


def _engine(args: argparse.Namespace) -> Engine:
    engine = create_engine(load_settings(database_url=getattr(args, "database", None)).database_url)
    upgrade(engine)
    return engine


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise ConfigError("the passwords differ")
    return first


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _disabled(since: float | None) -> str:
    return "no" if since is None else _time(since)


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> None:
    """Aligned columns, one line a row; no value contains a space, so `split()` reads them."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(value).ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())


def _fails(action: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Account mistakes (unknown email, weak password, unknown key) are one line and exit 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return action(args)
        except (AccountError, WeakPasswordError, ApiKeyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


@_fails
def cmd_user_add(args: argparse.Namespace) -> int:
    user = create_user(_engine(args), args.email, _read_password(args.password_stdin), is_admin=args.admin)
    print(f"user_id: {user.id}\nemail: {user.email}" + ("\nadmin: yes" if args.admin else ""))
    return 0


@_fails
def cmd_user_list(args: argparse.Namespace) -> int:
    rows = [
        (u.email, _time(u.created_at), _yes_no(u.is_admin), _disabled(u.disabled_at), str(u.memory_count))
        for u in list_users(_engine(args))
    ]
    if not rows:
        print("no accounts yet; create one with: jean-memory user add EMAIL", file=sys.stderr)
        return 0
    _table(("EMAIL", "CREATED", "ADMIN", "DISABLED", "MEMORIES"), rows)
    return 0


@_fails
def cmd_user_passwd(args: argparse.Namespace) -> int:
    engine = _engine(args)
    user = require_user(engine, args.email)
    ended = set_password(engine, user.id, _read_password(args.password_stdin))
    print(f"password of {user.email} changed; {ended} browser session(s) signed out")
    return 0


@_fails
def cmd_user_disable(args: argparse.Namespace) -> int:
    engine = _engine(args)
    user = require_user(engine, args.email)
    revoked = disable_user(engine, user.id)
    print(
        f"{user.email} is disabled: sign-in and API keys are refused, {revoked} app connection(s) revoked "
        "(their access tokens stop within 60 s on every server)"
    )
    return 0


@_fails
def cmd_user_enable(args: argparse.Namespace) -> int:
    engine = _engine(args)
    user = require_user(engine, args.email)
    if not enable_user(engine, user.id):
        print(f"{user.email} was not disabled; nothing changed")
        return 0
    print(f"{user.email} is enabled: they can sign in again; their apps must connect again (sign in from each app)")
    return 0


@_fails
def cmd_user_delete(args: argparse.Namespace) -> int:
    engine = _engine(args)
    user = require_user(engine, args.email)
    if not args.yes:
        print(
            f"This erases {user.email} and everything of theirs (memories, documents, apps, keys), for good.\n"
            "Type the email address to confirm: ",
            end="",
            file=sys.stderr,
            flush=True,
        )
        if sys.stdin.readline().strip().lower() != user.email:
            print("error: not confirmed; nothing was deleted", file=sys.stderr)
            return 1
    deleted = delete_user(engine, user.id)
    counts = ", ".join(f"{table} {count}" for table, count in sorted(deleted.items()))
    print(f"deleted {user.email}: {counts}")
    return 0


@_fails
def cmd_user_invite(args: argparse.Namespace) -> int:
    """A one-time sign-up link on stdout (the issuer from JEAN_MEMORY_ISSUER, as `serve` has it)."""
    settings = load_settings(database_url=getattr(args, "database", None))
    token = create_invite(_engine(args), email=args.email)
    print(f"{settings.issuer}/join?invite={token}")
    bound = f" by {normalise_email(args.email)} only" if args.email else ""
    print(f"one-time sign-up link: usable once{bound}, for 7 days", file=sys.stderr)
    if settings.signup == "closed":
        print("note: JEAN_MEMORY_SIGNUP=closed refuses every sign-up, this link too", file=sys.stderr)
    return 0


@_fails
def cmd_apikey_create(args: argparse.Namespace) -> int:
    engine = _engine(args)
    user = require_user(engine, args.email)
    print(create_api_key(engine, user.id))
    return 0


@_fails
def cmd_apikey_list(args: argparse.Namespace) -> int:
    engine = _engine(args)
    keys = list_api_keys(engine, require_user(engine, args.email).id)
    if not keys:
        print(f"{args.email} has no API keys", file=sys.stderr)
        return 0
    _table(("PREFIX", "CREATED", "LAST_USED"), [(k.prefix, _time(k.created_at), _time(k.last_used_at)) for k in keys])
    return 0


@_fails
def cmd_apikey_revoke(args: argparse.Namespace) -> int:
    revoke_api_key(_engine(args), args.prefix)
    print(f"revoked the API key {args.prefix}: requests with it are refused from now on")
    return 0


def add_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register `user ...` and `apikey ...` on the main parser."""
    user = commands.add_parser("user", help="manage accounts").add_subparsers(dest="action", required=True)

    def email_command(name: str, help_: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        sub = user.add_parser(name, help=help_, parents=[common])
        sub.add_argument("email")
        sub.set_defaults(handler=handler)
        return sub

    add = email_command("add", "create an account", cmd_user_add)
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--admin", action="store_true", help="make the account an administrator")
    user.add_parser("list", help="every account", parents=[common]).set_defaults(handler=cmd_user_list)
    passwd = email_command("passwd", "set a new password and sign out every browser", cmd_user_passwd)
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    email_command("disable", "refuse sign-in, tokens and API keys", cmd_user_disable)
    email_command("enable", "allow a disabled account again", cmd_user_enable)
    invite = user.add_parser("invite", help="print a one-time sign-up link (valid 7 days)", parents=[common])
    invite.add_argument("--email", help="only this address may use the link")
    invite.set_defaults(handler=cmd_user_invite)
    delete = email_command("delete", "erase an account and everything of it", cmd_user_delete)
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    apikey = commands.add_parser("apikey", help="API keys for the legacy endpoint").add_subparsers(
        dest="action", required=True
    )
    for name, help_, handler in (
        ("create", "create an API key (shown once)", cmd_apikey_create),
        ("list", "a person's keys: prefix, created, last used", cmd_apikey_list),
    ):
        sub = apikey.add_parser(name, help=help_, parents=[common])
        sub.add_argument("email")
        sub.set_defaults(handler=handler)
    revoke = apikey.add_parser("revoke", help="revoke a key at once", parents=[common])
    revoke.add_argument("prefix", help="the key's prefix as `apikey list` shows it (jm_sk_...)")
    revoke.set_defaults(handler=cmd_apikey_revoke)
