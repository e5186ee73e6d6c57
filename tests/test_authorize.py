"""The authorization endpoint, sign-in and consent (OAuth 2.1 §4.1, RFC 9207, RFC 8707)."""

import concurrent.futures
import html
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.oauth import (
    CLAUDE_CALLBACK,
    FORM_HEADERS,
    PASSWORD,
    chunked_form,
    new_flow,
    parse_form,
    pkce_pair,
    redirect_params,
)
from tests.support.rate_windows import to_window_start


def test_unknown_client_gets_an_error_page_not_a_redirect(server):
    flow = new_flow(server.base_url)
    response = flow.authorize(client_id="jmc_unknown")
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "not registered" in response.text


def test_unregistered_redirect_uri_gets_an_error_page_not_a_redirect(server):
    flow = new_flow(server.base_url)
    response = flow.authorize(redirect_uri="https://evil.example.com/callback")
    assert response.status_code == 400
    assert "location" not in response.headers


def test_redirect_uri_must_match_exactly(server):
    flow = new_flow(server.base_url)
    for near_miss in (CLAUDE_CALLBACK + "/", CLAUDE_CALLBACK + "?x=1", CLAUDE_CALLBACK.upper()):
        assert flow.authorize(redirect_uri=near_miss).status_code == 400


def test_loopback_redirect_may_change_port_only(server, alice):
    flow = new_flow(
        server.base_url,
        {
            "client_name": "Claude Code",
            "redirect_uris": ["http://localhost:1111/callback"],
            "token_endpoint_auth_method": "none",
        },
    )
    assert flow.authorize(redirect_uri="http://localhost:54321/callback").status_code == 200
    assert flow.authorize(redirect_uri="http://localhost:54321/other").status_code == 400
    assert flow.authorize(redirect_uri="http://127.0.0.1:54321/callback").status_code == 400
    # Only the port: not user information, a fragment (RFC 6749 §3.1.2) or a port that is no number.
    for near_miss in (
        "http://localhost:54321/callback#frag",
        "http://attacker:x@localhost:54321/callback",
        "http://localhost:abc/callback",
    ):
        assert flow.authorize(redirect_uri=near_miss).status_code == 400, near_miss


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "invalid_request"),  # RFC 6749 §4.1.2.1: missing, not unsupported
        ({"resource": "https://other.example.com/mcp"}, "invalid_target"),
    ],
)
def test_bad_requests_redirect_with_error_state_and_iss(server, overrides, error):
    flow = new_flow(server.base_url)
    params = redirect_params(flow.authorize(state="xyz", **overrides))
    assert params["error"] == error
    assert params["error_description"]
    assert params["state"] == "xyz"
    assert params["iss"] == server.base_url


@pytest.mark.parametrize("spelling", ["{base}/mcp/", "{upper}/mcp", "{base_443}/mcp"])
def test_resource_is_compared_in_canonical_form(server, alice, spelling):
    parts = urlsplit(server.base_url)
    resource = spelling.format(
        base=server.base_url, upper=server.base_url.replace("http://", "HTTP://"), base_443=server.base_url
    )
    flow = new_flow(server.base_url)
    assert flow.authorize(resource=resource).status_code == 200, parts


def test_missing_resource_means_ours(server, alice):
    flow = new_flow(server.base_url)
    params = flow.get_code(alice.email, resource=None)
    token = flow.exchange(params["code"]).json()
    assert token["access_token"]


def test_login_form_has_csrf_field_and_posts_to_complete(server):
    flow = new_flow(server.base_url)
    page = flow.authorize()
    assert page.status_code == 200
    form = parse_form(page.text)
    assert form["action"].startswith("/oauth/complete?session_id=")
    assert form["fields"]["csrf_token"]
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_wrong_password_and_unknown_email_answer_alike(server, alice):
    flow = new_flow(server.base_url)
    wrong_password = flow.sign_in(flow.authorize(), alice.email, "not the password")
    unknown_email = flow.sign_in(flow.authorize(), "nobody@example.com", PASSWORD)
    assert wrong_password.status_code == unknown_email.status_code == 400
    message = "That email and password do not match an account"
    assert wrong_password.text.count(message) == unknown_email.text.count(message) == 1
    assert 'name="password"' in wrong_password.text  # the form again, to retry


