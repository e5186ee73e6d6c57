"""Caddy as a real TLS-terminating reverse proxy in front of a test server, on loopback only.

The site block is `deploy/Caddyfile`, the file docs/deploy.md tells people to install, with only
its host name and upstream port replaced. The global options keep everything on this machine:
no admin endpoint and no autosaved config, certificates from Caddy's internal CA instead of
ACME (`local_certs`), no installing that CA into the system trust store, no OCSP, no
http->https redirect listener, loopback only, HTTP/1.1 and HTTP/2 over TCP. Caddy's storage
(its CA and certificates) lives in a temporary XDG_DATA_HOME, so a test trusts the root CA from
there.

Caddy comes from the Debian package `caddy` (scripts/install-ci-deps.sh installs it). Without
it tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
DEPLOY_CADDYFILE = REPO / "deploy" / "Caddyfile"
DEPLOY_HOST = "memory.example.com"
DEPLOY_UPSTREAM = "127.0.0.1:8000"

GLOBAL_OPTIONS = """\
{
	admin off
	auto_https disable_redirects
	skip_install_trust
	local_certs
	ocsp_stapling off
	default_bind 127.0.0.1
	servers {
		protocols h1 h2
	}
}
"""


def caddy_binary() -> str:
    """The `caddy` command, or skip the test (fail it under CI=true)."""
    found = shutil.which("caddy")
    if found is None:
        reason = "Caddy is not installed (apt-get install caddy, or bash scripts/install-ci-deps.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the reverse-proxy tests cannot run: {reason}", pytrace=False)
        pytest.skip(reason)
    return found


def caddyfile_for(port: int, upstream_port: int) -> str:
    """deploy/Caddyfile for `https://localhost:{port}` in front of 127.0.0.1:{upstream_port}."""
    site = DEPLOY_CADDYFILE.read_text()
    for old in (DEPLOY_HOST + " {", DEPLOY_UPSTREAM):
        assert site.count(old) == 1, (
            f"deploy/Caddyfile no longer has exactly one {old!r}: update tests/support/caddy.py"
        )
    site = site.replace(DEPLOY_HOST + " {", f"https://localhost:{port} {{").replace(
        DEPLOY_UPSTREAM, f"127.0.0.1:{upstream_port}"
    )
    return GLOBAL_OPTIONS + "\n" + site


@dataclass
class RunningCaddy:
    base_url: str  # https://localhost:PORT, the public URL (the issuer)
    ca_file: Path  # Caddy's internal root CA: what a client must trust
    log_path: Path

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self, local_address: str | None = None, **options: object) -> httpx.Client:
        """An https client trusting Caddy's CA; `local_address` picks the address it connects from."""
        transport = httpx.HTTPTransport(verify=self.ssl_context(), local_address=local_address)
        return httpx.Client(transport=transport, timeout=30, **options)  # type: ignore[arg-type]


@contextmanager
def caddy_proxy(port: int, upstream_port: int, workdir: Path, timeout: float = 20.0) -> Iterator[RunningCaddy]:
    """Run Caddy on https://localhost:{port} in front of 127.0.0.1:{upstream_port} (already up)."""
    binary = caddy_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    caddyfile = workdir / "Caddyfile"
    caddyfile.write_text(caddyfile_for(port, upstream_port))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "XDG_DATA_HOME": str(workdir / "data"),
        "XDG_CONFIG_HOME": str(workdir / "config"),
    }
    # Caddy 2.6 (Debian 12's) has no Caddyfile option to stop autosaving the running config, so
    # switch it off in the JSON the Caddyfile adapts to (admin.config.persist).
    adapted = subprocess.run(
        [binary, "adapt", "--config", str(caddyfile), "--adapter", "caddyfile"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert adapted.returncode == 0, f"caddy adapt failed:\n{adapted.stderr}"
    config = json.loads(adapted.stdout)
    config.setdefault("admin", {})["config"] = {"persist": False}
    config_path = workdir / "caddy.json"
    config_path.write_text(json.dumps(config, indent=1))

    log_path = workdir / "caddy.log"
    ca_file = workdir / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
    running = RunningCaddy(f"https://localhost:{port}", ca_file, log_path)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [binary, "run", "--config", str(config_path)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_for_tls(running, process, timeout)
            yield running
        finally:
            stop_process(process)


def _wait_for_tls(running: RunningCaddy, process: subprocess.Popen, timeout: float) -> None:
    """Until /healthz answers 200 through Caddy over verified TLS."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"caddy exited with {process.returncode}:\n{running.log_path.read_text()[-3000:]}")
        if running.ca_file.exists():
            try:
                with running.client() as client:
                    response = client.get(f"{running.base_url}/healthz", timeout=2)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
                last = repr(exc)
        time.sleep(0.05)
    raise TimeoutError(
        f"Caddy at {running.base_url} not ready within {timeout}s ({last}):\n{running.log_path.read_text()[-3000:]}"
    )
