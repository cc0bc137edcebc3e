"""Helpers for Batch API tests: a batch worker process, the batch storage pointed at a test folder, JSONL files."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

from tests.support.worker import Worker


class BatchWorker(Worker):
    """``python -m batches.worker --pool=solo``: one process, so a SIGKILL stops every line it was sending."""

    name = "batch-worker"

    def __init__(self, tmp: Path, prefix: str, env: dict[str, str], number: int = 0) -> None:
        self.name = f"batch-worker-{number}"
        super().__init__(tmp, prefix, env)

    def command(self, tmp: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "batches.worker",
            "--pool=solo",
            "-n",
            f"batch-{uuid.uuid4().hex[:6]}@%h",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def reset_batch_storage(settings: Any, location: Path) -> None:
    """Point the ``batch_files`` storage at ``location`` (Django caches storage backends, so drop the cached one)."""
    from django.core.files.storage import storages

    location.mkdir(parents=True, exist_ok=True)
    settings.STORAGES = {
        **settings.STORAGES,
        "batch_files": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location), "allow_overwrite": True},
        },
    }
    storages._storages.pop("batch_files", None)


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def chat_lines(count: int, model: str, prefix: str = "req") -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"hello {n}"}], "max_tokens": 4},
        }
        for n in range(count)
    ]


def upload(tenant: Any, count: int, model: str = "chat") -> Any:
    """A batch input file of ``count`` chat lines, uploaded for ``tenant`` through the service."""
    import io

    from batches import services

    content = jsonl(chat_lines(count, model))
    return services.upload_file(
        tenant,
        actor=None,
        request_id="test",
        filename="in.jsonl",
        purpose="batch",
        content=io.BytesIO(content),
        size=len(content),
    )


def read_jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