def test_sign_in_without_csrf_token_is_refused(server, alice):
    flow = new_flow(server.base_url)
    form = parse_form(flow.authorize().text)
    response = flow.http.post(
        server.base_url + form["action"], data={"email": alice.email, "password": PASSWORD, "csrf_token": "forged"}
    )
    assert response.status_code == 403
    assert "location" not in response.headers


def test_csrf_token_is_bound_to_the_browser(server, alice):
    flow = new_flow(server.base_url)
    form = parse_form(flow.authorize().text)
    other_browser = httpx.Client()
    response = other_browser.post(
        server.base_url + form["action"], data={**form["fields"], "email": alice.email, "password": PASSWORD}
    )
    assert response.status_code == 403


def test_consent_shows_client_and_redirect_host_escaped(server, alice):
    flow = new_flow(
        server.base_url,
        {"client_name": "<script>alert('x')</script>Evil", "redirect_uris": ["https://cb.example.org/done"]},
    )
    page = flow.sign_in(flow.authorize(), alice.email)
    assert page.status_code == 200
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;" in page.text
    assert "cb.example.org" in page.text
    buttons = parse_form(page.text)["buttons"]
    assert ("decision", "approve") in buttons and ("decision", "deny") in buttons


def test_deny_redirects_access_denied_with_state_and_iss(server, alice):
    flow = new_flow(server.base_url)
    page = flow.sign_in(flow.authorize(state="s1"), alice.email)
    params = redirect_params(flow.consent(page, "deny"))
    assert params == {
        "error": "access_denied",
        "error_description": "the person denied access",
        "state": "s1",
        "iss": server.base_url,
    }


def test_approve_redirects_with_code_state_and_iss(server, alice):
    flow = new_flow(server.base_url)
    page = flow.sign_in(flow.authorize(state="s2"), alice.email)
    response = flow.consent(page)
    assert response.headers["location"].startswith(CLAUDE_CALLBACK + "?")
    params = redirect_params(response)
    assert params["code"] and params["state"] == "s2" and params["iss"] == server.base_url


def test_consent_is_remembered_for_the_same_client(server, alice):
    flow = new_flow(server.base_url)
    flow.get_code(alice.email)
    again = flow.authorize()  # same browser (session cookie), same client: no pages, straight back
    assert again.status_code == 302
    assert redirect_params(again)["code"]


def test_remembered_consent_applies_only_to_the_redirect_uri_approved(server, alice):
    """Issue 12, finding 2: consent given for one redirect URI sent codes silently to any other."""
    flow = new_flow(server.base_url)  # Claude's registration: two redirect URIs
    approved, other = flow.registration["redirect_uris"]
    flow.get_code(alice.email, redirect_uri=approved)
    assert redirect_params(flow.authorize(redirect_uri=approved))["code"]
    page = flow.authorize(redirect_uri=other)
    assert page.status_code == 200 and 'value="approve"' in page.text
    params = redirect_params(flow.authorize(redirect_uri=other, prompt="none", state="s-other"))
    assert params["error"] == "consent_required"
    assert params["state"] == "s-other" and params["iss"] == server.base_url


PUBLIC_NATIVE_CLIENTS = [
    ("http://localhost:1111/callback", "http://localhost:1111/callback"),
    ("http://127.0.0.1:1111/callback", "http://127.0.0.1:40123/callback"),  # any port (RFC 8252 §7.3)
    ("http://[::1]:1111/callback", "http://[::1]:1111/callback"),
    ("cursor://anysphere.cursor-mcp/oauth/callback", "cursor://anysphere.cursor-mcp/oauth/callback"),
    ("com.example.app:/oauth/callback", "com.example.app:/oauth/callback"),
]


