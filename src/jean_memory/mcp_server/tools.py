"""The MCP tools: thin adapters from tool arguments to the memory service.

Each tool is a method of `ToolSet` whose docstring is the description the client reads (its
lines joined by single spaces). It reads the caller from `current_principal` (set by the auth
layer from a verified token or API key), runs the blocking service call in a worker thread, and
turns bad input into a tool error (`isError: true`) whose message says what to change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any

import pydantic_core
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from jean_memory.mcp_server.principal import require_principal
from jean_memory.mcp_server.tool_threads import run_tool_work
from jean_memory.memory.context import context_for, with_save_queued
from jean_memory.memory.records import Memory, MemoryInputError, iso_time
from jean_memory.memory.remote_embeddings import OpenAICompatibleEmbedder
from jean_memory.memory.service import DOCUMENT_TYPES, MemoryService
from jean_memory.oauth.scopes import can_write
from jean_memory.observability.metrics import Metrics
from jean_memory.off_loop import run_db

ToolFunction = Callable[..., Any]
#: Tools that change or remove what is stored (their destructiveHint): a client may ask first.
DESTRUCTIVE = frozenset({"delete_memory", "update_memory"})
#: The SDK's tool for each ToolSet method, built once per process, with no function (ToolSet.tools).
_SCHEMAS: dict[Callable[..., Any], Tool] = {}


async def _unbound(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("a cached tool schema was called; ToolSet.tools gives each set its own copy")


class Compact(BaseModel):
    """Leaves out fields that do not apply (a score outside search, the cursor on the last page)."""

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class MemoryItem(Compact):
    id: str
    text: str
    tags: list[str]
    created_at: str
    updated_at: str | None = None  # when it changed after it was saved
    score: float | None = None
    title: str | None = None  # the document a chunk comes from
    superseded_by: str | None = None  # the newer memory that replaced this one


class MemoryResults(Compact):
    results: list[MemoryItem]
    next_cursor: str | None = None


class SavedMemory(BaseModel):
    id: str
    text: str


# An existing memory about the same thing as the one saved, with its date, so the assistant can
# tell whether the new fact replaces it (and call update_memory) or stands beside it. No
# docstring: it would become the schema's description, which every client reads.
class SimilarMemory(Compact):
    id: str
    text: str
    created_at: str
    superseded_by: str | None = None  # set when this save replaced it


class AddResult(BaseModel):
    saved: list[SavedMemory]
    similar: list[SimilarMemory]


class DeleteResult(BaseModel):
    deleted: str


class UpdateResult(BaseModel):
    updated: str
    text: str
    tags: list[str]


class StoredDocument(BaseModel):
    document_id: str
    status: str
    message: str


class SearchHit(BaseModel):
    id: str
    title: str
    url: str


class SearchHits(BaseModel):
    results: list[SearchHit]


class FetchedDocument(BaseModel):
    id: str
    title: str
    text: str
    url: str
    metadata: dict[str, Any]


def _results(memories: list[Memory], next_cursor: str | None = None) -> CallToolResult:
    """`MemoryResults` as the SDK makes it from the model (structured content, and the same as
    indented JSON text), built from the memories' dicts. From the model the SDK ran `Compact`'s
    serializer in Python twice per memory: 74 us for ten hits against 24 (issue 17). The SDK
    still checks the structured content against `MemoryResults`, the schema the client reads."""
    structured: dict[str, Any] = {"results": [m.as_dict() for m in memories]}
    if next_cursor is not None:
        structured["next_cursor"] = next_cursor
    text = pydantic_core.to_json(structured, indent=2).decode()
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


def waits_on_other_services(memory: MemoryService) -> bool:
    """Whether every tool call may wait on a service elsewhere: the OpenAI-compatible embeddings
    provider (every search and save, up to its 30 s timeout). Such calls must not queue for
    `tool_threads()`: a few of them waiting on the provider, using no core, would stop every
    other person's calls. (The LLM extractor is reached only through a queued save, and saves
    never take the tool threads: see `_call`.)"""
    return isinstance(memory.embedder, OpenAICompatibleEmbedder)


def _title(text: str) -> str:
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return first_line[:80] + ("…" if len(first_line) > 80 else "")


def tool(read_only: bool) -> Callable[[ToolFunction], ToolFunction]:
    """Marks a `ToolSet` method as a tool; `read_only` becomes its readOnlyHint."""

    def mark(fn: ToolFunction) -> ToolFunction:
        fn.read_only = read_only  # type: ignore[attr-defined]
        return fn

    return mark


def description_of(fn: ToolFunction) -> str:
    """The docstring as one line: the text a client shows the model."""
    return " ".join((fn.__doc__ or "").split())


def counted(name: str, fn: ToolFunction, metrics: Metrics) -> ToolFunction:
    """The tool, counting each call's outcome; `wraps` keeps the signature the SDK reads."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = await fn(*args, **kwargs)
        except ToolError:
            metrics.tool_calls.labels(name, "tool_error").inc()
            raise
        except Exception:
            metrics.tool_calls.labels(name, "error").inc()
            raise
        metrics.tool_calls.labels(name, "ok").inc()
        return result

    return wrapper


