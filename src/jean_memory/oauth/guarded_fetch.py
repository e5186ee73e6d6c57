"""The guarded HTTP fetch of a client metadata document: the one place CIMD touches the network.

Fetching a URL that anyone may type into `/oauth/authorize` is a server-side request forgery
risk, so the fetch is guarded:
- https only, on a URL with a path, without user info, fragment or dot segments;
- the host name is resolved once, every address it resolves to must be public (not private,
  loopback, link-local, CGNAT 100.64/10, unspecified, multicast or reserved; IPv4 addresses
  hidden in IPv6 - mapped, NAT64, 6to4 - are judged by the IPv4 address) or the fetch is
  refused before any connection; the connection then goes to an address that was checked,
  with TLS SNI, certificate check and Host header still naming the host, so a second DNS
  answer (rebinding) never reaches the socket: the resolution and the check happen inside
  httpcore's `connect_tcp`, the one place a connection is made;
- no redirects, no proxies from the environment, no compressed bodies, at most 5 KB read
  (streamed, stopping at the cap), 5 seconds in total for DNS, connect, TLS and body.

Fetches run in a small pool of their own (`FetchPool`), so a slow host never holds the threads
the database calls share. What the fetched document must say is `cimd_document`'s business,
and how long it is kept is `cimd`'s; `cache_seconds` only reads the HTTP freshness headers.
"""

from __future__ import annotations

import email.utils
import functools
import ipaddress
import json
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import anyio
import anyio.to_thread
import certifi
import httpcore
import httpx

from jean_memory import clock

FETCH_TIMEOUT_SECONDS = 5.0
MAX_DOCUMENT_BYTES = 5 * 1024
MIN_CACHE_SECONDS = 5 * 60
MAX_CACHE_SECONDS = 24 * 3600
DEFAULT_CACHE_SECONDS = 3600
FETCH_THREADS = 6  # concurrent fetches per instance, in threads of their own
FETCHES_PER_HOST = 2  # running or waiting, per host: one slow host never holds the pool
FETCHES_PER_REQUESTER = 4  # likewise per requesting address (a host may have many names)
MAX_URL_LENGTH = 2048
USER_AGENT = "jean-memory (OAuth client metadata fetch)"
NOT_PUBLIC = (
    "the app's address does not lead to a server on the public internet; client metadata documents are only "
    "fetched from public internet addresses"
)

CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")

Resolver = Callable[[str, int], Sequence[str]]


class CimdError(Exception):
    """Why a client metadata document cannot be used, in words a person can act on.

    `message` is what the error page shows: never text from the request or the document, and
    nothing about our network (which address a name resolves to); `detail` (also `str()`) is
    for the log and may say more. `transient`: the fetch failed for a network reason (a cached
    copy may still be served). `host_wide`: the host itself failed (no answer, not public), so
    other URLs on it would fail alike for a while. Raised by the fetch here and by the document
    rules (`cimd_document`), and remembered for a minute by `cimd_failures`."""

    def __init__(
        self, message: str, *, transient: bool = False, host_wide: bool = False, detail: str | None = None
    ) -> None:
        super().__init__(detail or message)
        self.message = message
        self.detail = detail or message
        self.transient = transient
        self.host_wide = host_wide


