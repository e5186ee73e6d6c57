"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP 2025-11-25).

A `client_id` that is an https URL names a JSON document describing the client (its name and
redirect URIs). Instead of registering, the client sends that URL; we fetch the document,
check it, and treat the client as a public one (`none`, PKCE protects the code).

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

Cache (in `oauth_clients`, source `cimd`, so every instance shares it): a document is used for
its HTTP freshness lifetime (Cache-Control max-age, else Expires, else 1 hour), clamped to
[5 minutes, 24 hours]; `no-store`/`no-cache` count as the 5 minute minimum, because the
document must stay known through one authorization (authorize, sign-in, consent, token) and
the floor bounds how often a client can make us fetch. Once expired it is fetched again.
If that re-fetch fails:
- for a network reason (no connection, timeout, TLS failure, HTTP 408/429/5xx) and the
  cached copy was fetched less than 24 hours ago: keep using the cached copy, and try again
  in 5 minutes (an outage at the client's site should not lock its users out);
- otherwise (the site answered, and the answer is a 404, a redirect, not JSON, or a document
  that fails the checks): the cached copy is dropped at once, because the publisher has
  withdrawn or changed it and we must not keep honouring redirect URIs it took back.
Then, for the exact URLs of the documents pinned in `pinned_clients/` (Claude's, Claude
Code's and ChatGPT's; sources in its README), the pinned copy is used when the fetch fails (claude.ai has answered data-centre
fetches with a bot challenge), and retried after the default hour. A failure is remembered for a
minute (`cimd_failures`), and fetches run in a small pool of their own (`CimdClients`).
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import anyio.to_thread
import certifi
import httpcore
import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from jean_memory import clock
from jean_memory.db.tables import oauth_clients
from jean_memory.oauth.cimd_failures import FailureCache
from jean_memory.oauth.clients import CIMD_STALE_SECONDS, GRANT_TYPES, Client, client_from_row
from jean_memory.oauth.forms import is_valid_text
from jean_memory.oauth.redirects import RedirectUriError, check_registrable_list
from jean_memory.oauth.scopes import grantable_scope
from jean_memory.off_loop import run_db

FETCH_TIMEOUT_SECONDS = 5.0
MAX_DOCUMENT_BYTES = 5 * 1024
MIN_CACHE_SECONDS = 5 * 60
MAX_CACHE_SECONDS = 24 * 3600
DEFAULT_CACHE_SECONDS = 3600
RETRY_AFTER_FAILURE_SECONDS = 5 * 60
FETCH_THREADS = 6  # concurrent fetches per instance, in threads of their own
MAX_URL_LENGTH = 2048
SHARED_SECRET_METHODS = ("client_secret_post", "client_secret_basic", "client_secret_jwt")
USER_AGENT = "jean-memory (OAuth client metadata fetch)"
NOT_PUBLIC = (
    "the app's address does not lead to a server on the public internet; client metadata documents are only "
    "fetched from public internet addresses"
)

CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")

logger = logging.getLogger("jean_memory.oauth")

Resolver = Callable[[str, int], Sequence[str]]


class CimdError(Exception):
    """Why a client metadata document cannot be used, in words a person can act on.

    `message` is what the error page shows: never text from the request or the document, and
    nothing about our network (which address a name resolves to); `detail` (also `str()`) is
    for the log and may say more. `transient`: the fetch failed for a network reason (a cached
    copy may still be served). `host_wide`: the host itself failed (no answer, not public), so
    other URLs on it would fail alike for a while."""

    def __init__(
        self, message: str, *, transient: bool = False, host_wide: bool = False, detail: str | None = None
    ) -> None:
        super().__init__(detail or message)
        self.message = message
        self.detail = detail or message
        self.transient = transient
        self.host_wide = host_wide


def is_metadata_url(client_id: str | None) -> bool:
    """Whether a client_id is meant as a metadata document URL (http:// is refused later, with a reason)."""
    return bool(client_id) and client_id[:8].lower().startswith(("https://", "http://"))


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
        self._ssl = ssl.create_default_context(cafile=certifi.where())
        if ca_file:
            self._ssl.load_verify_locations(cafile=ca_file)
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


# --- the document ---------------------------------------------------------------------------


def validate_document(url: str, document: Any) -> dict[str, Any]:
    """The client's fields from its document, or CimdError naming the first thing that is wrong."""
    if not isinstance(document, dict):
        raise CimdError("the document is not a JSON object")
    if not is_valid_text(document):
        raise CimdError("the document holds text that is not valid Unicode (e.g. a lone surrogate such as \\udfff)")
    found = document.get("client_id")
    if found is None:
        raise CimdError("the document has no client_id (it must equal the document's URL)")
    if found != url:
        raise CimdError(
            "the document's client_id must equal the URL it was fetched from exactly",
            detail=f"the document's client_id is {found!r}, but it must equal the URL it was fetched from exactly",
        )
    name = document.get("client_name")
    if not isinstance(name, str) or not name.strip():
        raise CimdError("the document has no client_name")
    uris = document.get("redirect_uris")
    if not isinstance(uris, list) or not uris:
        raise CimdError("the document's redirect_uris must be a non-empty list")
    try:
        redirect_uris = check_registrable_list(uris)
    except RedirectUriError as exc:
        # The page names the rule broken, not the URI: the document's text is not ours to show.
        raise CimdError(
            f"the document's redirect_uris are not acceptable: a redirect URI {exc.reason}",
            detail=f"the document's redirect_uris are not acceptable: {exc}",
        ) from exc
    if "client_secret" in document or "client_secret_expires_at" in document:
        raise CimdError("the document contains a client_secret; a metadata document must not hold a secret")
    _check_auth_method(document)
    grant_types = document.get("grant_types")
    if grant_types is None:
        grant_types = list(GRANT_TYPES)
    if not isinstance(grant_types, list) or "authorization_code" not in grant_types:
        raise CimdError("the document's grant_types must include authorization_code")
    response_types = document.get("response_types")
    if response_types is not None and (not isinstance(response_types, list) or "code" not in response_types):
        raise CimdError("the document's response_types must include code")
    scope = document.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise CimdError("the document's scope must be a space-separated string")
    return {
        "client_name": name.strip()[:255],
        "redirect_uris": redirect_uris,
        "token_endpoint_auth_method": "none",
        # Grant types we do not offer (Claude lists jwt-bearer) are ignored, not refused.
        "grant_types": [g for g in GRANT_TYPES if g in grant_types],
        "scope": grantable_scope(scope) if scope else None,
    }


def _check_auth_method(document: dict[str, Any]) -> None:
    """CIMD clients are public here: `none`, the only method that needs nothing registered.

    Both the RFC 7591 field and the plural list some documents carry are read, and a client is
    accepted when either offers `none`: ChatGPT's document names `private_key_jwt` but lists
    `["none", "private_key_jwt"]`, so it connects as a public client. A document offering
    neither field is taken as `none` (there is no secret it could be using)."""
    method = document.get("token_endpoint_auth_method")
    supported = document.get("token_endpoint_auth_methods_supported")
    if method is not None and not isinstance(method, str):
        raise CimdError("the document's token_endpoint_auth_method must be a string")
    if supported is not None and (not isinstance(supported, list) or not all(isinstance(m, str) for m in supported)):
        raise CimdError("the document's token_endpoint_auth_methods_supported must be a list of strings")
    offered = ([method] if method is not None else []) + list(supported or [])
    if not offered or "none" in offered:
        return
    if "private_key_jwt" in offered:
        raise CimdError(
            "the document asks for private_key_jwt client authentication, which this server does not support; "
            'the app must offer token_endpoint_auth_method "none" (a public client using PKCE)'
        )
    shared = [m for m in offered if m in SHARED_SECRET_METHODS]
    if shared:
        raise CimdError(
            f"the document asks for {shared[0]}, a shared-secret method, but an app identified by a metadata "
            'document has no secret registered with this server; it must use token_endpoint_auth_method "none"'
        )
    raise CimdError(
        'the document\'s token_endpoint_auth_method is not supported; use "none"',
        detail=f'the document\'s token_endpoint_auth_method {offered[0]!r} is not supported; use "none"',
    )


# --- pinned copies --------------------------------------------------------------------------

PINNED_DIRECTORY = "pinned_clients"


@cache
def pinned_documents() -> dict[str, dict[str, Any]]:
    """The documents shipped in `pinned_clients/`, by their client_id (each must validate)."""
    documents: dict[str, dict[str, Any]] = {}
    folder = resources.files("jean_memory.oauth").joinpath(PINNED_DIRECTORY)
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            document = json.loads(entry.read_text(encoding="utf-8"))
            validate_document(document["client_id"], document)
            documents[document["client_id"]] = document
    return documents


# --- the cache in the database --------------------------------------------------------------


@dataclass(frozen=True)
class _Cached:
    client: Client
    expires_at: float
    fetched_at: float
    via: str


def _load(engine: Engine, client_id: str) -> tuple[Client, _Cached | None] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(oauth_clients).where(oauth_clients.c.client_id == client_id)).first()
    if row is None:
        return None
    client = client_from_row(row)
    if row.source != "cimd":
        return client, None
    meta = row.metadata if isinstance(row.metadata, dict) else {}
    cached = _Cached(
        client=client,
        expires_at=float(row.expires_at or 0),
        fetched_at=float(meta.get("fetched_at") or 0),
        via=str(meta.get("via") or ""),
    )
    return client, cached


