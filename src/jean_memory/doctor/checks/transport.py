"""Transport: https with a certificate Claude accepts, and answers within Claude's time budget."""

from __future__ import annotations

from urllib.parse import urlsplit

from jean_memory.doctor.checks.base import check
from jean_memory.doctor.context import Context
from jean_memory.doctor.discovery import is_loopback
from jean_memory.doctor.results import Skip, Verdict

# -- transport ---------------------------------------------------------------------------------


@check("https", "https with a valid certificate")
def check_https(ctx: Context) -> Verdict:
    """Claude calls the connector from Anthropic's cloud, over https only, and verifies the
    certificate (MCP authorization spec, "Communication Security": authorization endpoints MUST
    be served over HTTPS; OAuth 2.1 §1.5). Loopback hosts may use http for local testing."""
    parts = urlsplit(ctx.url)
    probe = ctx.probe()
    if probe.error_kind == "tls":
        return Verdict(
            False,
            f"TLS failed: {probe.error}",
            "Use a certificate from a public CA that covers this host name and send the full chain "
            "(e.g. Caddy or Let's Encrypt). For a private test CA pass --ca-file or set SSL_CERT_FILE.",
            probe.ms,
        )
    if probe.error_kind in ("connect", "other"):
        return Verdict(
            False,
            f"cannot connect to {parts.netloc}: {probe.error}",
            "Check the URL, that the server is running, and that its port is reachable from the internet "
            "(Claude connects from Anthropic's cloud, not from your machine).",
            probe.ms,
        )
    if parts.scheme == "https":
        if probe.error_kind == "timeout":
            raise Skip(
                f"no connection to {parts.netloc} within {ctx.fetcher.timeout:g} s (see 'answers within budget')"
            )
        return Verdict(True, f"certificate for {parts.hostname} verified", ms=probe.ms)
    if is_loopback(parts.hostname):
        return Verdict(
            True, f"http on loopback host {parts.hostname}: fine locally; Claude needs public https", ms=probe.ms
        )
    return Verdict(
        False,
        f"plain http on {parts.hostname}",
        "Claude only connects over https: put the server behind a TLS-terminating proxy (Caddy, nginx with "
        "Let's Encrypt, a tunnel) and paste the https URL.",
        probe.ms,
    )


# -- time ---------------------------------------------------------------------------------------------


@check("latency", "answers within budget")
def check_latency(ctx: Context) -> Verdict:
    """Claude gives discovery, registration and token requests 10 s each and then gives up
    with a generic error; `--timeout` can tighten the budget. Judges every request above."""
    budget_ms = ctx.budget_seconds * 1000
    exchanges = list(ctx.fetcher.exchanges)
    if not exchanges:
        raise Skip("no requests were made")
    slow = [e for e in exchanges if e.error_kind == "timeout" or (e.answered and e.ms > budget_ms)]
    slowest = max(exchanges, key=lambda e: e.ms)
    if slow:
        listed = "; ".join(f"{e.method} {urlsplit(e.url).path or '/'}: {e.error or f'{e.ms:.0f} ms'}" for e in slow[:4])
        return Verdict(
            False,
            f"{len(slow)} of {len(exchanges)} over {ctx.budget_seconds:g} s: {listed}",
            f"Answer every request within {ctx.budget_seconds:g} s: avoid cold starts (scale-to-zero hosting), "
            "slow database calls on discovery and the 401, and blocking work on the event loop.",
            slowest.ms,
        )
    return Verdict(
        True,
        f"{len(exchanges)} answers, slowest {slowest.ms:.0f} ms ({slowest.method} {urlsplit(slowest.url).path or '/'})",
        ms=slowest.ms,
    )
