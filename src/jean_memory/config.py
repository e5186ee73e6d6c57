"""Every setting of the server, read once from the environment and the command line.

One frozen object is built at start-up and handed to whatever needs it, so nothing reads the
environment on a hot path and a test can build a second server with other settings in the same
process.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
SECRET_KEY_FILE = "jwt_secret.key"


class ConfigError(ValueError):
    """A setting is wrong in a way the person starting the server must fix."""


@dataclass(frozen=True)
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    issuer: str = ""
    database_url: str = ""
    data_dir: Path = Path("data")
    jwt_secret_key: str = field(default="", repr=False)
    jwt_secret_key_previous: str = field(default="", repr=False)  # still accepted while rotating keys
    jwt_secret_key_source: str = "env"
    trusted_proxies: tuple[str, ...] = ()  # addresses whose X-Forwarded-For/-Proto are believed
    metrics_enabled: bool = False
    log_format: str = "plain"  # plain | json
    shutdown_grace_seconds: int = 20
    access_token_seconds: int = 3600
    refresh_token_days: int = 30
    refresh_grace_seconds: int = 60
    code_seconds: int = 60
    authorization_request_seconds: int = 600
    browser_session_days: int = 14
    unused_client_days: int = 30
    trash_days: int = 30  # a deleted memory is restorable this long, then purged
    signup: str = "invite"  # who may make an account at /join: invite | open | closed
    revocation_cache_seconds: int = 30
    max_mcp_body_bytes: int = 10 * 1024 * 1024
    log_level: str = "INFO"
    embeddings: str = "local"  # local | openai | none
    embeddings_base_url: str = ""
    embeddings_api_key: str = field(default="", repr=False)
    embeddings_model: str = ""
    embeddings_model_path: str = ""
    local_model: str = "minilm"  # minilm (English) | use-multilingual | minilm+use
    llm_base_url: str = ""  # optional fact extraction by an OpenAI-compatible chat model; off when empty
    llm_api_key: str = field(default="", repr=False)
    llm_model: str = ""  # another copy of the local model file (default: the installed package's)
    # Client ID Metadata Documents (oauth/cimd.py): extra CA certificates (a PEM file) trusted, on
    # top of the public roots, when fetching a client's metadata document.
    cimd_ca_file: str = ""
    # TESTS ONLY, never read from the environment: host names whose metadata documents may be
    # fetched from a loopback address (the SSRF guard refuses loopback for every other name).
    cimd_test_loopback_hosts: tuple[str, ...] = ()

    @property
    def resource(self) -> str:
        """The one protected resource this server is: the URL people paste into Claude."""
        return f"{self.issuer}/mcp"

    @property
    def verification_keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.jwt_secret_key, self.jwt_secret_key_previous) if k)

    def derived_key(self, purpose: str) -> bytes:
        """A key of its own for `purpose`, derived from the current JWT key (see `derive_key`)."""
        return derive_key(self.jwt_secret_key, purpose)

    @property
    def issuer_is_https(self) -> bool:
        return self.issuer.startswith("https://")

    @property
    def issuer_is_loopback(self) -> bool:
        host = urlsplit(self.issuer).hostname or ""
        return is_loopback_host(host)

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)


def derive_key(secret: str, purpose: str) -> bytes:
    """HKDF-SHA256 (RFC 5869) of the JWT key for one purpose ("csrf", "refresh successor").

    A key has one use: the JWT key signs access tokens and nothing else. A MAC under that very
    key over a value an attacker chooses (a CSRF cookie) would be a signing oracle for tokens,
    so every other MAC in the server takes a key derived here, which no token check accepts.
    """
    prk = hmac.new(b"jean-memory key derivation", secret.encode(), hashlib.sha256).digest()  # extract
    info = f"jean-memory {purpose} v1".encode()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()  # expand, one 32-byte block


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_issuer(issuer: str) -> str:
    """The issuer must be byte-identical everywhere clients compare it, so refuse any spelling
    that some client would normalise differently (a path, a trailing slash, a query)."""
    parts = urlsplit(issuer)
    if parts.scheme not in ("http", "https") or not parts.hostname or issuer != issuer.strip():
        raise ConfigError(f"issuer {issuer!r} must be an http(s) URL such as https://memory.example.com")
    if parts.path not in ("",):
        hint = issuer.rstrip("/") if parts.path == "/" else f"{parts.scheme}://{parts.netloc}"
        raise ConfigError(
            f"issuer {issuer!r} must have no path and no trailing slash; use {hint!r} "
            "(the MCP endpoint is always {issuer}/mcp)"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"issuer {issuer!r} must have no query string or fragment")
    if parts.username or parts.password or "@" in parts.netloc:
        raise ConfigError(f"issuer {issuer!r} must not contain credentials")
    _check_issuer_host_and_port(issuer, parts.scheme, parts.netloc)
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _check_issuer_host_and_port(issuer: str, scheme: str, netloc: str) -> None:
    """Spellings clients normalise away (an empty or default port, a Unicode host name) would
    make the issuer and resource they compare differ from ours by a byte."""
    try:
        port = urlsplit(issuer).port
        if port == 0:
            raise ValueError("port 0")
    except ValueError as exc:
        raise ConfigError(f"issuer {issuer!r} has a port that is not a number from 1 to 65535") from exc
    host = netloc.rsplit(":", 1)[0] if not netloc.endswith("]") else netloc
    if netloc.endswith(":"):
        raise ConfigError(f"issuer {issuer!r} ends its host with an empty port; use {scheme}://{host}")
    if port == {"https": 443, "http": 80}[scheme]:
        raise ConfigError(f"issuer {issuer!r} names the default port; use {scheme}://{host.lower()}")
    if not host.isascii():
        try:
            ascii_host = host.encode("idna").decode()
        except UnicodeError:
            ascii_host = "its xn-- (punycode) form"
        raise ConfigError(f"issuer {issuer!r} has a non-ASCII host name; use {ascii_host} instead")


def _env_int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def _existing_file(env: dict[str, str], name: str) -> str:
    value = env.get(name) or ""
    if value and not Path(value).is_file():
        raise ConfigError(f"{name} names {value!r}, which is not a readable file")
    return value


def _choice(env: dict[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def load_settings(
    *,
    host: str | None = None,
    port: int | None = None,
    issuer: str | None = None,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
) -> Settings:
    """Build the settings from command-line values (which win) and the environment."""
    env = dict(os.environ if env is None else env)
    host = host or env.get("JEAN_MEMORY_HOST") or DEFAULT_HOST
    port = port if port is not None else _env_int(env, "JEAN_MEMORY_PORT", DEFAULT_PORT)
    if not 1 <= port <= 65535:
        raise ConfigError(f"the port must be from 1 to 65535, got {port}")
    data_dir = Path(env.get("JEAN_MEMORY_DATA_DIR") or "data")
    raw_issuer = issuer or env.get("JEAN_MEMORY_ISSUER") or ""
    if not raw_issuer:
        # Listening on every interface says nothing about the public name: fall back to loopback
        # (what works on this machine) and let `serve` warn that the issuer must be set.
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)  # noqa: S104
        raw_issuer = f"http://{shown_host}:{port}"
    database_url = database_url or env.get("DATABASE_URL") or ""
    if not database_url:
        database_url = f"sqlite:///{(data_dir / 'jean_memory.db').resolve()}"
    _check_database_url(database_url)
    return Settings(
        host=host,
        port=port,
        issuer=validate_issuer(raw_issuer),
        database_url=database_url,
        data_dir=data_dir,
        jwt_secret_key=env.get("JWT_SECRET_KEY", ""),
        jwt_secret_key_previous=env.get("JWT_SECRET_KEY_PREVIOUS", ""),
        trusted_proxies=_trusted_proxies(env.get("JEAN_MEMORY_TRUSTED_PROXIES", "")),
        metrics_enabled=_choice(env, "JEAN_MEMORY_METRICS", ("on", "off"), "off") == "on",
        log_format=_choice(env, "JEAN_MEMORY_LOG_FORMAT", ("plain", "json"), "plain"),
        shutdown_grace_seconds=_env_int(env, "JEAN_MEMORY_SHUTDOWN_SECONDS", 20),
        access_token_seconds=_env_int(env, "JEAN_MEMORY_ACCESS_TOKEN_SECONDS", 3600),
        refresh_token_days=_env_int(env, "JEAN_MEMORY_REFRESH_TOKEN_DAYS", 30),
        refresh_grace_seconds=_env_int(env, "JEAN_MEMORY_REFRESH_GRACE_SECONDS", 60),
        code_seconds=_env_int(env, "JEAN_MEMORY_CODE_SECONDS", 60),
        unused_client_days=_env_int(env, "JEAN_MEMORY_UNUSED_CLIENT_DAYS", 30),
        trash_days=_env_int(env, "JEAN_MEMORY_TRASH_DAYS", 30),
        signup=_choice(env, "JEAN_MEMORY_SIGNUP", SIGNUP_POLICIES, "invite"),
        revocation_cache_seconds=min(_env_int(env, "JEAN_MEMORY_REVOCATION_CACHE_SECONDS", 30), 60),
        log_level=_choice(env, "JEAN_MEMORY_LOG_LEVEL", LOG_LEVELS, "info").upper(),
        embeddings=_choice(env, "JEAN_MEMORY_EMBEDDINGS", ("local", "openai", "none"), "local"),
        embeddings_base_url=env.get("JEAN_MEMORY_EMBEDDINGS_BASE_URL", ""),
        embeddings_api_key=env.get("JEAN_MEMORY_EMBEDDINGS_API_KEY", ""),
        embeddings_model=env.get("JEAN_MEMORY_EMBEDDINGS_MODEL", ""),
        embeddings_model_path=env.get("JEAN_MEMORY_EMBEDDINGS_MODEL_PATH", ""),
        local_model=_choice(env, "JEAN_MEMORY_LOCAL_MODEL", ("minilm", "use-multilingual", "minilm+use"), "minilm"),
        llm_base_url=env.get("JEAN_MEMORY_LLM_BASE_URL", ""),
        llm_api_key=env.get("JEAN_MEMORY_LLM_API_KEY", ""),
        llm_model=env.get("JEAN_MEMORY_LLM_MODEL", "gpt-4o-mini"),
        cimd_ca_file=_existing_file(env, "JEAN_MEMORY_CIMD_CA_FILE"),
    )


SIGNUP_POLICIES = ("invite", "open", "closed")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _check_database_url(url: str) -> None:
    """Refuse a DATABASE_URL that cannot even be parsed, before anything tries to connect."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(
            f"DATABASE_URL cannot be parsed ({exc}); use sqlite:////path/to/file.db or "
            "postgresql://user:password@host:5432/name"
        ) from exc


