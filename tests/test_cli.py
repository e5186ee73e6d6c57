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


def test_serve_refuses_an_unknown_sign_up_policy(env):
    result = serve({**env, "JEAN_MEMORY_SIGNUP": "sometimes"})
    assert result.returncode == 2
    assert "JEAN_MEMORY_SIGNUP must be one of invite, open, closed, got 'sometimes'" in result.stderr


@pytest.mark.one_database
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


SETUP_MISTAKES = {
    # name: (env overrides, command, what the one error line must say); each was a traceback.
    "unknown log level": (
        {"JEAN_MEMORY_LOG_LEVEL": "verbose"},
        ["db", "check"],
        "JEAN_MEMORY_LOG_LEVEL must be one of",
    ),
    "issuer port not a number": ({"JEAN_MEMORY_ISSUER": "https://x.example:abc"}, ["db", "check"], "port"),
    "issuer default port": ({"JEAN_MEMORY_ISSUER": "https://x.example:443"}, ["db", "check"], "default port"),
    "issuer unicode host": ({"JEAN_MEMORY_ISSUER": "https://bücher.example"}, ["db", "check"], "xn--bcher-kva"),
    "port out of range": ({"JEAN_MEMORY_PORT": "70000"}, ["db", "check"], "from 1 to 65535"),
    "unknown database": ({"DATABASE_URL": "foo://bar"}, ["db", "check"], "DATABASE_URL"),
    "unparsable database": ({"DATABASE_URL": "notaurl"}, ["db", "check"], "DATABASE_URL cannot be parsed"),
    "database port not a number": (
        {"DATABASE_URL": "postgresql://u:p@127.0.0.1:notaport/x"},
        ["db", "check"],
        "DATABASE_URL",
    ),
    "database unreachable": (
        {"DATABASE_URL": "postgresql://u:p@127.0.0.1:1/x"},
        ["db", "upgrade"],
        "cannot be opened or reached",
    ),
    "short previous key": ({"JWT_SECRET_KEY_PREVIOUS": "short"}, ["serve"], "JWT_SECRET_KEY_PREVIOUS"),
}


@pytest.mark.parametrize("name", list(SETUP_MISTAKES))
def test_setup_mistakes_get_one_line_not_a_traceback(env, name):
    overrides, command, says = SETUP_MISTAKES[name]
    args = [*command, "--port", str(free_port())] if command == ["serve"] else command
    result = run_cli(args, {**env, **overrides})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and says in result.stderr, result.stderr