class ToolSet:
    """Builds the tools for one server; `issuer` makes the URLs ChatGPT cites."""

    def __init__(self, memory: MemoryService, issuer: str, metrics: Metrics) -> None:
        self._memory = memory
        self._issuer = issuer
        self._metrics = metrics
        # A tool call is CPU in this process unless it waits on another service (see there).
        self._run = run_db if waits_on_other_services(memory) else run_tool_work

    async def _call(self, fn: Callable[..., Any], *args: Any, saves: bool = False) -> Any:
        """`fn` in a worker thread; `saves` for a call that takes the person's write lock (the
        row on PostgreSQL, the database's on SQLite). Those run on anyio's threads, not the tool
        threads: while a long writer elsewhere (`import`, `user delete`, deleting everything)
        holds the lock they wait, using no core, for up to the busy timeout, and two of them
        would stop every other person's searches on this worker. Their CPU (the embedding) has
        its own admission (embeddings.py)."""
        try:
            return await (run_db if saves else self._run)(fn, *args)
        except MemoryInputError as exc:
            raise ToolError(str(exc)) from exc

    def reads_only(self, name: str) -> bool:
        """Whether a read-only grant gets this tool: the ones that read, and `jean_memory`, which
        for such a grant answers with context and saves nothing."""
        return name == "jean_memory" or bool(getattr(getattr(self, name), "read_only", False))

    def tools(self, names: tuple[str, ...]) -> list[Tool]:
        """The SDK's tools for `names`, each calling this set's method. The SDK derives a tool's
        argument model and JSON schemas from the method's signature, 5 ms a tool: that is done
        once per process (`_SCHEMAS`), since every set's methods have the same signatures, and
        each set gets a copy that calls its own method. Building them anew for each of an app's
        six servers, and for each app a test starts, was a tenth of a second per app."""
        built = []
        for name in names:
            fn = getattr(self, name)
            if not hasattr(fn, "read_only"):
                raise ValueError(f"{name} is not a tool")
            wrapped = counted(name, fn, self._metrics)
            method = getattr(type(self), name)  # the key: a subclass's own method has its own schema
            schema = _SCHEMAS.get(method)
            if schema is None:
                tool = Tool.from_function(
                    wrapped,
                    name=name,
                    description=description_of(fn),
                    annotations=ToolAnnotations(
                        readOnlyHint=fn.read_only, destructiveHint=name in DESTRUCTIVE, openWorldHint=False
                    ),
                )
                # Kept without this set's function, which would keep its service alive for good.
                schema = _SCHEMAS[method] = tool.model_copy(update={"fn": _unbound})
            built.append(schema.model_copy(update={"fn": wrapped}))
        return built

    @tool(read_only=False)
    async def jean_memory(
        self,
        user_message: Annotated[str, Field(description="The person's latest message, verbatim")],
        is_new_conversation: Annotated[bool, Field(description="True on the first message of a conversation")],
        needs_context: Annotated[bool, Field(description="False when the message needs no personal context")] = True,
    ) -> str:
        """Call on every message of the person: returns what you know about them that is relevant
        to the message (a short profile at the start of a conversation). Set needs_context=false
        for messages that need no personal context."""
        principal = require_principal()
        context = await self._call(
            context_for,
            self._memory,
            principal.user_id,
            user_message,
            is_new_conversation,
            needs_context,
            principal.profile,
            False,
        )
        if can_write(principal.scopes):  # a read-only grant saves nothing
            context = await self._call(
                with_save_queued, context, self._memory, principal.user_id, user_message, principal.profile, saves=True
            )
        return context.text()

    @tool(read_only=False)
    async def add_memories(
        self,
        text: Annotated[str, Field(description="One fact about the person, in a full sentence")],
        tags: Annotated[list[str] | None, Field(description="Optional labels, e.g. ['work']")] = None,
    ) -> AddResult:
        """Save a fact about the person (preferences, plans, people, projects). Returns the saved
        id, or the existing memory it merged into, and in similar the existing memories about the
        same thing with their dates. When the new fact changes one of them (they moved, switched
        jobs), call update_memory on that id instead of keeping both; one this save already
        replaced carries superseded_by."""
        principal = require_principal()
        result = await self._call(self._memory.add, principal.user_id, text, tags, principal.profile, saves=True)
        return AddResult(
            saved=[SavedMemory(id=m.id, text=m.text) for m in result.saved],
            similar=[
                SimilarMemory(id=m.id, text=m.text, created_at=iso_time(m.created_at), superseded_by=m.superseded_by)
                for m in result.similar
            ],
        )

    @tool(read_only=True)
    async def search_memory(
        self,
        query: Annotated[str, Field(description="What to look for, in natural language")],
        limit: Annotated[int, Field(description="How many results, 1-100")] = 10,
        tags: Annotated[list[str] | None, Field(description="Only memories with all these tags")] = None,
    ) -> Annotated[CallToolResult, MemoryResults]:
        """Search the person's memories by meaning and keywords."""
        principal = require_principal()
        hits = await self._call(self._memory.search, principal.user_id, query, limit, tags)
        return _results(hits)

    @tool(read_only=True)
    async def list_memories(
        self,
        limit: Annotated[int, Field(description="How many memories, 1-100, newest first")] = 20,
        cursor: Annotated[str | None, Field(description="next_cursor from the previous page")] = None,
    ) -> Annotated[CallToolResult, MemoryResults]:
        """List the person's memories, newest first, page by page."""
        principal = require_principal()
        items, next_cursor = await self._call(self._memory.list, principal.user_id, limit, cursor)
        return _results(items, next_cursor)

    @tool(read_only=False)
    async def delete_memory(
        self,
        memory_id: Annotated[str, Field(description="The id from search_memory or list_memories")],
    ) -> DeleteResult:
        """Delete one memory by id (when the person asks to forget it). It goes to the trash, where
        the person can restore it for 30 days. When a fact changed, call update_memory instead."""
        principal = require_principal()
        if not await self._call(self._memory.delete, principal.user_id, memory_id, principal.profile, saves=True):
            raise ToolError(f"no memory with id {memory_id!r}; list_memories shows the ids that exist")
        return DeleteResult(deleted=memory_id)

    @tool(read_only=False)
    async def update_memory(
        self,
        memory_id: Annotated[str, Field(description="The id from search_memory or list_memories")],
        text: Annotated[str, Field(description="The corrected fact, in a full sentence")],
        tags: Annotated[list[str] | None, Field(description="New labels; omit to keep the current ones")] = None,
    ) -> UpdateResult:
        """Rewrite one memory by id when a fact about the person changed or was wrong (they moved,
        switched jobs, corrected you). Use this instead of saving a second, contradicting
        memory (add_memories names the memories about the same thing in similar); the old text
        stays in the memory's history."""
        principal = require_principal()
        updated = await self._call(
            self._memory.update, principal.user_id, memory_id, text, tags, principal.profile, saves=True
        )
        if updated is None:
            raise ToolError(f"no memory with id {memory_id!r}; list_memories shows the ids that exist")
        return UpdateResult(updated=updated.id, text=updated.text, tags=updated.tags)

    @tool(read_only=False)
    async def store_document(
        self,
        title: Annotated[str, Field(description="A short title")],
        content: Annotated[str, Field(description="The full text (Markdown welcome), up to 5 MB")],
        document_type: Annotated[str, Field(description=f"One of {', '.join(DOCUMENT_TYPES)}")] = "markdown",
        source_url: Annotated[str | None, Field(description="Where it came from, if anywhere")] = None,
    ) -> StoredDocument:
        """Store a long text (notes, a document, a web page) so its passages can be found later by
        search_memory and jean_memory."""
        principal = require_principal()
        document_id = await self._call(
            self._memory.store_document,
            principal.user_id,
            title,
            content,
            document_type,
            source_url,
            principal.profile,
            saves=True,
        )
        return StoredDocument(
            document_id=document_id,
            status="indexing",
            message="Stored. It becomes searchable within seconds (longer for very large documents).",
        )

    @tool(read_only=True)
    async def search(self, query: Annotated[str, Field(description="What to look for")]) -> SearchHits:
        """Search the person's memories. Returns ids, titles and URLs."""
        principal = require_principal()
        hits = await self._call(self._memory.search, principal.user_id, query, 10, None)
        return SearchHits(
            results=[
                SearchHit(id=m.id, title=m.title or _title(m.text), url=f"{self._issuer}/memories/{m.id}") for m in hits
            ]
        )

    @tool(read_only=True)
    async def fetch(self, id: Annotated[str, Field(description="An id from search")]) -> FetchedDocument:
        """Fetch one memory by the id search returned."""
        principal = require_principal()
        found = await self._call(self._memory.get, principal.user_id, id)
        if found is None:
            raise ToolError(f"no memory with id {id!r}; use an id that search returned")
        return FetchedDocument(
            id=found.id,
            title=found.title or _title(found.text),
            text=found.text,
            url=f"{self._issuer}/memories/{found.id}",
            metadata={
                "tags": found.tags,
                "created_at": found.as_dict()["created_at"],
                "kind": found.kind,
                **({"document_id": found.document_id} if found.document_id else {}),
            },
        )