def _trusted_proxies(raw: str) -> tuple[str, ...]:
    proxies = tuple(p.strip() for p in raw.split(",") if p.strip())
    if "*" in proxies:
        raise ConfigError(
            "JEAN_MEMORY_TRUSTED_PROXIES=* would let any client forge its address (and dodge rate limits); "
            "list your proxy's addresses or networks, e.g. 127.0.0.1 or 10.0.0.0/8"
        )
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError as exc:
            # Anything else would be accepted and never match: the proxy silently untrusted,
            # everyone sharing its address (and one stranger's failed sign-ins locking all out).
            raise ConfigError(
                f"JEAN_MEMORY_TRUSTED_PROXIES entry {proxy!r} is not an IP address or network "
                "(e.g. 127.0.0.1, ::1 or 10.0.0.0/8; no host names or ports)"
            ) from exc
    return proxies


PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_directory(path: Path) -> None:
    """Make the data directory (password hashes, memories, the key) this user's alone: created
    0700, and an existing one of ours narrowed to it, whatever the umask (issue 12 finding 8:
    under umask 022 it was 0755). A directory owned by someone else is left as it is."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)  # mode is masked by the umask...
    status = path.stat()
    if status.st_uid == os.geteuid() and status.st_mode & 0o777 != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)  # ...so set it exactly


def ensure_secret_key(settings: Settings) -> Settings:
    """Use JWT_SECRET_KEY when set; otherwise create a random key once in the data directory
    (mode 0600) so tokens survive restarts. Never fall back to a constant."""
    if settings.jwt_secret_key_previous and len(settings.jwt_secret_key_previous) < 32:
        raise ConfigError("JWT_SECRET_KEY_PREVIOUS must be at least 32 characters, like JWT_SECRET_KEY")
    if settings.jwt_secret_key:
        if len(settings.jwt_secret_key) < 32:
            raise ConfigError("JWT_SECRET_KEY must be at least 32 characters (try: openssl rand -hex 32)")
        return settings
    key_path = settings.data_dir / SECRET_KEY_FILE
    private_directory(settings.data_dir)
    if key_path.exists():
        key = key_path.read_text().strip()
        if len(key) < 32:
            raise ConfigError(f"{key_path} holds a key shorter than 32 characters; delete it to make a new one")
        return settings.with_overrides(jwt_secret_key=key, jwt_secret_key_source=str(key_path))
    key = secrets.token_hex(32)
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:  # another process made it first: use theirs
        return ensure_secret_key(settings)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return settings.with_overrides(jwt_secret_key=key, jwt_secret_key_source=f"{key_path} (new)")
