"""The lean `/mcp` path (mcp_server/lean.py) answers exactly as the SDK's own transport does.

Differential: two real servers on one database, one as served (lean path on) and one with every
request through the SDK's stateless transport (`build_app(lean_mcp=False)`), receive the same
requests, and their answers are compared: status, the headers a client reads, and the JSON body.
Valid calls of every tool, bad arguments, an unknown tool, a read-only grant calling a writing
tool, odd and missing headers, every protocol version the SDK serves; then generated request
shapes (hypothesis). Writes go to one person on each server (Alice on the lean one, Bob on the
other, step by step, so both databases' full-text statistics match at every search) and ids and
times are compared by their order of appearance; reads go to one person on both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from jean_memory.accounts.users import User, create_user
from tests.support.oauth import PASSWORD, new_flow, parse_form, redirect_params
from tests.support.servers import RunningServer, threaded_server

# The two paths are compared over one database: what differs between them is the MCP framing,
# and the tools' database work has tests on both backends.
pytestmark = pytest.mark.one_database

#: Headers that differ between any two servers or responses whatever they serve.
VOLATILE_HEADERS = {"date", "server", "content-length", "x-request-id"}
UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}|[0-9a-f]{32}")
CURSOR = re.compile(r'"next_cursor": "[^"]*"')  # a position (time, key): differs between two people
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")
JSON = "application/json"
ACCEPT = "application/json, text/event-stream"


@pytest.fixture
def reference(server: RunningServer, tmp_path) -> Iterator[RunningServer]:  # type: ignore[no-untyped-def]
    """The same app with the lean path off, on the same database and issuer (so one token is
    honoured by both)."""
    with threaded_server(
        server.settings.database_url, tmp_path / "data-reference", lean_mcp=False, issuer=server.settings.issuer
    ) as running:
        yield running


def token_for(server: RunningServer, user: User, writes: bool = True) -> str:
    flow = new_flow(server.base_url)
    page = flow.authorize()
    if 'name="password"' in page.text:
        page = flow.sign_in(page, user.email)
    form = parse_form(page.text)
    fields = {k: v for k, v in form["fields"].items() if writes or k != "allow_write"}
    response = flow.http.post(server.base_url + form["action"], data={**fields, "decision": "approve"})
    tokens = flow.exchange(redirect_params(response)["code"]).json()
    assert tokens["scope"] == ("memory" if writes else "memory:read"), tokens
    return tokens["access_token"]


@dataclass
class Wire:
    """One server's answers with ids and times replaced by their order of appearance."""

    url: str
    names: dict[str, str] = field(default_factory=dict)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    def normal(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: "<cursor>" if k == "next_cursor" else self.normal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.normal(v) for v in value]
        if isinstance(value, str):
            value = CURSOR.sub('"next_cursor": "<cursor>"', ISO_TIME.sub("<time>", value))
            return UUID.sub(lambda m: self.names.setdefault(m.group(0), f"<id{len(self.names)}>"), value)
        return value

    def real_id(self, placeholder: str) -> str:
        return next((real for real, name in self.names.items() if name == placeholder), placeholder)

    def send(self, token: str, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None) -> tuple:
        sent = {"Authorization": f"Bearer {token}", "Content-Type": JSON, "Accept": ACCEPT}
        for name, value in (headers or {}).items():
            if value is None:
                sent.pop(name, None)
            else:
                sent[name] = value
        content = raw if raw is not None else json.dumps(body).encode()
        response = self.http.post(self.url, content=content, headers=sent)
        kept = {k: v for k, v in response.headers.items() if k not in VOLATILE_HEADERS}
        try:
            parsed: Any = response.json()
        except ValueError:
            parsed = response.text
        return response.status_code, self.normal(kept), self.normal(parsed)


