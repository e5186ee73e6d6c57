"""The resource server's first answer: 401 with a Bearer challenge that points at its metadata."""

from __future__ import annotations

from jean_memory.doctor.checks.base import check, error_summary, status_line
from jean_memory.doctor.context import Context
from jean_memory.doctor.discovery import has_bearer_challenge, protected_resource_candidates, resource_metadata_from
from jean_memory.doctor.results import Verdict


@check("unauthenticated-401", "401 on unauthenticated initialize")
def check_unauthenticated_401(ctx: Context) -> Verdict:
    """Claude first sends `initialize` without a token and starts OAuth only when the answer is
    401 with `WWW-Authenticate: Bearer resource_metadata="..."` (RFC 6750 §3.1, RFC 9728 §5.1,
    MCP authorization spec 2025-06-18 "Authorization Server Location"). A redirect, 200, 403 or
    5xx leaves Claude with nothing to follow."""
    probe = ctx.answer(ctx.probe())
    status = probe.status or 0
    location = probe.headers.get("location", "")
    if 300 <= status < 400:
        return Verdict(
            False,
            f"{status} redirect to {location}",
            "Answer at exactly this URL without redirecting: clients do not follow a redirect on POST "
            "(a 307 from /mcp to /mcp/ is the usual culprit, e.g. Starlette's Mount). Serve /mcp and /mcp/ alike.",
            probe.ms,
        )
    if 200 <= status < 300:
        return Verdict(
            False,
            f"{status}: the server answered without any token",
            "Require a Bearer token: answer a request without one with 401 and "
            'WWW-Authenticate: Bearer resource_metadata="<protected-resource metadata URL>", '
            "so that Claude starts OAuth (RFC 6750 §3.1, RFC 9728 §5.1).",
            probe.ms,
        )
    if status == 403:
        return Verdict(
            False,
            f"403 instead of 401 ({error_summary(probe) or 'no body'})",
            "Answer a missing or invalid token with 401, not 403 (RFC 6750 §3.1): Claude treats 403 as final and "
            'never starts OAuth. Keep 403 for error="insufficient_scope" only.',
            probe.ms,
        )
    if status in (404, 405):
        return Verdict(
            False,
            f"{status}: nothing serves POST at this URL",
            "Check the path you pasted (the MCP endpoint, usually /mcp) and that the server mounts its "
            "Streamable HTTP endpoint there.",
            probe.ms,
        )
    if status != 401:
        return Verdict(
            False,
            f"{status_line(probe)} instead of 401",
            "Decide authentication first: a request without a token must get 401 with WWW-Authenticate "
            "before any other validation or error (RFC 6750 §3.1).",
            probe.ms,
        )
    challenges = probe.headers.get_list("www-authenticate")
    if not challenges or not has_bearer_challenge(challenges):
        return Verdict(
            False,
            "401 without a Bearer WWW-Authenticate challenge" + (f" (got {challenges[0]!r})" if challenges else ""),
            'Send WWW-Authenticate: Bearer resource_metadata="<protected-resource metadata URL>" with the 401 '
            "(RFC 6750 §3, RFC 9728 §5.1).",
            probe.ms,
        )
    if resource_metadata_from(challenges) is None:
        return Verdict(
            False,
            f"401, but WWW-Authenticate has no resource_metadata: {challenges[0]!r}",
            f'Add resource_metadata="{protected_resource_candidates(ctx.url)[0]}" to the Bearer challenge '
            "(RFC 9728 §5.1; MCP authorization spec 2025-06-18 requires it).",
            probe.ms,
        )
    return Verdict(True, f"401, WWW-Authenticate: {challenges[0]}", ms=probe.ms)
