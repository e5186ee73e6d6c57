"""Stopping the processes tests start (servers, Caddy), one way everywhere."""

from __future__ import annotations

import subprocess

#: How long a process gets to finish its graceful shutdown (SIGTERM) before it is killed.
STOP_SECONDS = 10.0


def stop_process(process: subprocess.Popen, timeout: float = STOP_SECONDS) -> None:
    """SIGTERM, so the process shuts down as it would under a supervisor; SIGKILL if it has not
    exited within `timeout`, so a hung process cannot hang the test run. Returns once it is gone."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