def _store(engine: Engine, url: str, fields: dict[str, Any], document: dict[str, Any], via: str, ttl: int) -> Client:
    now = clock.now()
    values = {
        **fields,
        "client_secret_hash": None,
        "source": "cimd",
        "metadata": {"document": document, "fetched_at": now, "via": via},
        "expires_at": now + ttl,
    }
    update = oauth_clients.update().where(oauth_clients.c.client_id == url).values(**values)
    with engine.begin() as conn:
        updated = conn.execute(update).rowcount
    if not updated:
        try:
            with engine.begin() as conn:
                conn.execute(oauth_clients.insert().values(client_id=url, created_at=now, **values))
        except IntegrityError:  # another request or instance stored it first: ours is as fresh
            with engine.begin() as conn:
                conn.execute(update)
    return Client(client_id=url, client_secret_hash=None, source="cimd", **fields)


def _retry_later(engine: Engine, url: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            oauth_clients.update()
            .where(oauth_clients.c.client_id == url, oauth_clients.c.source == "cimd")
            .values(expires_at=clock.now() + RETRY_AFTER_FAILURE_SECONDS)
        )


def _forget(engine: Engine, url: str) -> None:
    with engine.begin() as conn:
        conn.execute(oauth_clients.delete().where(oauth_clients.c.client_id == url, oauth_clients.c.source == "cimd"))


