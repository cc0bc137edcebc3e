"""A fake Kubernetes API server: real HTTP on 127.0.0.1, used through the official ``kubernetes`` client.

It keeps objects in memory per (resource plural, namespace, name) and implements what Frontdoor's backend uses:
create / get / list (``labelSelector``) / patch (JSON merge, strategic merge approximated as merge, and
server-side apply ``application/apply-patch+yaml`` without managedFields) / replace / delete, with
``resourceVersion`` increments, 409 on a stale ``resourceVersion`` or on creating an existing name, 404s, and
``Status`` objects as error bodies. Deleting an object deletes the objects whose ``ownerReferences`` name it
(the garbage collector's cascade); deleting a namespace deletes everything in it.

For tests and the benchmark: request counters (reads vs writes, and a write log), injected faults (N failing
calls with a status, latency, dropped connections, 422 for a name, 409s), direct status control (Deployment
``readyReplicas``, Pending Unschedulable pods) and an optional "controller" that marks Deployments ready.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from tests.fakekube.store import KINDS, ApiError, Store, merge

_PATH = re.compile(
    r"^/(?:api/(?P<cv>v1)|apis/(?P<group>[^/]+)/(?P<gv>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>status))?$"
)
_NS_PATH = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle + delayed ACK add ~40 ms per response.
    disable_nagle_algorithm = True
    server: FakeKubeServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests print what matters
        return

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        if "yaml" in (self.headers.get("Content-Type") or ""):
            return yaml.safe_load(raw)
        return json.loads(raw)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, verb: str) -> None:
        store = self.server.store
        url = urlparse(self.path)
        if url.path.startswith("/_fake/"):
            self._control(verb, url.path)
            return
        body = self._body()
        with store.lock:
            faults = store.faults
            latency = faults.latency_s
            drop = faults.drop_next > 0
            if drop:
                faults.drop_next -= 1
            fail = faults.fail_next > 0
            if fail:
                faults.fail_next -= 1
            conflict = verb != "GET" and faults.conflict_next > 0
            if conflict:
                faults.conflict_next -= 1
            if verb == "GET":
                store.stats.reads += 1
        if latency:
            time.sleep(latency)
        if drop:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        try:
            if fail:
                raise ApiError(faults.fail_status, "InternalError", "injected failure")
            if conflict:
                raise ApiError(409, "Conflict", "injected conflict: the object has been modified")
            with store.lock:
                code, result = self._dispatch(verb, url.path, parse_qs(url.query), body)
        except ApiError as exc:
            self._send(exc.code, exc.body())
            return
        self._send(code, result)

    def _dispatch(self, verb: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        store = self.server.store
        ns_match = _NS_PATH.match(path)
        if ns_match:
            plural, namespace, name, api_version = "namespaces", "", ns_match.group("name"), "v1"
        else:
            match = _PATH.match(path)
            if not match or match.group("plural") not in KINDS:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
            plural, name = match.group("plural"), match.group("name")
            namespace = match.group("ns") or ""
            api_version = "v1" if match.group("cv") else f"{match.group('group')}/{match.group('gv')}"
        if verb != "GET":
            store.stats.writes += 1
            store.stats.write_log.append((verb, plural, namespace, name or body.get("metadata", {}).get("name", "")))
        if verb == "GET" and name is None:
            selector = query.get("labelSelector", [""])[0]
            scope = namespace if (namespace or plural == "namespaces") else None  # None = every namespace
            items = store.list(plural, scope, selector)
            return 200, {
                "apiVersion": api_version,
                "kind": f"{KINDS[plural]}List",
                "metadata": {"resourceVersion": str(store.version)},
                "items": items,
            }
        if verb == "GET":
            return 200, store.get(plural, namespace, name or "")
        if verb == "POST":
            return 201, store.create(plural, namespace, body, api_version)
        if verb == "PUT":
            return 200, store.update(plural, namespace, name or "", body, check_version=True)
        if verb == "DELETE":
            # Like the real server: the deleted object comes back (here with its deletion time).
            gone = store.delete(plural, namespace, name or "")
            gone["metadata"]["deletionTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            return 200, gone
        if verb == "PATCH":
            content_type = self.headers.get("Content-Type") or ""
            if "apply-patch" in content_type:
                return store.apply(plural, namespace, name or "", body, api_version)
            old = store.get(plural, namespace, name or "")
            return 200, store.update(plural, namespace, name or "", merge(old, body), check_version=True)
        raise ApiError(405, "MethodNotAllowed", verb)

    def _control(self, verb: str, path: str) -> None:
        """``GET /_fake/stats``, ``POST /_fake/reset``, ``POST /_fake/faults`` (JSON fields of ``Faults``)."""
        store = self.server.store
        body = self._body() if verb == "POST" else {}
        with store.lock:
            if path == "/_fake/stats":
                self._send(200, store.stats.snapshot())
            elif path == "/_fake/reset" and verb == "POST":
                store.reset_stats()
                self._send(200, {})
            elif path == "/_fake/faults" and verb == "POST":
                for key, value in body.items():
                    setattr(store.faults, key, value)
                self._send(200, {})
            else:
                self._send(404, ApiError(404, "NotFound", path).body())


class FakeKubeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), Handler)
        self.store = Store()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeKubeServer:
        self._thread = threading.Thread(target=self.serve_forever, name="fakekube", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def main() -> None:
    """Run standalone: ``python -m tests.fakekube.server [port]`` (prints its URL)."""
    import sys

    server = FakeKubeServer(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(server.url, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
