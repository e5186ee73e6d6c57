"""The `jean-memory` command as a person runs it: exit codes, output and messages."""

import os
import stat
import subprocess
import sys
import time

import pytest

from tests.support.servers import cli_env, free_port, run_cli


@pytest.fixture
def env(database_url, tmp_path):
    return cli_env(database_url, tmp_path / "data")


def test_user_add_from_stdin(env):
    result = run_cli(["user", "add", "Me@Example.com", "--password-stdin"], env, stdin="long enough password\n")
    assert result.returncode == 0, result.stderr
    assert "email: me@example.com" in result.stdout
    again = run_cli(["user", "add", "me@example.com", "--password-stdin"], env, stdin="long enough password\n")
    assert again.returncode != 0
    assert "already exists" in again.stderr


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("not-an-email", "long enough password", "is not an email address"),
        ("a@example.com", "short", "at least 8 characters"),
    ],
)
def test_user_add_refuses_bad_input(env, email, password, message):
    result = run_cli(["user", "add", email, "--password-stdin"], env, stdin=password + "\n")
    assert result.returncode != 0
    assert message in result.stderr


def test_client_add_public_and_confidential(env):
    public = run_cli(["client", "add", "--name", "Tool", "--redirect-uri", "http://127.0.0.1:3000/callback"], env)
    assert public.returncode == 0, public.stderr
    lines = dict(line.split(": ", 1) for line in public.stdout.strip().splitlines())
    assert set(lines) == {"client_id"}
    confidential = run_cli(
        [
            "client",
            "add",
            "--name",
            "Svc",
            "--redirect-uri",
            "https://a.example/cb",
            "--redirect-uri",
            "https://b.example/cb",
            "--secret",
        ],
        env,
    )
    lines = dict(line.split(": ", 1) for line in confidential.stdout.strip().splitlines())
    assert set(lines) == {"client_id", "client_secret"}


def test_client_add_refuses_a_bad_redirect(env):
    result = run_cli(["client", "add", "--name", "X", "--redirect-uri", "http://evil.example.com/cb"], env)
    assert result.returncode != 0
    assert "non-loopback" in result.stderr


def test_apikey_create(env):
    run_cli(["user", "add", "k@example.com", "--password-stdin"], env, stdin="long enough password\n")
    result = run_cli(["apikey", "create", "k@example.com"], env)
    assert result.returncode == 0
    assert result.stdout.strip().startswith("jm_sk_")
    missing = run_cli(["apikey", "create", "nobody@example.com"], env)
    assert missing.returncode != 0 and "jean-memory user add" in missing.stderr


def test_db_check_and_upgrade(env):
    assert run_cli(["db", "upgrade"], env).returncode == 0
    result = run_cli(["db", "check"], env)
    assert result.returncode == 0 and "current" in result.stdout


def serve(env, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jean_memory.cli", "serve", "--port", str(free_port()), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("issuer", ["https://memory.example.com/", "https://memory.example.com/jean"])
def test_serve_refuses_an_issuer_with_a_path_or_trailing_slash(env, issuer):
    result = serve(env, "--issuer", issuer)
    assert result.returncode == 2
    assert "no path and no trailing slash" in result.stderr


def test_serve_warns_about_plain_http_and_makes_a_secret_key_once(env, tmp_path):
    from tests.support.servers import server_process

    env = {k: v for k, v in env.items() if k != "JWT_SECRET_KEY"}
    port = free_port()
    log = tmp_path / "serve.log"
    with server_process(env, port=port, extra=["--issuer", "http://memory.example.com"], log_path=log):
        deadline = time.monotonic() + 10
        while "/mcp" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    output = log.read_text()
    assert "is not https" in output
    assert "http://memory.example.com/mcp" in output  # the connector URL to paste
    key_file = tmp_path / "data" / "jwt_secret.key"
    assert key_file.exists()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    first_key = key_file.read_text()
    with server_process(env):
        pass
    assert key_file.read_text() == first_key  # reused, so tokens survive restarts


def test_serve_stops_with_the_fix_when_the_model_is_corrupted(env, tmp_path):
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx model")
    result = serve({**env, "JEAN_MEMORY_EMBEDDINGS_MODEL_PATH": str(broken)})
    assert result.returncode == 2
    assert "corrupted" in result.stderr
    assert "pip install" in result.stderr and "JEAN_MEMORY_EMBEDDINGS=none" in result.stderr


def test_reindex_shows_progress(env):
    run_cli(["user", "add", "r@example.com", "--password-stdin"], env, stdin="long enough password\n")
    import sqlalchemy as sa

    from jean_memory.db.engine import create_engine
    from jean_memory.memory.service import MemoryService

    engine = create_engine(env["DATABASE_URL"])
    with engine.connect() as conn:
        user_id = conn.execute(sa.text("select id from users")).scalar_one()
    for i in range(3):
        MemoryService(engine, None).add(user_id, f"Fact {i} saved while embeddings were off")
    result = run_cli(["reindex"], env)
    assert result.returncode == 0, result.stderr
    assert "3/3" in result.stderr
    assert "re-embedded 3 memories" in result.stdout
