"""The agent's loopback control API: ``GET /healthz``, ``GET /status`` (replicas and observed state),
``POST /resync`` (run a tick now). Desired state never arrives here: it comes through Redis
(see controlplane/contracts/localagent.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def start_control_api(
    host: str, port: int, snapshot: Callable[[], dict[str, Any]], wake: threading.Event
) -> ThreadingHTTPServer:
    """Serve in a daemon thread; returns the server (``server_address`` has the bound port)."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, {"ok": True})
            elif self.path == "/status":
                self._send(200, snapshot())
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path == "/resync":
                wake.set()
                self._send(202, {"ok": True})
            else:
                self._send(404, {"error": "not found"})

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the control API is polled by scripts."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="control-api", daemon=True).start()
    return server
