"""The checks, one function each, in the order Claude meets the server.

Each area has its module: `transport` (https and the time budget), `resource_server` (the
401 challenge), `metadata` (discovery documents), `registration` (DCR and the authorization
request) and `cors` (browser clients). They run in the order of `CHECKS`; later ones use what
earlier ones found (see `Context`), so the order is written out here rather than left to
whichever module happens to be imported first.
"""

from __future__ import annotations

from jean_memory.doctor.checks import cors, metadata, registration, resource_server, transport
from jean_memory.doctor.checks.base import Check

__all__ = ["CHECKS", "Check"]

CHECKS: list[Check] = [
    transport.check_https,
    resource_server.check_unauthenticated_401,
    metadata.check_protected_resource_metadata,
    metadata.check_resource,
    metadata.check_as_metadata,
    metadata.check_openid_configuration,
    metadata.check_issuer,
    metadata.check_pkce_s256,
    metadata.check_token_auth_methods,
    metadata.check_iss_parameter,
    metadata.check_cimd,
    registration.check_registration,
    registration.check_authorization,
    cors.check_cors_metadata,
    cors.check_cors_mcp_401,
    transport.check_latency,
]
