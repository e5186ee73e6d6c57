"""What the checks learn about the server as they go, shared from one check to the next.

Checks run in order: the probe, then the documents it leads to, then the requests those
documents describe. A check that needs something an earlier check could not obtain raises
`Skip`; the earlier check has already reported the cause.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jean_memory.doctor import claude
from jean_memory.doctor.discovery import origin
from jean_memory.doctor.fetcher import Exchange, Fetcher
from jean_memory.doctor.results import CheckResult, Failed, Skip, Status


@dataclass
class Context:
    url: str
    fetcher: Fetcher
    budget_seconds: float
    results: dict[str, CheckResult] = field(default_factory=dict)
    prm: dict[str, Any] | None = None
    prm_exchange: Exchange | None = None
    as_metadata: dict[str, Any] | None = None
    as_exchange: Exchange | None = None
    client_id: str | None = None
    _probe: Exchange | None = None

    # -- requests -------------------------------------------------------------------------

    def probe(self) -> Exchange:
        """Claude's first request: `initialize` with no token and no Origin (made once)."""
        if self._probe is None:
            self._probe = self.fetcher.request(
                "POST", self.url, headers=claude.PROBE_HEADERS, json_body=claude.INITIALIZE_BODY
            )
        return self._probe

    def get_document(self, url: str, headers: dict[str, str] | None = None) -> Exchange:
        """GET a metadata document; redirects are followed, as HTTP clients do for GET."""
        return self.fetcher.request(
            "GET", url, headers={"Accept": "application/json", **(headers or {})}, follow_redirects=True
        )

    def answer(self, exchange: Exchange) -> Exchange:
        """The exchange if the server answered; otherwise skip or fail the current check.

        A timeout is judged by the latency check, and an unreachable MCP host by the https
        check, so those skip here; any other transport failure is this check's to report.
        """
        if exchange.answered:
            return exchange
        if exchange.error_kind == "timeout":
            raise Skip(f"{exchange.method} {exchange.url}: {exchange.error} (see 'answers within budget')")
        https = self.results.get("https")
        if origin(exchange.url) == origin(self.url) and https is not None and https.status is Status.FAIL:
            raise Skip(f"cannot connect to {origin(self.url)} (see 'https')")
        raise Failed(
            f"{exchange.method} {exchange.url}: {exchange.error}",
            "Make this URL reachable from the internet over https with a publicly trusted certificate.",
            exchange.ms,
        )

    # -- what earlier checks found ------------------------------------------------------------

    def require_prm(self) -> dict[str, Any]:
        if self.prm is None:
            raise Skip("no protected-resource metadata (see above)")
        return self.prm

    def require_as_metadata(self) -> dict[str, Any]:
        if self.as_metadata is None:
            raise Skip("no authorization-server metadata (see above)")
        return self.as_metadata

    def passed(self, name: str) -> bool:
        result = self.results.get(name)
        return result is not None and result.status is Status.PASS

    def authorization_server(self) -> str:
        """`authorization_servers[0]` of the protected-resource metadata: where Claude goes next."""
        return self.require_prm()["authorization_servers"][0]

    def as_ms(self) -> float | None:
        return self.as_exchange.ms if self.as_exchange else None