@pytest.mark.parametrize(("registered", "requested"), PUBLIC_NATIVE_CLIENTS)
def test_a_public_client_with_a_loopback_or_private_scheme_redirect_always_sees_consent(
    server, alice, registered, requested
):
    """RFC 8252 §8.6: any local program can listen on a loopback port or claim a private
    scheme, and a public client has no secret to stop it redeeming the code."""
    flow = new_flow(
        server.base_url,
        {"client_name": "Claude Code", "redirect_uris": [registered], "token_endpoint_auth_method": "none"},
    )
    assert flow.get_code(alice.email, redirect_uri=requested)["code"]  # approved once
    for _ in range(2):
        page = flow.authorize(redirect_uri=requested)
        assert page.status_code == 200 and 'value="approve"' in page.text
    response = flow.authorize(redirect_uri=requested, prompt="none", state="s-none")
    assert response.headers["location"].startswith(requested.split("?")[0] + "?")
    params = redirect_params(response)
    assert params["error"] == "consent_required"
    assert params["state"] == "s-none" and params["iss"] == server.base_url
    assert "code" not in params


def test_a_public_client_with_an_https_redirect_keeps_its_remembered_consent(server, alice):
    flow = new_flow(
        server.base_url,
        {
            "client_name": "Web app",
            "redirect_uris": ["https://app.example.com/cb"],
            "token_endpoint_auth_method": "none",
        },
    )
    flow.get_code(alice.email)
    assert redirect_params(flow.authorize())["code"]
    assert redirect_params(flow.authorize(prompt="none"))["code"]


def test_a_confidential_client_with_a_loopback_redirect_keeps_its_remembered_consent(server, alice):
    """Its code is useless without the client's secret, so remembering consent is safe."""
    flow = new_flow(
        server.base_url,
        {
            "client_name": "Local service",
            "redirect_uris": ["http://127.0.0.1:1111/callback"],
            "token_endpoint_auth_method": "client_secret_post",
        },
    )
    flow.get_code(alice.email)
    assert redirect_params(flow.authorize())["code"]


def test_a_new_client_always_gets_the_consent_page(server, alice):
    first = new_flow(server.base_url)
    first.get_code(alice.email)
    second = new_flow(server.base_url)
    second.http.cookies = first.http.cookies  # same browser, already signed in
    page = second.authorize()
    assert page.status_code == 200
    assert 'value="approve"' in page.text