def call(name: str, arguments: Any, request_id: Any = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


def v(version: str) -> dict[str, str]:
    return {"MCP-Protocol-Version": version}


def steps() -> list[tuple[Any, dict[str, Any] | None, bytes | None]]:
    """(body, header changes, raw body) in order; `<idN>` in a body is the server's own id N."""
    listing = {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {}}
    out: list[tuple[Any, dict[str, Any] | None, bytes | None]] = [
        (listing, v("2025-11-25"), None),
        *[(listing, v(version), None) for version in HANDSHAKE_PROTOCOL_VERSIONS],
        (listing, {}, None),
        ({"jsonrpc": "2.0", "id": 8, "method": "tools/list"}, {}, None),
        (call("add_memories", {"text": "I adopted a beagle named Max", "tags": ["pets"]}), v("2025-11-25"), None),
        (call("add_memories", {"text": "I moved to Lisbon in March"}), v("2025-06-18"), None),
        (call("add_memories", {"text": "My sister Ana teaches chemistry"}, "str-id"), {}, None),
        (call("add_memories", {"text": "I adopted a beagle named Max"}), v("2025-11-25"), None),
        (call("add_memories", {}), v("2025-11-25"), None),
        (call("add_memories", {"text": 5}), v("2025-11-25"), None),
        (call("add_memories", {"text": "  "}), v("2025-11-25"), None),
        (call("add_memories", {"text": "x", "surprise": True}), v("2025-11-25"), None),
        (call("search_memory", {"query": "what is my dog called"}), v("2025-11-25"), None),
        (call("search_memory", {"query": "chemistry", "limit": 2, "tags": None}), v("2025-03-26"), None),
        (call("search_memory", {"query": "dog", "tags": ["pets"]}), v("2025-11-25"), None),
        (call("search_memory", {"query": ""}), v("2025-11-25"), None),
        (call("search_memory", {"query": "dog", "limit": 0}), v("2025-11-25"), None),
        (call("search_memory", {"query": "dog", "limit": "many"}), v("2025-11-25"), None),
        (call("list_memories", {}), v("2025-11-25"), None),
        (call("list_memories", {"limit": 1}), v("2025-11-25"), None),
        (call("list_memories", {"cursor": "not-a-cursor"}), v("2025-11-25"), None),
        (call("jean_memory", {"user_message": "what is my dog called?", "is_new_conversation": True}), {}, None),
        (
            call("jean_memory", {"user_message": "hello", "is_new_conversation": False, "needs_context": False}),
            {},
            None,
        ),
        (call("update_memory", {"memory_id": "<id1>", "text": "I moved to Porto in March"}), v("2025-11-25"), None),
        (call("update_memory", {"memory_id": "no-such-id", "text": "x y z"}), v("2025-11-25"), None),
        (call("delete_memory", {"memory_id": "<id2>"}), v("2025-11-25"), None),
        (call("delete_memory", {"memory_id": "<id2>"}), v("2025-11-25"), None),
        (call("nope", {}), v("2025-11-25"), None),
        (call("search", {"query": "dog"}), v("2025-11-25"), None),
        ({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"arguments": {}}}, {}, None),
        (
            {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "search_memory", "arguments": 3}},
            {},
            None,
        ),
        ({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": []}, {}, None),
        ({"jsonrpc": "2.0", "id": 9, "method": "tools/call"}, {}, None),
        ({"jsonrpc": "2.0", "id": None, "method": "tools/list"}, {}, None),
        ({"jsonrpc": "1.0", "id": 9, "method": "tools/list"}, {}, None),
        ({"jsonrpc": "2.0", "id": 9, "method": "ping"}, {}, None),
        ({"jsonrpc": "2.0", "id": 9, "method": "resources/list"}, {}, None),
        ({"jsonrpc": "2.0", "method": "notifications/initialized"}, {}, None),
        ([call("search_memory", {"query": "dog"})], {}, None),
        ({"jsonrpc": "2.0", "id": 9, "result": {}}, {}, None),
        (None, {}, b"{not json"),
        (call("search_memory", {"query": "dog"}), {"Content-Type": "text/plain"}, None),
        (call("search_memory", {"query": "dog"}), {"Content-Type": "APPLICATION/JSON; charset=utf-8"}, None),
        (call("search_memory", {"query": "dog"}), {"Content-Type": None}, None),
        (call("search_memory", {"query": "dog"}), {"Accept": "text/html"}, None),
        (call("search_memory", {"query": "dog"}), {"Accept": "*/*"}, None),
        (call("search_memory", {"query": "dog"}), {"Accept": None}, None),
        (call("search_memory", {"query": "dog"}), {"Accept": "application/*;q=0.5"}, None),
        (call("search_memory", {"query": "dog"}), v("1999-01-01"), None),
        (call("search_memory", {"query": "dog"}), {"Origin": "http://localhost:6274"}, None),
        (call("search_memory", {"query": "dog"}), {"Mcp-Session-Id": "abc"}, None),
    ]
    for version in MODERN_PROTOCOL_VERSIONS:
        headers = {**v(version), "Mcp-Method": "tools/call", "Mcp-Name": "search_memory"}
        out.append((call("search_memory", {"query": "dog"}), headers, None))
        out.append((call("search_memory", {"query": "dog"}), {**headers, "Mcp-Name": "list_memories"}, None))
    out.append(
        (
            call("store_document", {"title": "Notes", "content": "# Plan\nBuy a kayak.", "document_type": "markdown"}),
            {},
            None,
        )
    )
    out.append((call("store_document", {"title": "Notes", "content": "x", "document_type": "docx"}), {}, None))
    return out


def with_ids(wire: Wire, body: Any) -> Any:
    if isinstance(body, dict):
        return {k: with_ids(wire, v) for k, v in body.items()}
    if isinstance(body, list):
        return [with_ids(wire, v) for v in body]
    if isinstance(body, str) and body.startswith("<id"):
        return wire.real_id(body)
    return body


def test_lean_path_answers_as_the_sdk_does(server: RunningServer, reference: RunningServer) -> None:
    """Every step, on both servers, one person each: the same status, headers and body."""
    alice = create_user(server.engine, "alice@example.com", PASSWORD)
    bob = create_user(server.engine, "bob@example.com", PASSWORD)
    lean, sdk = Wire(server.mcp_url), Wire(reference.mcp_url)
    tokens = {lean.url: token_for(server, alice), sdk.url: token_for(server, bob)}
    for number, (body, headers, raw) in enumerate(steps()):
        answers = [wire.send(tokens[wire.url], with_ids(wire, body), headers, raw) for wire in (lean, sdk)]
        assert answers[0] == answers[1], f"step {number}: {body!r} {headers!r}"
    # A read-only grant: the writing tools are unknown tools, the rest answer.
    read = {lean.url: token_for(server, alice, writes=False), sdk.url: token_for(server, bob, writes=False)}
    for body in (
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        call("add_memories", {"text": "I keep bees"}),
        call("delete_memory", {"memory_id": "x"}),
        call("search_memory", {"query": "dog"}),
        call("jean_memory", {"user_message": "I now work as a nurse in Porto", "is_new_conversation": True}),
    ):
        answers = [wire.send(read[wire.url], body, v("2025-11-25")) for wire in (lean, sdk)]
        assert answers[0] == answers[1], body
    assert answers[0][0] == 200 and "error" not in answers[0][2]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 200) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
