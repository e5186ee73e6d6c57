"""`jean-memory doctor`: all ✓ against our server, exactly the right ✗ against broken ones.

The broken servers (tests/support/broken_servers.py) get everything right but one defect each,
so a defect that fails exactly one check shows that check is the one that catches it.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from pathlib import Path

import httpx
import pytest

from jean_memory.doctor import diagnose, exit_code, main
from jean_memory.doctor.discovery import (
    is_loopback,
    openid_urls,
    protected_resource_candidates,
    resource_metadata_from,
    rfc8414_url,
)
from jean_memory.doctor.results import Status
from tests.support.broken_servers import broken_server

JSON_KEYS = {"name", "ok", "detail", "fix", "ms"}


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict]]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def names(results: list[dict], status: str) -> set[str]:
    return {r["name"] for r in results if r["status"] == status}


# -- our own server ------------------------------------------------------------------------------


def test_our_server_passes_every_check(server, capsys):
    code = main([server.mcp_url])
    text = capsys.readouterr().out
    assert code == 0, text
    check_lines = [line for line in text.splitlines() if line[:2] in ("✓ ", "✗ ", "! ", "- ")]
    assert len(check_lines) == 16
    # Every line is ✓, except that CIMD may be informational until we implement it.
    assert all(line.startswith("✓ ") or "CIMD" in line for line in check_lines), text
    assert all(" ms " in line for line in check_lines)

    code, results = run_json(capsys, server.mcp_url)
    assert code == 0
    assert all(set(r) >= JSON_KEYS for r in results)
    assert names(results, "fail") == names(results, "skip") == set()
    assert {r["name"] for r in results if not r["ok"]} <= {"cimd"}
    assert all(isinstance(r["ms"], float) and r["ms"] < 10_000 for r in results)


# -- stand-ins with one defect each ----------------------------------------------------------------


def test_stand_in_without_defect_passes_everything(capsys):
    with broken_server(None) as url:
        code, results = run_json(capsys, url)
    assert code == 0
    assert all(r["ok"] for r in results), [r for r in results if not r["ok"]]


BROKEN = [
    # defect, the checks that must fail (and no other), words of the fix, words of the detail
    ("issuer_trailing_slash", {"issuer"}, "trailing slash", "ends with '/'"),
    ("resource_mismatch", {"resource"}, "set `resource` to exactly", "resource is"),
    ("redirect", {"unauthenticated-401"}, "without redirecting", "307 redirect to"),
    ("no_auth", {"unauthenticated-401"}, "Require a Bearer token", "without any token"),
    ("forbidden", {"unauthenticated-401"}, "not 403", "403 instead of 401"),
    ("metadata_behind_auth", {"protected-resource-metadata"}, "without authentication", "401"),
    ("no_s256", {"pkce-s256"}, "S256", "['plain']"),
    ("registration_refused", {"registration"}, "'claudeai'", "unknown scope: claudeai"),
    ("no_cors", {"cors-metadata", "cors-mcp-401"}, "CORS", "Access-Control-Allow-Origin"),
    ("cors_missing_on_401", {"cors-mcp-401"}, "outside the auth check", "401 has no Access-Control-Allow-Origin"),
    ("slow", {"latency"}, "within 0.4 s", "no answer within 0.4 s"),
]


@pytest.mark.parametrize(("defect", "failing", "fix_words", "detail_words"), BROKEN, ids=[b[0] for b in BROKEN])
def test_each_defect_fails_exactly_its_check(capsys, defect, failing, fix_words, detail_words):
    timeout = "0.4" if defect == "slow" else "5"
    with broken_server(defect) as url:
        code, results = run_json(capsys, url, "--timeout", timeout)
    assert code == 1
    assert names(results, "fail") == failing, json.dumps(results, indent=1)
    assert names(results, "warn") == set()
    for result in results:
        if result["name"] in failing:
            assert result["ok"] is False
            assert fix_words in result["fix"]
            assert detail_words in result["detail"]


def test_text_report_puts_the_fix_under_the_failed_line(capsys):
    with broken_server("issuer_trailing_slash") as url:
        code = main([url])
    text = capsys.readouterr().out
    assert code == 1
    lines = text.splitlines()
    failed = [i for i, line in enumerate(lines) if line.startswith("✗ ")]
    assert len(failed) == 1 and "issuer equals authorization_servers[0]" in lines[failed[0]]
    assert lines[failed[0] + 1].lstrip().startswith("fix: ")
    assert "1 failed" in lines[-1]


# -- transport: TLS and reachability -----------------------------------------------------------------


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a certificate for 127.0.0.1 that it signed: (ca, cert, key) files."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "doctor test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def test_untrusted_certificate_fails_https_only_and_a_ca_file_fixes_it(tmp_path, capsys, monkeypatch):
    ca, cert, key = make_certificates(tmp_path)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with broken_server(None, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        assert url.startswith("https://")
        code, results = run_json(capsys, url)
        assert code == 1
        assert names(results, "fail") == {"https"}
        https = next(r for r in results if r["name"] == "https")
        assert "TLS failed" in https["detail"] and "--ca-file" in https["fix"]

        code, results = run_json(capsys, url, "--ca-file", str(ca))
        assert code == 0, results
        assert "verified" in results[0]["detail"]

        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        code, _ = run_json(capsys, url)
        assert code == 0


def test_plain_http_on_a_public_host_fails():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)

    results = diagnose("http://mcp.example.com/mcp", timeout=2, transport=httpx.MockTransport(handler))
    https = results[0]
    assert https.name == "https" and https.status is Status.FAIL
    assert "plain http" in https.detail and "https" in https.fix
    assert exit_code(results) == 1


def test_unreachable_server_fails_once_and_skips_the_rest():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    results = diagnose("https://mcp.example.com/mcp", timeout=2, transport=httpx.MockTransport(handler))
    assert [r.name for r in results if r.status is Status.FAIL] == ["https"]
    assert "cannot connect" in results[0].detail
    assert exit_code(results) == 1


def test_unusable_url_is_a_usage_error(capsys):
    assert main(["not a url"]) == 2
    assert "connector URL" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "says"),
    [(["--ca-file", "/nonexistent/ca.pem"], "--ca-file"), (["--timeout", "inf"], "--timeout")],
    ids=["missing-ca-file", "infinite-timeout"],
)
def test_unusable_options_are_a_usage_error(capsys, options, says):
    """Both used to go ahead: a missing CA file ended in a FileNotFoundError traceback, an
    infinite timeout in three false failures (timestamp out of range)."""
    assert main(["https://memory.example.com/mcp", *options]) == 2
    assert says in capsys.readouterr().err


# -- discovery arithmetic ------------------------------------------------------------------------------


def test_well_known_urls_follow_rfc_9728_and_8414():
    assert protected_resource_candidates("https://h/mcp") == [
        "https://h/.well-known/oauth-protected-resource/mcp",
        "https://h/.well-known/oauth-protected-resource",
    ]
    assert rfc8414_url("https://h") == rfc8414_url("https://h/") == "https://h/.well-known/oauth-authorization-server"
    assert rfc8414_url("https://h/tenant") == "https://h/.well-known/oauth-authorization-server/tenant"
    assert openid_urls("https://h/tenant") == [
        "https://h/.well-known/openid-configuration/tenant",
        "https://h/tenant/.well-known/openid-configuration",
    ]


def test_resource_metadata_is_read_from_any_challenge_form():
    url = "https://h/.well-known/oauth-protected-resource/mcp"
    assert resource_metadata_from([f'Bearer resource_metadata="{url}", scope="memory"']) == url
    assert resource_metadata_from([f'Bearer error="invalid_token", resource_metadata={url}']) == url
    assert resource_metadata_from(['Bearer realm="x"']) is None


def test_loopback_hosts():
    assert all(is_loopback(h) for h in ("localhost", "127.0.0.1", "127.1.2.3", "[::1]", "app.localhost"))
    assert not any(is_loopback(h) for h in ("example.com", "10.0.0.1", "localhost.example.com", None))
