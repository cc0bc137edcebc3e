"""The simulator's tokenizer: a word or a single punctuation mark is one token.

The gateway estimates prompt sizes the same way, so its reservations match the ``usage`` this server reports.
"""

from __future__ import annotations

import re
from typing import Any

TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Number of tokens in ``text``: runs of word characters, plus each other non-space character."""
    return len(TOKEN_RE.findall(text))


def message_text(content: Any) -> str:
    """The text of a chat message ``content``: a string, or a list of parts of which the text parts count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def chat_prompt_text(messages: list[dict[str, Any]]) -> str:
    """All message contents joined by newlines: what the simulator counts and seeds its answer with."""
    return "\n".join(message_text(message.get("content")) for message in messages)