TOOL_NAMES = st.sampled_from(["search_memory", "list_memories", "jean_memory", "add_memories", "fetch", "", "x"])
ARGUMENTS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {},
        optional={
            "query": st.one_of(st.text(max_size=20), JSON_VALUES),
            "limit": st.one_of(st.integers(-1, 120), JSON_VALUES),
            "tags": st.one_of(st.lists(st.text(max_size=5), max_size=2), JSON_VALUES),
            "cursor": JSON_VALUES,
        },
    ),
)
REQUESTS = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "2.0", "2.0", "1.0"])},
    optional={
        "id": st.one_of(st.integers(0, 10**6), st.text(max_size=6), st.none(), st.booleans()),
        "method": st.sampled_from(["tools/call", "tools/call", "tools/list", "ping", "initialize", "x/y"]),
        "params": st.one_of(
            st.fixed_dictionaries({"name": TOOL_NAMES}, optional={"arguments": ARGUMENTS, "_meta": JSON_VALUES}),
            JSON_VALUES,
        ),
    },
)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "MCP-Protocol-Version": st.sampled_from([*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS, "x"]),
        "Accept": st.sampled_from(["application/json", "text/event-stream", "*/*", "application/json;q=0", ""]),
        "Content-Type": st.sampled_from(["application/json", "application/json; charset=utf-8", "text/json", ""]),
        "Mcp-Method": st.sampled_from(["tools/call", "tools/list"]),
        "Mcp-Name": TOOL_NAMES,
    },
)


def test_generated_requests_get_the_sdks_answers(server: RunningServer, reference: RunningServer) -> None:
    """Reads only, by one person on both servers: generated bodies and headers get identical answers."""
    alice = create_user(server.engine, "alice@example.com", PASSWORD)
    lean, sdk = Wire(server.mcp_url), Wire(reference.mcp_url)
    full, read = token_for(server, alice), token_for(server, alice, writes=False)
    setup = call("add_memories", {"text": "I adopted a beagle named Max", "tags": ["pets"]})
    assert lean.send(full, setup, v("2025-11-25"))[0] == 200

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=REQUESTS, headers=HEADERS, writes=st.booleans())
    def same_answer(body: dict[str, Any], headers: dict[str, str], writes: bool) -> None:
        token = full if writes else read
        params = body.get("params")
        if isinstance(params, dict) and params.get("name") == "add_memories":
            token = read  # only a read-only grant may try to save: it is refused, so nothing changes
        answers = [wire.send(token, body, headers) for wire in (lean, sdk)]
        assert answers[0] == answers[1]

    same_answer()