def test_a_schema_newer_than_the_code_is_explained(env, database_url):
    import sqlalchemy as sa

    assert run_cli(["db", "upgrade"], env).returncode == 0
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    result = run_cli(["db", "upgrade"], env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "a newer version" in result.stderr


def test_an_unreadable_data_directory_is_named(env, tmp_path):
    (tmp_path / "keys" / "jwt_secret.key").mkdir(parents=True)  # a directory where the key file goes
    env = {k: v for k, v in env.items() if k != "JWT_SECRET_KEY"} | {"JEAN_MEMORY_DATA_DIR": str(tmp_path / "keys")}
    result = run_cli(["serve", "--port", str(free_port())], env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "jwt_secret.key" in result.stderr


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"memories": []}'.encode("utf-16"), "not a jean-memory export"),
        (b"[" * 5000 + b"]" * 5000, "not a jean-memory export"),
        (b"[]", "not a jean-memory export"),
    ],
    ids=["utf-16", "deep", "a list"],
)
def test_import_says_what_is_wrong_with_the_file(env, tmp_path, content, says):
    path = tmp_path / "export.json"
    path.write_bytes(content)
    result = run_cli(["import", str(path), "--email", "nobody@example.com"], env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert says in result.stderr


def test_reindex_with_the_embedding_service_down_says_so(env, database_url):
    from jean_memory.accounts.users import create_user
    from jean_memory.db.engine import create_engine
    from jean_memory.db.migrate import upgrade
    from jean_memory.memory.service import MemoryService

    engine = create_engine(database_url)
    upgrade(engine)
    MemoryService(engine, None).add(create_user(engine, "r@example.com", "long enough password").id, "I row on Sundays")
    engine.dispose()
    down = {"JEAN_MEMORY_EMBEDDINGS": "openai", "JEAN_MEMORY_EMBEDDINGS_BASE_URL": "http://127.0.0.1:1/v1"}
    result = run_cli(["reindex"], {**env, **down})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "jean-memory reindex" in result.stderr


def test_the_data_directory_and_database_files_are_private_whatever_the_umask(tmp_path):
    """Issue 12 finding 8: under umask 022 the data directory was 0755 and jean_memory.db
    (password hashes, memories) 0644. Now the directory is 0700 and every file in it 0600,
    including the -wal and -shm files SQLite makes later, after the server and a command wrote."""
    import httpx

    from tests.support.servers import server_process

    data_dir = tmp_path / "fresh" / "data"
    env = {k: v for k, v in cli_env("", data_dir).items() if k not in ("JWT_SECRET_KEY", "DATABASE_URL")}
    env["JEAN_MEMORY_EMBEDDINGS"] = "none"
    previous = os.umask(0o022)  # what most systems give a login shell; children inherit it
    try:
        with server_process(env) as url:
            registered = httpx.post(
                f"{url}/oauth/register", json={"client_name": "x", "redirect_uris": ["http://127.0.0.1:9/cb"]}
            )
            assert registered.status_code == 201
            added = run_cli(["user", "add", "p@example.com", "--password-stdin"], env, stdin="long enough password\n")
            assert added.returncode == 0, added.stderr
            files = {path.name: stat.S_IMODE(path.stat().st_mode) for path in data_dir.iterdir()}
    finally:
        os.umask(previous)
    assert {"jean_memory.db", "jean_memory.db-wal", "jean_memory.db-shm", "jwt_secret.key"} <= set(files)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert files == dict.fromkeys(files, 0o600)


def test_a_data_directory_left_readable_by_an_older_version_is_narrowed(tmp_path):
    """Files and the directory made before the fix (0644, 0755) are 0600 and 0700 once `serve`
    has run on them."""
    from tests.support.servers import server_process

    data_dir = tmp_path / "data"
    env = {k: v for k, v in cli_env("", data_dir).items() if k != "DATABASE_URL"} | {"JEAN_MEMORY_EMBEDDINGS": "none"}
    assert run_cli(["db", "upgrade"], env).returncode == 0
    os.chmod(data_dir, 0o755)  # noqa: S103 (what older versions left)
    for path in data_dir.iterdir():
        os.chmod(path, 0o644)
    with server_process(env):
        pass
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in data_dir.iterdir()}
    assert "jean_memory.db" in modes and modes == dict.fromkeys(modes, 0o600)


def test_serve_prints_a_setup_link_on_each_start_until_an_account_exists(env, tmp_path):
    """First run (CONTRACT "Install and run"): a new one-time link per start while the database
    has no account; its page makes the first account, an administrator; then no link."""
    import re

    import httpx

    from tests.support.pages import csrf_of
    from tests.support.servers import server_process

    env = {**env, "JEAN_MEMORY_EMBEDDINGS": "none"}
    port = free_port()

    def start_and_read(name: str) -> str:
        log = tmp_path / f"{name}.log"
        with server_process(env, port=port, log_path=log):
            deadline = time.monotonic() + 30
            while "/mcp\n" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
        return log.read_text()

    links = []
    for name in ("first", "second"):
        output = start_and_read(name)
        found = re.findall(rf"http://127\.0\.0\.1:{port}/setup\?token=[\w-]+", output)
        assert len(found) == 1, output
        links.append(found[0])
    assert links[0] != links[1]
    with server_process(env, port=port), httpx.Client(headers={"Accept": "text/html"}) as browser:
        page = browser.get(links[1])
        assert page.status_code == 200 and "Create account" in page.text
        answer = browser.post(
            links[1].split("?")[0],
            data={
                "token": links[1].split("token=")[1],
                "email": "me@example.com",
                "password": "long enough password",
                "password_again": "long enough password",
                "csrf_token": csrf_of(page.text),
            },
        )
        assert answer.status_code == 303
        assert browser.get(links[0]).status_code == 404  # an account exists now: every setup link is done
    output = start_and_read("third")
    assert "/mcp" in output and "setup?token" not in output
    listed = run_cli(["user", "list"], env)
    email, _created, admin = listed.stdout.splitlines()[1].split()[:3]
    assert (email, admin) == ("me@example.com", "yes")
