"""Timed HTTP exchanges with the server under test.

Every request is recorded with how long its answer took, so the latency check can judge all of
them against Claude's budget. Transport failures (timeouts, TLS, refused connections) become
part of the exchange instead of exceptions, because a broken server is what the doctor expects
to meet. Bodies are read up to a cap and a deadline: an unauthenticated server may answer the
probe with an endless event stream.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

USER_AGENT = "jean-memory-doctor/0.1"
MAX_BODY_BYTES = 256 * 1024

ErrorKind = Literal["timeout", "tls", "connect", "other"]


@dataclass
class Exchange:
    """One request and what came back (or why nothing did)."""

    method: str
    url: str
    ms: float
    status: int | None = None
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    body: bytes = b""
    error: str = ""
    error_kind: ErrorKind | None = None

    @property
    def answered(self) -> bool:
        return self.status is not None

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None when it is anything else."""
        try:
            value = json.loads(self.body)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def describe(self) -> str:
        """A short account for a person: `401`, `timed out after 500 ms`, ..."""
        if self.status is not None:
            location = self.headers.get("location")
            return (
                f"{self.status} redirect to {location}" if location and 300 <= self.status < 400 else str(self.status)
            )
        return self.error


def tls_verification(ca_file: str | None) -> ssl.SSLContext | bool:
    """httpx's default verification (certifi's public roots), or a private CA for tests.

    `--ca-file` wins over the environment's SSL_CERT_FILE; both replace the public roots, as
    OpenSSL's own SSL_CERT_FILE does.
    """
    path = ca_file or os.environ.get("SSL_CERT_FILE")
    return ssl.create_default_context(cafile=path) if path else True


def _classify(exc: httpx.HTTPError) -> ErrorKind:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return "tls"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ConnectError):
        return "tls" if "SSL" in str(exc) or "certificate" in str(exc) else "connect"
    return "other"


class Fetcher:
    """An httpx client that never follows redirects unless asked and records every exchange."""

    def __init__(
        self,
        *,
        timeout: float,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.timeout = timeout
        self.exchanges: list[Exchange] = []
        self._client = httpx.Client(
            timeout=timeout, verify=verify, transport=transport, headers={"User-Agent": USER_AGENT}
        )

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        follow_redirects: bool = False,
    ) -> Exchange:
        start = time.perf_counter()
        deadline = start + self.timeout
        exchange = Exchange(method=method, url=url, ms=0.0)
        try:
            with self._client.stream(
                method, url, headers=headers, params=params, json=json_body, follow_redirects=follow_redirects
            ) as response:
                exchange.status = response.status_code
                exchange.headers = response.headers
                exchange.url = str(response.url)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) >= MAX_BODY_BYTES or time.perf_counter() > deadline:
                        break
                exchange.body = bytes(body)
        except httpx.HTTPError as exc:
            exchange.error_kind = _classify(exc)
            exchange.error = (
                f"no answer within {self.timeout:g} s"
                if exchange.error_kind == "timeout"
                else f"{type(exc).__name__}: {exc}"
            )
            if exchange.status is not None and exchange.error_kind == "timeout":
                exchange.error = f"{exchange.status}, but the body did not arrive within {self.timeout:g} s"
                exchange.status = None
        exchange.ms = (time.perf_counter() - start) * 1000
        self.exchanges.append(exchange)
        return exchange
