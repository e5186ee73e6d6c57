"""Discovery documents: RFC 8414 authorization-server metadata and RFC 9728 protected-resource
metadata, built from the SDK's pydantic models so field names match the wire format exactly.

Both are computed once from the settings; the issuer is byte-identical in every document.
"""

from __future__ import annotations

from typing import Any

from mcp.shared.auth import OAuthMetadata, ProtectedResourceMetadata
from starlette.requests import Request
from starlette.responses import JSONResponse

from jean_memory.config import Settings
from jean_memory.oauth.clients import AUTH_METHODS, GRANT_TYPES
from jean_memory.oauth.scopes import RESOURCE_SCOPES, SUPPORTED_SCOPES

CACHE = {"Cache-Control": "public, max-age=300"}


def authorization_server_metadata(settings: Settings) -> dict[str, Any]:
    issuer = settings.issuer
    document = OAuthMetadata(
        issuer=issuer,
        authorization_endpoint=f"{issuer}/oauth/authorize",
        token_endpoint=f"{issuer}/oauth/token",
        registration_endpoint=f"{issuer}/oauth/register",
        revocation_endpoint=f"{issuer}/oauth/revoke",
        revocation_endpoint_auth_methods_supported=list(AUTH_METHODS),
        scopes_supported=list(SUPPORTED_SCOPES),
        response_types_supported=["code"],
        response_modes_supported=["query"],
        grant_types_supported=list(GRANT_TYPES),
        token_endpoint_auth_methods_supported=list(AUTH_METHODS),
        code_challenge_methods_supported=["S256"],
        authorization_response_iss_parameter_supported=True,
        # A client_id may be an https URL naming its metadata document (oauth/cimd.py); with
        # `none` above, this is what makes Claude and the MCP SDK pick CIMD over registration.
        client_id_metadata_document_supported=True,
    )
    body = document.model_dump(mode="json", exclude_none=True)
    body["issuer"] = issuer  # byte-exact, whatever URL normalisation the model applies
    return body


def protected_resource_metadata(settings: Settings) -> dict[str, Any]:
    document = ProtectedResourceMetadata(
        resource=settings.resource,
        authorization_servers=[settings.issuer],
        scopes_supported=list(RESOURCE_SCOPES),
        bearer_methods_supported=["header"],
        resource_name="Jean Memory",
    )
    body = document.model_dump(mode="json", exclude_none=True)
    body["resource"] = settings.resource
    body["authorization_servers"] = [settings.issuer]
    return body


class MetadataEndpoints:
    def __init__(self, settings: Settings) -> None:
        self._as_metadata = authorization_server_metadata(settings)
        self._pr_metadata = protected_resource_metadata(settings)

    async def authorization_server(self, request: Request) -> JSONResponse:
        return JSONResponse(self._as_metadata, headers=CACHE)

    async def protected_resource(self, request: Request) -> JSONResponse:
        return JSONResponse(self._pr_metadata, headers=CACHE)
