"""Run every check in order against one URL and collect the results."""

from __future__ import annotations

import httpx

from jean_memory.doctor.checks import CHECKS, Check
from jean_memory.doctor.claude import BUDGET_SECONDS
from jean_memory.doctor.context import Context
from jean_memory.doctor.fetcher import Fetcher, tls_verification
from jean_memory.doctor.results import CheckResult, Failed, Severity, Skip, Status, Verdict


def _conclude(check: Check, verdict: Verdict) -> Status:
    if verdict.ok:
        return Status.PASS
    if verdict.warning or check.severity is Severity.INFO:
        return Status.WARN
    return Status.FAIL


def run_check(check: Check, ctx: Context) -> CheckResult:
    """One check, with every way it can end turned into a printed line."""
    try:
        verdict = check.run(ctx)
    except Skip as skip:
        return CheckResult(check.name, check.title, Status.SKIP, check.severity, f"skipped: {skip.reason}")
    except Failed as failed:
        verdict = failed.verdict
    except Exception as exc:  # an answer no check foresaw must not hide the other checks
        verdict = Verdict(
            False,
            f"could not judge the answer ({type(exc).__name__}: {exc})",
            "The server answered in a shape this check did not expect; run with --json and compare with the "
            "specification it cites.",
        )
    return CheckResult(
        check.name, check.title, _conclude(check, verdict), check.severity, verdict.detail, verdict.fix, verdict.ms
    )


def diagnose(
    url: str,
    *,
    timeout: float = BUDGET_SECONDS,
    ca_file: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> list[CheckResult]:
    """Check `url` (the connector URL a person pastes) the way Claude would meet it.

    Each request may take `timeout` seconds; answers must come within the smaller of that and
    Claude's 10 s budget. Registers one client on the server, as Claude does on each connection.
    """
    with Fetcher(timeout=timeout, verify=tls_verification(ca_file), transport=transport) as fetcher:
        ctx = Context(url=url, fetcher=fetcher, budget_seconds=min(timeout, BUDGET_SECONDS))
        results: list[CheckResult] = []
        for check in CHECKS:
            result = run_check(check, ctx)
            ctx.results[check.name] = result
            results.append(result)
    return results


def exit_code(results: list[CheckResult]) -> int:
    """0 only when every required check passed; informational ones never count."""
    return 1 if any(result.blocks for result in results) else 0
