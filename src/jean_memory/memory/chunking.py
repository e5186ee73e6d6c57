"""Splitting a document into overlapping chunks that each fit one embedding.

Sections first (Markdown headings), then paragraphs, then sentences, so a chunk holds text that
belongs together; neighbouring chunks overlap so a fact cut at a boundary is still whole in one.
Each chunk carries its section heading, which helps both BM25 and the embedding find it.
"""

from __future__ import annotations

import re

MAX_CHARS = 1000
OVERLAP_CHARS = 150
# One line, no nested or adjacent open-ended repeats: the old `\s+(.+?)\s*#*\s*$` split a run of
# spaces in cubically many ways, and a 3 KB document held the interpreter for half a minute.
HEADING = re.compile(r"^(#{1,6})[ \t]+([^\n]*)$", re.MULTILINE)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _heading_text(line: str) -> str:
    """The heading without an optional closing run of #s ("## Plans ##" is "Plans")."""
    title = line.strip()
    without = title.rstrip("#")
    if without != title and (not without or without[-1] in " \t"):
        title = without.rstrip()
    return title


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) pairs; text before the first heading has an empty heading."""
    matches = list(HEADING.finditer(text))
    if not matches:
        return [("", text)]
    sections = [("", text[: matches[0].start()])]
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        sections.append((_heading_text(match.group(2)), text[match.end() : end]))
    return [(h, b) for h, b in sections if b.strip() or h]


def _pieces(body: str, max_chars: int) -> list[str]:
    """Paragraphs, with any paragraph too long split into sentences, and any sentence into slices."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", body):
        paragraph = " ".join(paragraph.split())
        if not paragraph:
            continue
        if len(paragraph) <= max_chars:
            pieces.append(paragraph)
            continue
        for sentence in SENTENCE_END.split(paragraph):
            while len(sentence) > max_chars:
                pieces.append(sentence[:max_chars])
                sentence = sentence[max_chars:]
            if sentence:
                pieces.append(sentence)
    return pieces


def chunk_text(text: str, max_chars: int = MAX_CHARS, overlap: int = OVERLAP_CHARS) -> list[str]:
    chunks: list[str] = []
    for heading, body in _sections(text):
        prefix = f"{heading}: " if heading else ""
        budget = max_chars - len(prefix)
        current = ""
        for piece in _pieces(body, budget):
            if current and len(current) + 1 + len(piece) > budget:
                chunks.append(prefix + current)
                tail = current[-overlap:] if overlap else ""
                tail = tail[tail.find(" ") + 1 :] if " " in tail else tail
                current = f"{tail} {piece}".strip() if len(tail) + 1 + len(piece) <= budget else piece
            else:
                current = f"{current} {piece}".strip()
        if current:
            chunks.append(prefix + current)
        elif heading and not chunks:
            chunks.append(heading)
    return chunks
