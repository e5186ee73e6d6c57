"""How the server's log lines look: one handler on stderr, plain or JSON, set up by `serve` and
by each worker process it starts."""

from __future__ import annotations

import logging
import sys

from jean_memory.observability.request_log import JsonFormatter


def configure_logging(level: str, log_format: str = "plain", with_pid: bool = False) -> None:
    """`with_pid`: each line names its process (`serve --workers N`: which worker said it)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(with_pid=with_pid))
    else:
        process = " [%(process)d]" if with_pid else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s{process} %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # our own request log replaces it
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if logging.getLogger().level > logging.DEBUG:
        # The MCP SDK says "Terminating session: None" at INFO after every stateless request,
        # which would double the one line per request; its warnings and errors still show.
        logging.getLogger("mcp").setLevel(logging.WARNING)