def test_session_cookie_is_httponly_and_lax(server, alice):
    flow = new_flow(server.base_url)
    page = flow.sign_in(flow.authorize(), alice.email)
    cookie = next(h for h in page.headers.get_list("set-cookie") if h.startswith("jm_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # http issuer on loopback; https issuers get Secure (see test_config)


def test_a_consent_form_cannot_be_replayed(server, alice):
    flow = new_flow(server.base_url)
    page = flow.sign_in(flow.authorize(), alice.email)
    assert flow.consent(page).status_code == 302
    replay = flow.consent(page)
    assert replay.status_code == 400
    assert "location" not in replay.headers


def test_aliases_authorize_too(server):
    flow = new_flow(server.base_url)
    params = dict(flow.authorize().request.url.params)
    response = flow.http.get(f"{server.base_url}/authorize", params=params)
    assert response.status_code == 200
    assert parse_form(response.text)["action"].startswith("/oauth/complete?session_id=")


def test_cookies_are_secure_when_the_issuer_is_https(database_url, tmp_path):
    from jean_memory.accounts.users import create_user
    from tests.support.servers import threaded_server

    with threaded_server(database_url, tmp_path / "d", issuer="https://memory.example.com") as running:
        create_user(running.engine, "carol@example.com", PASSWORD)
        flow = new_flow(running.base_url)
        page = flow.http.get(
            f"{running.base_url}/oauth/authorize",
            params={
                "response_type": "code",
                "client_id": flow.client_id,
                "redirect_uri": flow.redirect_uri,
                "code_challenge": "a" * 43,
                "code_challenge_method": "S256",
            },
        )
        cookie = next(h for h in page.headers.get_list("set-cookie") if h.startswith("jm_csrf="))
        assert "Secure" in cookie


def test_prompt_consent_asks_again_even_when_remembered(server, alice):
    flow = new_flow(server.base_url)
    flow.get_code(alice.email)
    page = flow.authorize(prompt="consent")
    assert page.status_code == 200
    assert 'value="approve"' in page.text


def test_prompt_login_asks_to_sign_in_again(server, alice):
    flow = new_flow(server.base_url)
    flow.get_code(alice.email)
    page = flow.authorize(prompt="login")
    assert 'name="password"' in page.text


def test_prompt_none_never_shows_a_page(server, alice):
    flow = new_flow(server.base_url)
    assert redirect_params(flow.authorize(prompt="none"))["error"] == "login_required"
    flow.sign_in(flow.authorize(), alice.email)  # signed in, consent not given yet
    assert redirect_params(flow.authorize(prompt="none"))["error"] == "consent_required"
    flow.consent(flow.authorize())  # signed in already: straight to the consent page
    assert redirect_params(flow.authorize(prompt="none"))["code"]


def test_sign_in_failures_are_limited_per_address_but_a_burst_of_successes_is_not(server, alice):
    from jean_memory.db.rate_limits import SIGN_IN_FAILURES

    to_window_start(SIGN_IN_FAILURES)
    for _ in range(
        SIGN_IN_FAILURES.max_count + 1
    ):  # a normal burst, past the failure limit: many apps connected within minutes
        new_flow(server.base_url).get_code(alice.email)
    flow = new_flow(server.base_url)
    for _ in range(SIGN_IN_FAILURES.max_count):
        assert flow.sign_in(flow.authorize(), alice.email, "wrong password").status_code == 400
    blocked = flow.sign_in(flow.authorize(), alice.email)  # even the right password waits now
    assert blocked.status_code == 429
    assert "Too many failed sign-ins" in blocked.text


def test_parallel_password_guesses_are_limited_too(server, alice):
    """The limit holds when the guesses arrive at once (each used to read the count before any
    earlier guess's failure was recorded, so all of them were checked)."""
    from jean_memory.db.rate_limits import SIGN_IN_FAILURES

    to_window_start(SIGN_IN_FAILURES)
    flow = new_flow(server.base_url)
    page = flow.authorize()
    form = parse_form(page.text)
    url = str(page.url.join(form["action"]))

    def guess(i: int) -> int:
        with httpx.Client(cookies=flow.http.cookies, timeout=120) as browser:
            return browser.post(
                url, data={**form["fields"], "email": alice.email, "password": f"guess {i}"}
            ).status_code

    guesses = SIGN_IN_FAILURES.max_count + 10
    with concurrent.futures.ThreadPoolExecutor(guesses) as pool:
        statuses = list(pool.map(guess, range(guesses)))
    assert statuses.count(400) == SIGN_IN_FAILURES.max_count
    assert statuses.count(429) == 10


def test_state_over_512_characters_gets_an_error_page_not_a_redirect(server):
    """The state is stored to be echoed back; one over the limit is refused on the page
    (redirecting would echo the very value refused), and the page names the limit. Each
    anonymous request stores a row, so the limit bounds what one request can store."""
    flow = new_flow(server.base_url)
    response = flow.authorize(state="s" * 513)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "at most 512" in response.text
    assert flow.authorize(state="s" * 512).status_code == 200


def test_file_valued_parameters_count_as_absent(server):
    """A multipart POST may carry a file where a parameter belongs: never a 500."""
    flow = new_flow(server.base_url)
    fields = {
        "response_type": "code",
        "client_id": flow.client_id,
        "redirect_uri": flow.redirect_uri,
        "code_challenge": pkce_pair()[1],
        "code_challenge_method": "S256",
        "state": "xyz",
    }
    url = f"{server.base_url}/oauth/authorize"

    def post_with_file(name: str) -> httpx.Response:
        rest = {k: v for k, v in fields.items() if k != name}
        return flow.http.post(url, data=rest, files={name: ("a.txt", b"x")})

    no_client = post_with_file("client_id")
    assert no_client.status_code == 400
    assert "location" not in no_client.headers
    assert "not registered" in no_client.text
    params = redirect_params(post_with_file("code_challenge"))
    assert params["error"] == "invalid_request"
    assert params["state"] == "xyz"
    assert post_with_file("note").status_code == 200  # an extra file is ignored


def test_browser_forms_over_64_kib_are_refused_with_a_page(server, alice):
    """Sign-in, consent and POST authorization count the bytes as they arrive, like the token
    endpoint: a chunked body has no Content-Length to check."""
    flow = new_flow(server.base_url)
    login = flow.authorize()
    consent = flow.sign_in(flow.authorize(), alice.email)
    urls = [
        f"{server.base_url}/oauth/authorize",
        server.base_url + parse_form(login.text)["action"],
        server.base_url + parse_form(consent.text)["action"],
    ]
    for url, page in zip(urls, [login, login, consent], strict=True):
        body = chunked_form({**parse_form(page.text)["fields"], "email": alice.email}, 128 * 1024)
        response = flow.http.post(url, content=body, headers=FORM_HEADERS)
        assert response.status_code == 413, url
        assert "location" not in response.headers
        assert "64 KiB" in response.text


def test_every_form_page_renews_the_csrf_cookie(server, alice):
    """A page shown just before the cookie would expire must still submit: each page with a
    form sets the same cookie again with its full lifetime (the form is good for 10 minutes)."""

    def csrf_cookie(page: httpx.Response) -> str:
        return next((h for h in page.headers.get_list("set-cookie") if h.startswith("jm_csrf=")), "(not set)")

    flow = new_flow(server.base_url)
    first = csrf_cookie(flow.authorize())
    second_page = flow.authorize()
    consent_page = flow.sign_in(second_page, alice.email)
    for renewed in (csrf_cookie(second_page), csrf_cookie(consent_page)):
        assert renewed.split(";")[0] == first.split(";")[0]  # same value: open forms stay valid
        assert "Max-Age=3600" in renewed
        assert "HttpOnly" in renewed


def test_a_repeated_parameter_is_invalid_request_and_an_ambiguous_one_a_page(server, alice):
    """RFC 6749 §3.1 and §4.1.2.1. When the repeated parameter says which app, where to answer or
    what state to echo, no redirect can be trusted: a page."""
    flow = new_flow(server.base_url)
    flow.authorize()  # sets the PKCE pair
    base = {
        "response_type": "code",
        "client_id": flow.client_id,
        "redirect_uri": flow.redirect_uri,
        "code_challenge": flow.challenge,
        "code_challenge_method": "S256",
        "state": "xyz",
    }
    url = f"{server.base_url}/oauth/authorize"
    twice = flow.http.get(url, params=[*base.items(), ("code_challenge", flow.challenge)])
    params = redirect_params(twice)
    assert params["error"] == "invalid_request" and "code_challenge" in params["error_description"]
    assert params["state"] == "xyz"
    for name in ("client_id", "redirect_uri", "state"):
        page = flow.http.get(url, params=[*base.items(), (name, base[name])])
        assert page.status_code == 400 and "more than once" in page.text, name


def test_consent_shows_hosts_in_ascii_and_names_an_impostor_host(server, alice):
    """`cl\u0430ude.ai` (a Cyrillic a) read as claude.ai; an app called "Claude" that sends the code
    elsewhere is shown with that host in plain words (issue 12, finding 6)."""
    lookalike = "https://cl\u0430ude.ai/api/mcp/auth_callback"
    flow = new_flow(server.base_url, {"client_name": "Claude", "redirect_uris": [lookalike]})
    page = flow.sign_in(flow.authorize(), alice.email)
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "cl\u0430ude.ai" not in text
    assert "xn--clude-5ve.ai" in text
    assert "“Claude” — this app is from xn--clude-5ve.ai, not claude.ai" in text

    genuine = new_flow(server.base_url, {"client_name": "claude", "redirect_uris": [CLAUDE_CALLBACK]})
    page = genuine.sign_in(genuine.authorize(), alice.email)
    assert 'value="approve"' in page.text
    assert "this app is from" not in html.unescape(page.text)
