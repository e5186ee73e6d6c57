"""Prometheus metrics, in a registry of the app's own (so tests can build many apps in one process).

Off unless JEAN_MEMORY_METRICS=on: the endpoint reveals traffic patterns, so an operator opts in
and keeps it behind the proxy or a private network.

With `serve --workers N` every worker records into files in the directory named by
PROMETHEUS_MULTIPROC_DIR (set by `serve` before the workers start, so prometheus_client stores
its values there), and whichever worker answers /metrics reports the sum over all of them: a
scrape through the one port sees the whole server, not one worker's share.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

# The methods recorded by name; anything else a client sends is "other" (the HTTP parser accepts
# any token as a method, and each new label value would be a series kept for the process's life).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "jean_memory_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "jean_memory_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.tool_calls = Counter(
            "jean_memory_tool_calls", "MCP tool calls by tool and outcome", ["tool", "outcome"], registry=self.registry
        )
        self.tokens = Counter(
            "jean_memory_tokens_issued", "Access tokens issued, by grant type", ["grant_type"], registry=self.registry
        )
        self.sign_in_failures = Counter(
            "jean_memory_sign_in_failures", "Failed sign-ins on the login page", registry=self.registry
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method if method in KNOWN_METHODS else "other", route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    async def endpoint(self, request: Request) -> Response:
        registry = self.registry
        if os.environ.get(MULTIPROCESS_ENV):  # several workers: every worker's values, summed
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
