"""A scripted upstream for the gateway tests: a small threaded HTTP(S) server on 127.0.0.1 that answers what the test
says and records what reached it (connections accepted, requests with their headers and bodies).

The default script answers like an OpenAI-compatible model server (chat, completions, streams, embeddings) with
the usage the test sets, so a test can make an upstream lie about its usage, redirect, or refuse an input.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict[str, Any]


Script = Callable[[str, dict[str, Any]], Answer]


def openai_answer(path: str, body: dict[str, Any], usage: Any = None) -> Answer:
    """What a model server would answer, with ``usage`` as given (None: honest counts)."""
    model = body.get("model", "m")
    if path.endswith("/embeddings"):
        inputs = body.get("input")
        texts = inputs if isinstance(inputs, list) else [inputs]
        honest = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
        doc = {
            "object": "list",
            "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": [0.5, 0.25]} for i in range(len(texts))],
            "usage": honest if usage is None else usage,
        }
        return Answer(200, json.dumps(doc).encode())
    honest = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    used = honest if usage is None else usage
    if body.get("stream"):
        chunk = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
        }
        last = {"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [], "usage": used}
        events = [json.dumps(chunk), json.dumps(last), "[DONE]"]
        return Answer(200, "".join(f"data: {e}\n\n" for e in events).encode(), "text/event-stream")
    doc = {
        "id": "c1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": used,
    }
    return Answer(200, json.dumps(doc).encode())


class ScriptedUpstream:
    """``script(path, body) -> Answer`` answers each POST; ``received`` and ``connections`` say what came in."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.script: Script = openai_answer
        self.received: list[Received] = []
        self.connections = 0
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                body = json.loads(raw) if raw else {}
                headers = {k.lower(): v for k, v in self.headers.items()}
                upstream.received.append(Received(self.path, headers, body))
                answer = upstream.script(self.path, body)
                self.send_response(answer.status)
                self.send_header("content-type", answer.content_type)
                self.send_header("content-length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[Any, Any]:
                request = super().get_request()
                upstream.connections += 1
                return request

        self._server = Server((host, port), Handler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> ScriptedUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer_with_usage(self, usage: Any) -> None:
        self.script = lambda path, body: openai_answer(path, body, usage)


@contextmanager
def scripted_upstream(
    host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
) -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream(host, port, tls).start()
    try:
        yield upstream
    finally:
        upstream.stop()