class CimdClients:
    """Clients named by metadata document URLs, fetched on demand and cached in the database.

    Fetches run in their own few threads (FETCH_THREADS), never in the pool the database calls
    share: a host that answers slowly ties up at most those, while sign-in and `/mcp` go on.
    A failed fetch is remembered for a minute, per URL and (for a host that did not answer or
    is not public) per host, so asking again costs nothing (cimd_failures)."""

    def __init__(self, engine: Engine, fetcher: CimdFetcher) -> None:
        self._engine = engine
        self._fetcher = fetcher
        self._failures = FailureCache()
        self._limiter: anyio.CapacityLimiter | None = None

    def get(self, url: str) -> Client:
        """The client the document at `url` describes, or CimdError saying why it cannot be used.
        Blocking (for callers already in a thread); `get_async` keeps the fetch in its own pool."""
        client, cached = self._from_cache(url)
        if client is not None:
            return client
        try:
            fetched = self._fetch_unless_failed(url)
        except CimdError as exc:
            return self._after_failure(url, cached, exc)
        return self._accept(url, cached, fetched)

    async def get_async(self, url: str) -> Client:
        client, cached = await run_db(self._from_cache, url)
        if client is not None:
            return client
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(FETCH_THREADS)
        try:
            fetched = await anyio.to_thread.run_sync(self._fetch_unless_failed, url, limiter=self._limiter)
        except CimdError as exc:
            return await run_db(self._after_failure, url, cached, exc)
        return await run_db(self._accept, url, cached, fetched)

    def _from_cache(self, url: str) -> tuple[Client | None, _Cached | None]:
        loaded = _load(self._engine, url)
        if loaded is not None and loaded[1] is None:
            return loaded[0], None  # pre-registered under this URL (static): the registration wins
        cached = loaded[1] if loaded else None
        if cached is not None and cached.expires_at > clock.now():
            return cached.client, cached
        return None, cached

    def _fetch_unless_failed(self, url: str) -> Fetched:
        """Checked again here, in the fetch thread: a request that waited for a thread while
        another fetch of the same URL or host failed answers at once."""
        failed = self._failures.recent(url)
        if failed is not None:
            raise failed
        try:
            return self._fetcher.fetch(url)
        except CimdError as exc:
            self._failures.remember(url, exc)
            raise

    def _accept(self, url: str, cached: _Cached | None, fetched: Fetched) -> Client:
        try:
            fields = validate_document(url, fetched.document)
        except CimdError as exc:
            self._failures.remember(url, exc)
            return self._after_failure(url, cached, exc)
        return _store(self._engine, url, fields, fetched.document, "network", fetched.cache_seconds)

    def _after_failure(self, url: str, cached: _Cached | None, exc: CimdError) -> Client:
        if (
            exc.transient
            and cached is not None
            and cached.via == "network"
            and clock.now() - cached.fetched_at < CIMD_STALE_SECONDS
        ):
            logger.warning("client metadata %r: %s; using the copy fetched earlier", url, exc.detail)
            _retry_later(self._engine, url)
            return cached.client
        pinned = pinned_documents().get(url)
        if pinned is not None:
            logger.warning("client metadata %r: %s; using the pinned copy shipped with the server", url, exc.detail)
            return _store(self._engine, url, validate_document(url, pinned), pinned, "pinned", DEFAULT_CACHE_SECONDS)
        if cached is not None:
            _forget(self._engine, url)
        logger.info("client metadata %r refused: %s", url, exc.detail)
        raise exc
