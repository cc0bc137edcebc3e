"""Deterministic text generation: the same prompt always yields the same words.

One generated token is one word (no punctuation), so ``count_tokens`` of the output equals the reported
``completion_tokens``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

_WORD_TEXT = (
    "the quick brown fox jumps over lazy dog model server token stream gateway tenant replica cluster "
    "request answer question data vector cache queue batch latency signal river mountain forest ocean "
    "cloud light shadow garden window paper story music silver golden bright quiet gentle rapid steady "
    "simple clear open early late small large green blue red yellow north south east west morning evening "
    "winter summer spring autumn city road bridge tower harbor island valley meadow stone glass iron wood "
    "fire water earth wind star moon sun planet orbit engine signal pattern method system network memory "
    "compute kernel thread process scheduler limit budget report metric chart table record field value "
    "number letter word sentence reason result choice moment journey travel return begin finish build "
    "learn teach write read listen speak think dream wonder follow lead carry hold share"
)
WORDS = tuple(dict.fromkeys(_WORD_TEXT.split()))  # ordered and without duplicates
# A finished answer is between these many words long when max_tokens does not cut it first.
MIN_NATURAL_WORDS = 8
MAX_NATURAL_WORDS = 64


@dataclass(frozen=True)
class Generation:
    """The words of one answer and why it ended."""

    words: tuple[str, ...]
    finish_reason: str  # "stop" when the answer ended by itself, "length" when max_tokens cut it

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def pieces(self) -> Iterator[str]:
        """The stream deltas: each word, with the separating space in front of all but the first."""
        for i, word in enumerate(self.words):
            yield word if i == 0 else " " + word


def generate(prompt: str, max_tokens: int, index: int = 0, seed: int | None = None) -> Generation:
    """Answer ``prompt`` deterministically; ``index`` varies the answer per choice, ``seed`` per request."""
    digest = hashlib.blake2b(f"{seed}|{index}|{prompt}".encode(), digest_size=64).digest()
    natural = MIN_NATURAL_WORDS + digest[0] % (MAX_NATURAL_WORDS - MIN_NATURAL_WORDS + 1)
    count = min(natural, max_tokens)
    # Stretch the digest into as many word choices as needed without a per-word hash call.
    stream = digest[1:]
    while len(stream) < 2 * count:
        stream += hashlib.blake2b(stream[-32:], digest_size=64).digest()
    words = tuple(WORDS[(stream[2 * i] << 8 | stream[2 * i + 1]) % len(WORDS)] for i in range(count))
    return Generation(words=words, finish_reason="stop" if natural <= max_tokens else "length")
