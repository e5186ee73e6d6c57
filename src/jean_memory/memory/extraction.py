"""Optional: an LLM (any OpenAI-compatible chat completions endpoint) picks the facts to keep.

Off by default: the heuristic triage needs no key and no network. When an operator configures a
model, the worker (never the request) asks it for the lasting facts in a message; on any error
or a useless answer it falls back to the sentences the heuristic kept, verbatim, so a flaky
model can cost quality but never lose what the person said.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import httpx

logger = logging.getLogger("jean_memory.extraction")

PROMPT = (
    "You maintain a long-term memory about the user of an AI assistant. From the user's message, "
    "extract the durable facts about the user worth remembering in later conversations (identity, "
    "preferences, people, plans, projects, health, places). Write each as one short third-person "
    "sentence. Skip questions, greetings, requests and anything temporary. Answer with JSON only: "
    '{"facts": ["..."]} (an empty list when there is nothing to keep).'
)
MAX_FACTS = 5
#: What a failed call or an answer of the wrong shape raises (json's errors are ValueErrors).
MODEL_ERRORS = (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError, AttributeError)
MAX_FACT_CHARS = 500


@dataclass(frozen=True)
class LlmExtractor:
    base_url: str
    model: str
    api_key: str = ""
    timeout_seconds: float = 20.0

    def chat_json(self, system: str, user: str) -> dict:
        """One chat completion at temperature 0, its answer parsed as a JSON object; raises on
        any transport or format problem (callers fall back to what needs no model)."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        response = httpx.post(
            f"{self.base_url.rstrip('/')}/chat/completions",
            json={
                "model": self.model,
                "temperature": 0,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            },
            headers=headers,
            timeout=self.timeout_seconds,
        )
        response.raise_for_status()
        content = response.json()["choices"][0]["message"]["content"]
        content = content.strip().removeprefix("```json").removeprefix("```").removesuffix("```")
        answer = json.loads(content)
        if not isinstance(answer, dict):
            raise ValueError("the model's answer is not a JSON object")
        return answer

    def extract(self, message: str) -> list[str]:
        """Facts from the model; raises on any transport or format problem (the caller falls back)."""
        facts = self.chat_json(PROMPT, message)["facts"]
        if not isinstance(facts, list) or not all(isinstance(f, str) for f in facts):
            raise ValueError("the model's facts are not a list of strings")
        return [f.strip()[:MAX_FACT_CHARS] for f in facts if f.strip()][:MAX_FACTS]

    def facts_or_fallback(self, message: str, fallback: list[str]) -> list[str]:
        facts = self.facts_or_none(message)
        return fallback if facts is None else facts

    def facts_or_none(self, message: str) -> list[str] | None:
        """The model's facts, or None (logged) when it failed: the caller keeps the heuristic's."""
        try:
            return self.extract(message)
        except MODEL_ERRORS as exc:
            logger.warning(
                "LLM fact extraction failed (%s); keeping the message's sentences verbatim", type(exc).__name__
            )
            return None