def check_client_id_url(url: str) -> None:
    """The draft's rules for the URL itself (§3): https, a path, no fragment, user info or dot segments."""
    if len(url) > MAX_URL_LENGTH:
        raise CimdError(f"the client_id URL is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise CimdError("the client_id URL contains white space or control characters")
    if not url.startswith("https://"):
        raise CimdError(
            "the client_id URL must start with https:// (client metadata documents are only fetched over https)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise CimdError("the client_id URL is not a valid URL (a malformed host or port)") from exc
    if not parts.hostname:
        raise CimdError("the client_id URL has no host name")
    if "@" in parts.netloc:
        raise CimdError("the client_id URL must not contain a user name or password")
    if "#" in url:
        raise CimdError("the client_id URL must not contain a fragment (#...)")
    if parts.path in ("", "/"):
        raise CimdError("the client_id URL must have a path (e.g. https://app.example/oauth/client.json)")
    if any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
        raise CimdError("the client_id URL must not contain dot segments (. or ..) in its path")


# --- the address guard ----------------------------------------------------------------------


def forbidden_reason(address: str) -> str | None:
    """Why we must not connect to `address` (a kind of non-public address), or None when it is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id (fe80::1%eth0)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = forbidden_reason(str(embedded))
            return f"{inner} (IPv4 {embedded} inside IPv6)" if inner else None
        if ip.teredo:
            return "a Teredo tunnel address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip in CGNAT:
        return "a shared (CGNAT, 100.64.0.0/10) address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "an address that is not publicly routable"
    return None


def resolve_host(host: str, port: int) -> list[str]:
    """The system resolver: every address `host` resolves to, in the order it gave them."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


_dns_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="cimd-dns")


class _Guard:
    """Resolve once and check every answer; which addresses the connection may then use."""

    def __init__(self, resolver: Resolver | None, loopback_hosts: Sequence[str]) -> None:
        self._resolver = resolver
        self._loopback_hosts = frozenset(h.lower() for h in loopback_hosts)

    def checked_addresses(self, host: str, port: int, deadline: float) -> list[str]:
        resolver = self._resolver or resolve_host  # looked up at call time, so tests can replace it
        left = deadline - time.monotonic()
        if left <= 0:
            raise CimdError(f"{host} did not answer in time", transient=True, host_wide=True)
        try:
            addresses = list(_dns_pool.submit(resolver, host, port).result(timeout=left))
        except FutureTimeout as exc:
            raise CimdError(f"looking up the host name {host} took too long", transient=True, host_wide=True) from exc
        except (OSError, UnicodeError) as exc:
            raise CimdError(
                f"the host name {host} could not be resolved", transient=True, host_wide=True, detail=f"{host}: {exc}"
            ) from exc
        if not addresses:
            raise CimdError(f"the host name {host} has no address", transient=True, host_wide=True)
        for address in addresses:
            try:
                reason = forbidden_reason(address)
            except ValueError as exc:
                raise CimdError(
                    NOT_PUBLIC, host_wide=True, detail=f"{host} resolved to {address!r}, which is not an IP address"
                ) from exc
            if reason == "a loopback address" and host.lower() in self._loopback_hosts:
                continue  # tests only: Settings.cimd_test_loopback_hosts
            if reason:
                # Which address an internal name has is for the log, never for whoever typed the URL.
                raise CimdError(
                    NOT_PUBLIC,
                    host_wide=True,
                    detail=f"{host} resolves to {address}, {reason}; client metadata documents are only fetched "
                    "from public internet addresses",
                )
        return addresses


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake must end by one overall deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _left(self, timeout: float | None) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the overall time limit was reached")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, self._left(timeout))
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    """httpcore's one door to the network: it connects only to addresses the guard checked."""

    def __init__(self, guard: _Guard, deadline: float) -> None:
        self._guard = guard
        self._deadline = deadline
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        addresses = self._guard.checked_addresses(host, port, self._deadline)
        failure: Exception | None = None
        for address in addresses:  # the checked addresses and nothing else
            left = self._deadline - time.monotonic()
            if left <= 0:
                break
            try:
                stream = self._inner.connect_tcp(
                    address,
                    port,
                    timeout=left if timeout is None else min(timeout, left),
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            return _DeadlineStream(stream, self._deadline)
        if failure is not None:
            raise failure
        raise httpcore.ConnectTimeout("the overall time limit was reached")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("client metadata documents are never fetched over a local socket")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        if hasattr(self._stream, "close"):
            self._stream.close()


class _GuardedTransport(httpx.BaseTransport):
    """httpx over an httpcore pool whose network backend is the guarded one (as httpx's own
    HTTPTransport does over the default backend)."""

    def __init__(self, ssl_context: ssl.SSLContext, backend: _GuardedBackend) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, network_backend=backend, max_connections=1, http1=True, http2=False, retries=0
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        response = self._pool.handle_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


# --- fetching -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    document: Any
    cache_seconds: int


def cache_seconds(headers: httpx.Headers, now: float | None = None) -> int:
    """How long to keep a document, from its response headers, clamped to [5 min, 24 h]."""
    directives: dict[str, str] = {}
    for part in headers.get("cache-control", "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip().strip('"')
    seconds: float = DEFAULT_CACHE_SECONDS
    if "no-store" in directives or "no-cache" in directives:
        seconds = 0
    elif "max-age" in directives:
        try:
            seconds = int(directives["max-age"])
        except ValueError:
            seconds = 0  # RFC 9111 §4.2.1: an invalid max-age means stale
    elif "expires" in headers:
        expires = _http_date(headers["expires"])
        if expires is None:
            seconds = 0  # RFC 9111 §5.3: an invalid Expires (e.g. "0") means already expired
        else:
            origin_now = _http_date(headers.get("date", "")) or (clock.now() if now is None else now)
            seconds = expires - origin_now
    return int(min(max(seconds, MIN_CACHE_SECONDS), MAX_CACHE_SECONDS))


def _http_date(value: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.timestamp() if parsed is not None and parsed.tzinfo is not None else None


@functools.lru_cache(maxsize=16)
def _tls_context(ca_file: str) -> ssl.SSLContext:
    """certifi's roots, plus `ca_file`'s when set. Loading the bundle is 24 ms, so each process
    loads it once (the test suite starts a thousand apps). One context was already shared by
    all of an app's fetches; httpcore sets the same ALPN list ("http/1.1") on it at each
    connect, and nothing else changes it."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


class CimdFetcher:
    """Fetch one metadata document under the SSRF guard; raises CimdError saying what went wrong."""

    def __init__(
        self,
        *,
        ca_file: str = "",
        loopback_hosts: Sequence[str] = (),
        resolver: Resolver | None = None,
        timeout: float = FETCH_TIMEOUT_SECONDS,
    ) -> None:
        self._ssl = _tls_context(ca_file)
        self._guard = _Guard(resolver, loopback_hosts)
        self._timeout = timeout

    def fetch(self, url: str) -> Fetched:
        check_client_id_url(url)
        deadline = time.monotonic() + self._timeout
        transport = _GuardedTransport(self._ssl, _GuardedBackend(self._guard, deadline))
        headers = {"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": USER_AGENT}
        limit = f"{self._timeout:g} second{'' if self._timeout == 1 else 's'}"
        try:
            with (
                httpx.Client(
                    transport=transport, follow_redirects=False, trust_env=False, timeout=self._timeout, headers=headers
                ) as http,
                http.stream("GET", url) as response,
            ):
                body = self._read(response, deadline)
                response_headers = response.headers
        except CimdError:
            raise
        except (httpx.TimeoutException, httpcore.TimeoutException) as exc:
            raise CimdError(f"the document did not arrive within {limit}", transient=True, host_wide=True) from exc
        except (httpx.HTTPError, httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
            # The exception's own words (addresses, errno) go to the log; the page gets the kind.
            detail = f"the document could not be fetched ({_describe(exc)})"
            untrusted = "certificate could not be verified" in detail
            message = detail if untrusted else "the document could not be fetched (no connection could be made)"
            raise CimdError(message, transient=True, host_wide=True, detail=detail) from exc
        try:
            document = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # also a 5,000-digit number or deep nesting
            raise CimdError("the document is not valid JSON") from exc
        return Fetched(document, cache_seconds(response_headers))

    def _read(self, response: httpx.Response, deadline: float) -> bytes:
        status = response.status_code
        if 300 <= status < 400:
            raise CimdError(
                f"the URL answered with a redirect (HTTP {status}); the document must be served at its own URL, "
                "redirects are not followed"
            )
        if status != 200:
            transient = status in (408, 429) or status >= 500
            raise CimdError(f"the URL answered HTTP {status} instead of the document", transient=transient)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise CimdError(
                "the document was sent compressed; it must be sent uncompressed",
                detail=f"the document was sent compressed ({encoding!r}); it must be sent uncompressed",
            )
        too_big = f"the document is larger than {MAX_DOCUMENT_BYTES // 1024} KB"
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_DOCUMENT_BYTES:
            raise CimdError(too_big)
        body = bytearray()
        for chunk in response.iter_raw():
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise CimdError(too_big)
            if time.monotonic() > deadline:
                raise httpcore.ReadTimeout("the overall time limit was reached")
        return bytes(body)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "its TLS certificate could not be verified"
    return text[:200]


# --- the pool the fetches run in ------------------------------------------------------------

T = TypeVar("T")


class FetchPool:
    """At most FETCH_THREADS fetches at once per instance, in threads of their own (never the
    pool the database calls share): a host that answers slowly ties up at most those, while
    sign-in and `/mcp` go on.

    The threads are shared fairly: one host, and one requesting address, may have at most
    FETCHES_PER_HOST / FETCHES_PER_REQUESTER fetches running or waiting. Without that, one
    address naming many valid documents that arrive just inside the time limit (never cached
    as failures) held every thread, and another app's sign-in page waited behind them (review
    finding 9); the cap per requester covers a host with many names. A request over a cap is
    told to try again (a transient error: not remembered as the document's failure)."""

    def __init__(self, threads: int = FETCH_THREADS) -> None:
        self._threads = threads
        self._limiter: anyio.CapacityLimiter | None = None
        self._per_host: Counter[str] = Counter()
        self._per_requester: Counter[str] = Counter()

    async def run(self, fetch: Callable[[str], T], url: str, requester: str | None = None) -> T:
        """`fetch(url)` in one of the pool's threads (blocking calls only). Runs on the event
        loop's thread, so the counts need no lock."""
        if self._limiter is None:  # made on first use, inside the event loop
            self._limiter = anyio.CapacityLimiter(self._threads)
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:  # checked before it got here; a malformed one shares the "" bucket
            host = ""
        if self._per_host[host] >= FETCHES_PER_HOST or (
            requester is not None and self._per_requester[requester] >= FETCHES_PER_REQUESTER
        ):
            raise CimdError(
                "The app's client metadata document could not be fetched just now: too many fetches are under "
                "way. Try again in a minute.",
                transient=True,
                detail=f"fetch not started: {self._per_host[host]} fetches from host {host!r} under way",
            )
        self._per_host[host] += 1
        if requester is not None:
            self._per_requester[requester] += 1
        try:
            return await anyio.to_thread.run_sync(fetch, url, limiter=self._limiter)
        finally:
            self._per_host[host] -= 1
            if self._per_host[host] <= 0:
                del self._per_host[host]
            if requester is not None:
                self._per_requester[requester] -= 1
                if self._per_requester[requester] <= 0:
                    del self._per_requester[requester]
