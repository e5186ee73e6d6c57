"""Findings of the independent review of the issue 12 / issue 18 changes (one test per finding).

Each test reproduces its finding against a real server or database and failed before the fix.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from jean_memory import clock
from jean_memory.accounts.browser_sessions import start_session
from jean_memory.accounts.lifecycle import delete_user, disable_user
from jean_memory.accounts.users import create_user
from jean_memory.db import rate_limits
from jean_memory.db.tables import browser_sessions, jobs, memories, oauth_clients
from jean_memory.db.tables import rate_limits as rate_limits_table
from jean_memory.maintenance import purge_expired
from jean_memory.memory import jobs as job_queue
from jean_memory.memory.jobs import (
    LEASE_SECONDS,
    Lease,
    LeaseLost,
    claim_next,
    enqueue,
    lease_of,
    pending_count,
    release,
    renew_all,
    run_claimed,
)
from jean_memory.oauth.clients import sweep_unused_clients
from tests.support.https_server import DocumentServer
from tests.support.oauth import PASSWORD, Flow, McpHttp, new_flow, redirect_params
from tests.support.rate_windows import to_window_start
from tests.support.servers import RunningServer, threaded_server


def mcp_status(server, token: str) -> int:
    return McpHttp(server.mcp_url, token).initialize().status_code


# --- finding 1: a refused refresh must leave the refresh token as it was -----------------------


@pytest.mark.parametrize("bad", [{"scope": "memory admin"}, {"resource": "https://elsewhere.example/mcp"}])
def test_a_refused_refresh_leaves_the_token_usable_after_the_grace_window(server, alice, bad):
    """RFC 6749 §5.2/§6: a refresh answered with an error changes nothing; the client keeps its
    token. Rotating first and checking scope/resource after marked the token used, so the same
    token sent again (correctly) after the grace window counted as reuse and revoked the grant."""
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    refused = flow.refresh(tokens["refresh_token"], **bad)
    assert refused.status_code == 400
    assert refused.json()["error"] in ("invalid_scope", "invalid_target")
    clock.advance(120)  # past the 60 s grace window
    again = flow.refresh(tokens["refresh_token"])
    assert again.status_code == 200, again.text
    assert mcp_status(server, again.json()["access_token"]) == 200
    assert mcp_status(server, tokens["access_token"]) == 200  # the grant lives on


# --- finding 2: a revocation on this instance is never undone by a check that was under way ----


def test_a_grant_revoked_while_its_status_is_being_read_stays_revoked_on_this_instance(server, alice):
    """CONTRACT: revoking a grant stops its access tokens "at once on the instance that did it".
    A token check that read the grant as live just before the revocation wrote that answer into
    the cache after `mark_revoked`, so the next requests were honoured for up to 30 s more."""
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    read, go_on = threading.Event(), threading.Event()
    paused = []

    def pause_the_status_read(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "grants.revoked_at" in statement and "grants.user_id, grants.client_id" in statement and not paused:
            paused.append(statement)
            read.set()  # the grant has been read as live; its answer is not cached yet
            go_on.wait(timeout=20)

    sa.event.listen(server.engine, "after_cursor_execute", pause_the_status_read)
    try:
        first = {}
        checking = threading.Thread(target=lambda: first.update(status=mcp_status(server, tokens["access_token"])))
        checking.start()
        assert read.wait(timeout=20), "the MCP request never read its grant's status"
        revoked = flow.http.post(
            f"{server.base_url}/oauth/revoke", data={"token": tokens["refresh_token"], **flow.client_auth()}
        )
        assert revoked.status_code == 200
        go_on.set()
        checking.join(timeout=20)
    finally:
        go_on.set()
        sa.event.remove(server.engine, "after_cursor_execute", pause_the_status_read)
    assert first["status"] in (200, 401)  # it began before the revocation: either answer is fair
    assert mcp_status(server, tokens["access_token"]) == 401  # but from now on: at once


# --- finding 3: a job released at shutdown stays released ----------------------------------------


def test_a_renewal_that_lands_after_the_release_does_not_lease_the_job_again(engine):
    """`release` clears the leases of the jobs still running at the drain deadline so the next
    start takes them at once. The heartbeat (`renew_all`) and a handler's `Lease.renew` run in
    other threads: one whose UPDATE is queued behind the release's (it read the `released` flag
    just before it was set) set `locked_until` 30 s ahead again, and the job waited a lease
    after the restart after all."""
    with engine.begin() as conn:
        enqueue(conn, "save_facts", "u" * 32, {"facts": ["x"]})
    job = claim_next(engine)
    lease = lease_of(job)
    handler_view = Lease(lease.job_id, lease.attempt)  # the handler's check of `released` came first
    release(engine, [lease])
    renew_all(engine, [lease])
    with pytest.raises(LeaseLost), engine.begin() as conn:
        handler_view.renew(conn)
    with engine.connect() as conn:
        assert conn.execute(sa.select(jobs.c.locked_until)).scalar_one() is None
    assert claim_next(engine) is not None  # the next start takes it at once


# --- finding 4: rate-limit rows live as long as their window, not a day ------------------------


def test_rate_limit_rows_go_once_their_window_has_ended(engine):
    """Every request from a new address (each /64 of an IPv6 network) adds a counter row; the
    sweep kept them a day although no limit looks back more than 15 minutes, so a flood from a
    large IPv6 block grew the table 96 times more than it needs."""
    to_window_start(rate_limits.SIGN_IN_FAILURES)  # (a multiple of the authorize window too)
    for n in range(50):
        rate_limits.hit(engine, rate_limits.AUTHORIZE_REQUESTS, f"2001:db8:0:{n:x}::/64")
    rate_limits.hit(engine, rate_limits.SIGN_IN_FAILURES, "192.0.2.1")
    clock.advance(rate_limits.AUTHORIZE_REQUESTS.window_seconds + 1)
    rate_limits.sweep(engine)
    with engine.connect() as conn:
        left = conn.execute(sa.select(rate_limits_table.c.bucket)).scalars().all()
    assert left == ["sign_in_failures:192.0.2.1"]  # its 15-minute window is still counting
    clock.advance(rate_limits.SIGN_IN_FAILURES.window_seconds)
    rate_limits.sweep(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(rate_limits_table)).scalar_one() == 0


# --- finding 5: client metadata documents nobody used are not kept for a day --------------------


@pytest.fixture
def documents(tmp_path) -> Iterator[DocumentServer]:
    with DocumentServer(tmp_path / "tls") as running:
        yield running


@pytest.fixture
def cimd_server(database_url, tmp_path, documents) -> Iterator[RunningServer]:
    with threaded_server(
        database_url,
        tmp_path / "data",
        cimd_ca_file=str(documents.ca_file),
        cimd_test_loopback_hosts=("localhost",),
    ) as running:
        yield running


def cimd_document(url: str) -> dict:
    return {
        "client_id": url,
        "client_name": "Example App",
        "redirect_uris": ["https://app.example/oauth/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }


def cimd_flow(server: RunningServer, url: str) -> Flow:
    return Flow(
        base_url=server.base_url,
        http=httpx.Client(timeout=30),
        registration={"client_id": url},
        redirect_uri="https://app.example/oauth/callback",
    )


def test_metadata_documents_fetched_for_nobody_are_swept_within_hours(cimd_server, documents):
    """Anyone may name any document URL in `/oauth/authorize` (300 a minute per address, each /64
    of an IPv6 block its own address): every one was fetched and stored, up to 5 KB of the
    requester's JSON a row, and kept for its lifetime plus the day a cached copy may stand in
    during an outage - about two days for `max-age=86400`. Only a client someone connected needs
    that stand-in; a row no token was ever issued for is only a cache and can go."""
    person = create_user(cimd_server.engine, "carol@example.com", PASSWORD)
    urls = []
    for n in range(5):
        path = f"/app{n}.json"
        urls.append(documents.url(path))
        documents.serve(path, cimd_document(urls[-1]), headers={"Cache-Control": "max-age=86400"})
    for url in urls[1:]:  # nobody signs in: only the fetch and the stored row remain
        assert cimd_flow(cimd_server, url).authorize().status_code == 200
    connected = cimd_flow(cimd_server, urls[0])
    assert connected.tokens(person.email)["access_token"]

    def cimd_rows() -> set[str]:
        with cimd_server.engine.connect() as conn:
            rows = conn.execute(sa.select(oauth_clients.c.client_id).where(oauth_clients.c.source == "cimd"))
            return set(rows.scalars())

    assert cimd_rows() == set(urls)
    clock.advance(2 * 3600)
    sweep_unused_clients(cimd_server.engine, cimd_server.settings.unused_client_days)
    assert cimd_rows() == {urls[0]}  # the client someone connected stays cached


# --- finding 6: a save run by a request (back-pressure) keeps its lease while it runs ----------


def test_a_job_run_by_a_request_is_not_taken_by_a_worker_while_it_runs(engine, monkeypatch):
    """Past BACKLOG_LIMIT the request that queues a save runs the oldest one itself
    (`Worker.enqueued` -> `run_claimed`), outside the worker, so without the worker's heartbeat;
    and a save never renews its lease (one LLM call: httpx's 20 s is per read, not in total).
    Once it ran past the 30 s lease a worker took the same job and ran it beside the first:
    the facts twice, or, with an LLM, two different extractions of one message."""
    # Beats a fifth of a second apart: the test waits for one in real time (5 s otherwise).
    monkeypatch.setattr(job_queue, "HEARTBEAT_SECONDS", 0.2)
    started, stop = threading.Event(), threading.Event()

    def slow_save(user_id: str, payload: dict, lease: Lease) -> None:
        started.set()
        stop.wait(30)

    with engine.begin() as conn:
        enqueue(conn, "save", "u1", {})
    job = claim_next(engine)
    request = threading.Thread(target=run_claimed, args=(engine, slow_save, job))
    request.start()
    try:
        assert started.wait(10)
        clock.advance(LEASE_SECONDS + 1)  # the claim's lease has lapsed ...
        deadline = time.monotonic() + 10
        while True:  # ... until a beat renews it
            with engine.connect() as conn:
                if conn.execute(sa.select(jobs.c.locked_until)).scalar_one() > clock.now():
                    break
            assert time.monotonic() < deadline, "nothing renewed the lease of the job a request runs"
            stop.wait(0.05)
        assert claim_next(engine) is None  # no worker takes it while it runs
    finally:
        stop.set()
        request.join(timeout=30)
    assert pending_count(engine) == 0


# --- finding 7: `user delete` while an app is connected leaves what the app writes next -------


def test_nothing_is_stored_for_a_person_after_their_account_is_deleted(server, alice):
    """`user delete` runs in another process, so the server's revocation cache may hold the
    person's grant as live for up to 30 s (CONTRACT allows 60 s for tokens to stop): within that
    window `add_memories` stored a new memory for the deleted user id, which nothing ever erases
    (memories have no foreign key to users, and the delete has already run). A save job running
    when the delete commits does the same."""
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    assert mcp.initialize().status_code == 200  # the grant is now cached as live
    delete_user(server.engine, alice.id)  # what `jean-memory user delete` does, from its own process
    response = mcp.post(
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "add_memories", "arguments": {"text": "written after my account was deleted"}},
        }
    )
    assert response.status_code in (200, 401)
    with server.engine.connect() as conn:
        left = conn.execute(sa.select(sa.func.count()).select_from(memories).where(memories.c.user_id == alice.id))
        assert left.scalar_one() == 0


# --- finding 8: a document's redirect URI scheme is not echoed on the error page -----------------


def test_the_error_page_does_not_echo_a_documents_redirect_uri_scheme(cimd_server, documents):
    """Issue 12 finding 10: pages show no text from the request or the client's document. The
    reason a private-use scheme was refused named the scheme, which the document's author picks
    (letters, digits, + and -, up to 2,000 of them), on our error page."""
    url = documents.url("/client.json")
    document = cimd_document(url)
    document["redirect_uris"] = ["yourjeanmemoryaccountislocked-call-support-at-15550100:/cb"]
    documents.serve("/client.json", document)
    page = cimd_flow(cimd_server, url).authorize()
    assert page.status_code == 400
    assert "could not be verified" in page.text
    assert "yourjeanmemoryaccountislocked" not in page.text
    assert "private-use scheme" in page.text  # the reason is still given


# --- finding 9: one requester's slow-but-valid documents hold up every other app's sign-in -------


@pytest.fixture
def two_host_server(database_url, tmp_path, documents) -> Iterator[RunningServer]:
    """Documents on `localhost` (an app people use) and on 127.0.0.1 (a stranger's host)."""
    with threaded_server(
        database_url,
        tmp_path / "data",
        cimd_ca_file=str(documents.ca_file),
        cimd_test_loopback_hosts=("localhost", "127.0.0.1"),
    ) as running:
        yield running


def test_a_strangers_slow_documents_do_not_hold_up_another_apps_sign_in(two_host_server, documents):
    """Issue 12 finding 3 bounded the fetches (their own pool, failures cached); but a host that
    answers valid documents just inside the 5 s limit is never cached as failing, and the pool is
    first come, first served: 24 authorize requests from one address naming such documents held
    all 6 threads for 4 rounds, and a person connecting an unrelated app waited ~16 s."""
    for n in range(24):
        path = f"/slow{n}.json"
        url = documents.url(path, host="127.0.0.1")
        documents.serve(path, cimd_document(url), delay=4)
    legit = documents.url("/legit.json")
    documents.serve("/legit.json", cimd_document(legit))
    slow_urls = [documents.url(f"/slow{n}.json", host="127.0.0.1") for n in range(24)]
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        floods = [pool.submit(lambda url: cimd_flow(two_host_server, url).authorize(), url) for url in slow_urls]
        deadline = time.monotonic() + 10
        while sum(documents.hits.values()) < 2:  # the stranger's fetches are under way (all 6 threads, before)
            assert time.monotonic() < deadline, "the slow fetches never started"
            time.sleep(0.05)
        started = time.monotonic()
        page = cimd_flow(two_host_server, legit).authorize()
        waited = time.monotonic() - started
        for flood in floods:
            flood.result(timeout=60)
    assert page.status_code == 200 and 'name="password"' in page.text
    assert waited < 3, f"the app's sign-in page took {waited:.1f} s behind a stranger's fetches"


# --- finding 10: registrations nobody ever used are not kept for a month -------------------------


def test_registrations_never_used_are_swept_after_a_day(server, alice):
    """One address may register 120 clients in 10 minutes (17,280 a day), each holding up to
    10 redirect URIs of 2,000 characters (~21 KB); kept 30 days unused, one address could keep
    ~10 GB stored (each /64 of an IPv6 block counting as its own address). A client that never
    got a token in a day was registered for a connection that did not happen: it can go then;
    one that was used keeps the 30 days after its last use."""
    used = new_flow(server.base_url)
    used.tokens(alice.email)
    body = {
        "client_name": "filler",
        "redirect_uris": [f"https://app.example/{n}/" + "x" * 1900 for n in range(10)],
        "token_endpoint_auth_method": "none",
    }
    strangers = [new_flow(server.base_url, body).client_id for _ in range(5)]

    def dcr_clients() -> set[str]:
        with server.engine.connect() as conn:
            rows = conn.execute(sa.select(oauth_clients.c.client_id).where(oauth_clients.c.source == "dcr"))
            return set(rows.scalars())

    assert dcr_clients() == {used.client_id, *strangers}
    clock.advance(3600)
    sweep_unused_clients(server.engine, server.settings.unused_client_days)
    assert dcr_clients() == {used.client_id, *strangers}  # a person may still be signing in
    clock.advance(86400)
    sweep_unused_clients(server.engine, server.settings.unused_client_days)
    assert dcr_clients() == {used.client_id}


# --- finding 11: ended browser sessions are swept ------------------------------------------------


def test_expired_browser_sessions_are_swept(server, alice):
    """Every sign-in stores a session row; nothing ever deleted one that had expired, so each
    sign-in (14-day cookie) grew the table for good."""
    start_session(server.engine, alice.id, 60)
    kept = start_session(server.engine, alice.id, 86400)
    clock.advance(120)
    purge_expired(server.engine, server.settings)
    with server.engine.connect() as conn:
        left = set(conn.execute(sa.select(browser_sessions.c.token_hash)).scalars())
    assert left == {clock.sha256_hex(kept)}


# --- finding 12: a forwarded client address that is no address does not break the rate limits ----


def test_a_forwarded_address_that_is_no_ip_address_gets_an_answer_not_a_500(database_url, tmp_path):
    """Behind a trusted proxy the client address is the X-Forwarded-For entry; one that is not an
    IP address (a proxy passing the client's own header on) was used whole in the rate-limit
    bucket, a 200-character column: on PostgreSQL a long one failed the insert, and every
    rate-limited endpoint answered 500."""
    with threaded_server(database_url, tmp_path / "d", trusted_proxies=("127.0.0.1",)) as running:
        forwarded = {"X-Forwarded-For": "unknown-" + "x" * 300}
        registered = httpx.post(
            f"{running.base_url}/oauth/register",
            json={"redirect_uris": ["https://app.example/cb"]},
            headers=forwarded,
            timeout=30,
        )
        assert registered.status_code == 201, registered.text
        token = httpx.post(
            f"{running.base_url}/oauth/token", data={"grant_type": "refresh_token"}, headers=forwarded, timeout=30
        )
        assert token.status_code in (400, 401)


# --- finding 13: an approval racing `user disable` gives the person no live grant ---------------


def test_an_approval_that_races_user_disable_yields_no_working_token(server, alice):
    """`user disable` revokes the person's live grants and ends their sessions in one
    transaction. An approval whose session check passed just before, and whose grant was
    written just after, made a live grant for the disabled person: its tokens and refresh
    tokens worked for good (nothing checks the account on the token path). Here the disable
    lands between the consent handler's session check and the grant's insert."""
    flow = new_flow(server.base_url)
    consent_page = flow.sign_in(flow.authorize(), alice.email)
    assert 'value="approve"' in consent_page.text
    disabled = []

    def disable_now(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("DELETE FROM AUTHORIZATION_REQUESTS") and not disabled:
            disabled.append(disable_user(server.engine, alice.id))  # session checked, grant not yet written

    sa.event.listen(server.engine, "before_cursor_execute", disable_now)
    try:
        params = redirect_params(flow.consent(consent_page))
    finally:
        sa.event.remove(server.engine, "before_cursor_execute", disable_now)
    assert disabled, "the approval never finished its pending request"
    if "code" not in params:
        return  # refused outright: as good
    exchanged = flow.exchange(params["code"])
    if exchanged.status_code == 200:
        assert mcp_status(server, exchanged.json()["access_token"]) == 401
        assert flow.refresh(exchanged.json()["refresh_token"]).status_code == 400
    else:
        assert exchanged.json()["error"] == "invalid_grant"
