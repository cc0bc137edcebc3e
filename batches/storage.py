"""Where batch files' content lives: the ``batch_files`` storage (a local directory, or an S3-compatible bucket).

Names are built from the tenant and the file's id only, never from what a client called the file, so no upload
can name another's content. Writes overwrite (a finalize that ran twice writes the same name again).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from django.core.files import File
from django.core.files.storage import Storage, storages

CHUNK_BYTES = 1024 * 1024


def batch_storage() -> Storage:
    return storages["batch_files"]


def file_name(tenant_id: int, file_id: str) -> str:
    return f"tenants/{tenant_id}/files/{file_id}.jsonl"


def save(name: str, content: IO[bytes]) -> str:
    """Store ``content`` (read in chunks, never whole) under ``name``; the name it was stored under."""
    return batch_storage().save(name, File(content, name=name))


def chunks_of(handle: IO[bytes], chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """What is left to read of ``handle``, in pieces of up to ``chunk_bytes`` (never the whole at once)."""
    while chunk := handle.read(chunk_bytes):
        yield chunk


def read_chunks(name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The stored content of ``name`` in pieces of up to ``chunk_bytes``."""
    with batch_storage().open(name, "rb") as handle:
        yield from chunks_of(handle, chunk_bytes)


def delete(name: str) -> None:
    batch_storage().delete(name)


def exists(name: str) -> bool:
    return batch_storage().exists(name)
