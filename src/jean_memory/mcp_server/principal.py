"""Who is calling: set by the auth layer for each request, read by the tools.

Tools never take a user id from the client; this is the only place they learn it.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    user_id: str
    email: str
    profile: str
    client_id: str
    scopes: tuple[str, ...]


current_principal: ContextVar[Principal | None] = ContextVar("jean_memory_principal", default=None)


def require_principal() -> Principal:
    principal = current_principal.get()
    if principal is None:  # only reachable if a route forgot its auth layer: fail closed
        raise PermissionError("no authenticated user for this request")
    return principal
