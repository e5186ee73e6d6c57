"""Findings of the independent review of the issue 12 / issue 18 changes (one test per finding).

Tests of findings fixed in this branch pass; tests of findings in files other sessions are
restructuring are marked xfail(strict=True) until the lead applies the fix described in
the review report (strict: the marker must go when the fix lands).
"""

from __future__ import annotations

import pytest

from jean_memory import clock
from tests.support.oauth import McpHttp, new_flow


def mcp_status(server, token: str) -> int:
    return McpHttp(server.mcp_url, token).initialize().status_code


# --- finding 1: a refused refresh must leave the refresh token as it was -----------------------


@pytest.mark.parametrize("bad", [{"scope": "memory admin"}, {"resource": "https://elsewhere.example/mcp"}])
def test_a_refused_refresh_leaves_the_token_usable_after_the_grace_window(server, alice, bad):
    """RFC 6749 §5.2/§6: a refresh answered with an error changes nothing; the client keeps its
    token. Rotating first and checking scope/resource after marked the token used, so the same
    token sent again (correctly) after the grace window counted as reuse and revoked the grant."""
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    refused = flow.refresh(tokens["refresh_token"], **bad)
    assert refused.status_code == 400
    assert refused.json()["error"] in ("invalid_scope", "invalid_target")
    clock.advance(120)  # past the 60 s grace window
    again = flow.refresh(tokens["refresh_token"])
    assert again.status_code == 200, again.text
    assert mcp_status(server, again.json()["access_token"]) == 200
    assert mcp_status(server, tokens["access_token"]) == 200  # the grant lives on
