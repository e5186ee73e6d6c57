"""Recent failures to fetch client metadata documents, remembered for a minute (a negative cache).

Anyone may type a `client_id` URL into `/oauth/authorize`. Without this, every request naming a
slow or dead host started a new fetch of up to 5 s; with it, a URL that just failed answers
with the same error at once, and a host that did not answer (or is not public) is not tried
again for any of its URLs until the entry expires. Per instance and in memory: a minute of
refusals is all it holds, so sharing it between instances buys nothing.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

from jean_memory import clock
from jean_memory.oauth.guarded_fetch import CimdError

FAILURE_SECONDS = 60
MAX_ENTRIES = 4096  # per map; a flood of distinct URLs can only make it forget sooner


def host_of(url: str) -> str | None:
    """host:port of an https URL, lowercased; None when it does not parse."""
    try:
        parts = urlsplit(url)
        return f"{(parts.hostname or '').lower()}:{parts.port or 443}" if parts.hostname else None
    except ValueError:
        return None


class FailureCache:
    """Thread-safe: consulted on the event loop and in the fetch threads."""

    def __init__(self, seconds: float = FAILURE_SECONDS) -> None:
        self._seconds = seconds
        self._by_url: dict[str, tuple[float, CimdError]] = {}
        self._by_host: dict[str, tuple[float, CimdError]] = {}
        self._lock = threading.Lock()

    def remember(self, url: str, error: CimdError) -> None:
        until = clock.now() + self._seconds
        host = host_of(url) if error.host_wide else None
        with self._lock:
            self._put(self._by_url, url, (until, error))
            if host is not None:
                self._put(self._by_host, host, (until, error))

    def recent(self, url: str) -> CimdError | None:
        """The error a fetch of `url` (or of its host) ended with less than a minute ago."""
        now = clock.now()
        host = host_of(url)
        with self._lock:
            for entries, key in ((self._by_url, url), (self._by_host, host)):
                entry = entries.get(key) if key is not None else None
                if entry is not None:
                    if entry[0] > now:
                        return entry[1]
                    del entries[key]
        return None

    def _put(self, entries: dict[str, tuple[float, CimdError]], key: str, entry: tuple[float, CimdError]) -> None:
        if len(entries) >= MAX_ENTRIES and key not in entries:
            now = clock.now()
            for stale in [k for k, (until, _) in entries.items() if until <= now]:
                del entries[stale]
            if len(entries) >= MAX_ENTRIES:
                entries.clear()
        entries[key] = entry
