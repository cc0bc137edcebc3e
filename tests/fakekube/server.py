"""A fake Kubernetes API server: real HTTP on 127.0.0.1, used through the official ``kubernetes`` client.

It serves the resources of ``kinds.py`` at the client's normal paths (``/api/v1/...``, ``/apis/<group>/<version>/
...``, cluster-wide lists, the ``status`` and ``scale`` subresources): create, get, list (``labelSelector``,
``fieldSelector``), replace, JSON merge / strategic merge / JSON patch, server-side apply
(``application/apply-patch+yaml`` with ``fieldManager`` and ``force``, tracking field ownership) and delete
(``propagationPolicy``), with what ``store.py`` does on every write. As on a real server, the items of a list of a
built-in kind carry no ``apiVersion`` and ``kind``, errors are ``Status`` bodies, and a write without
``fieldManager`` is owned by the client's User-Agent up to its first ``/``.

For tests and the benchmark: request counters (reads vs writes, a write log), injected faults (N failing calls
with a status, latency, dropped connections, 422 for a name, 409s), the controllers of ``controller.py``
(settling after every write by default, or stepping on a thread) and ``/_fake/...`` control endpoints.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from tests.fakekube.cluster import NodeSpec, cpu_nodes, default_nodes, gpu_nodes
from tests.fakekube.kinds import RESOURCES, ApiError, Resource, bad_request
from tests.fakekube.store import Store

_PREFIX = re.compile(r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))(?P<rest>/.*)?$")


def _route(path: str) -> tuple[Resource, str | None, str | None, str]:
    """(resource, namespace or None, name or None, subresource) for an API path; 404 when there is none."""
    missing = ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
    match = _PREFIX.match(path)
    if match is None or not match.group("rest"):
        raise missing
    group, version = (match.group("group") or "", match.group("core") or match.group("version"))
    parts = match.group("rest").strip("/").split("/")
    namespace: str | None = None
    if parts[0] == "namespaces" and len(parts) >= 3 and parts[2] not in ("status", "finalize"):
        namespace, parts = parts[1], parts[2:]
    if len(parts) > 3 or not parts[0]:
        raise missing
    plural, name = parts[0], parts[1] if len(parts) > 1 else None
    sub = parts[2] if len(parts) > 2 else ""
    resource = RESOURCES.get(plural)
    if resource is None or resource.group != group or resource.version != version:
        raise missing
    if sub not in ("", "status", "scale") or (sub == "scale" and plural not in ("deployments", "replicasets")):
        raise missing
    if not resource.namespaced and namespace is not None:
        raise missing
    return resource, namespace, name, sub


def _manager(query: dict[str, list[str]], user_agent: str) -> str:
    given = query.get("fieldManager", [""])[0]
    return given or (user_agent.split("/", 1)[0] if user_agent else "unknown")


def _list_items(resource: Resource, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A built-in kind's list items carry no ``apiVersion``/``kind`` (the list's own say them); a CRD's do."""
    if not resource.builtin:
        return list(items)
    return [{k: v for k, v in item.items() if k not in ("apiVersion", "kind")} for item in items]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle + delayed ACK add ~40 ms per response.
    disable_nagle_algorithm = True
    server: FakeKubeServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests print what matters
        return

    def _send_bytes(self, code: int, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send(self, code: int, body: Any) -> None:
        self._send_bytes(code, json.dumps(body).encode())

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            if "yaml" in (self.headers.get("Content-Type") or "") and not raw.lstrip().startswith(b"{"):
                return yaml.safe_load(raw)
            return json.loads(raw)  # JSON is YAML too, and the official client sends apply bodies as JSON
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the request body could not be decoded: {exc}") from exc

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
        try:
            body = self._body()
        except ApiError as exc:
            self._send(exc.code, exc.body())
            return
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
                data = json.dumps(result).encode()  # under the lock: the controller thread writes too
        except ApiError as exc:
            self._send(exc.code, exc.body())
            return
        self._send_bytes(code, data)

    def _dispatch(self, verb: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        store = self.server.store
        resource, namespace, name, sub = _route(path)
        plural, ns = resource.plural, namespace or ""
        if verb != "GET":
            store.stats.writes += 1
            named = name or (body.get("metadata", {}).get("name", "") if isinstance(body, dict) else "")
            store.stats.write_log.append((verb, plural, ns, named))
        manager = _manager(query, self.headers.get("User-Agent") or "")
        if name is None:
            if verb == "GET":
                scope = namespace if (namespace or not resource.namespaced) else None  # None = every namespace
                selector = query.get("labelSelector", [""])[0]
                fields = query.get("fieldSelector", [""])[0]
                items = store.list(plural, "" if not resource.namespaced else scope, selector, fields)
                return 200, {
                    "apiVersion": resource.api_version,
                    "kind": f"{resource.kind}List",
                    "metadata": {"resourceVersion": str(store.version)},
                    "items": _list_items(resource, items),
                }
            if verb == "POST":
                if resource.namespaced and namespace is None:
                    raise ApiError(
                        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                    )
                if not isinstance(body, dict):
                    raise bad_request("the body of a create is an object")
                return 201, store.create(plural, ns, body, resource.api_version, manager)
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if resource.namespaced and namespace is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        if sub == "scale":
            return self._scale(verb, resource, ns, name, body, manager)
        if verb == "GET":
            return 200, store.get(plural, ns, name)
        if verb == "PUT":
            if not isinstance(body, dict):
                raise bad_request("the body of a replace is an object")
            return 200, store.update(plural, ns, name, body, check_version=True, manager=manager, subresource=sub)
        if verb == "DELETE":
            options = body if isinstance(body, dict) else {}
            propagation = options.get("propagationPolicy") or query.get("propagationPolicy", ["Background"])[0]
            grace = options.get("gracePeriodSeconds", query.get("gracePeriodSeconds", [None])[0])
            return 200, store.delete(plural, ns, name, propagation, None if grace is None else int(grace))
        if verb == "PATCH":
            content_type = self.headers.get("Content-Type") or ""
            if "apply-patch" in content_type:
                force = query.get("force", ["false"])[0].lower() == "true"
                given = query.get("fieldManager", [""])[0]
                return store.apply(plural, ns, name, body, resource.api_version, given, force, sub)
            return 200, store.patch(plural, ns, name, body, content_type, manager, sub)
        raise ApiError(405, "MethodNotAllowed", verb)

    def _scale(
        self, verb: str, resource: Resource, namespace: str, name: str, body: Any, manager: str
    ) -> tuple[int, Any]:
        store = self.server.store
        if verb == "GET":
            return 200, store.read_scale(resource.plural, namespace, name)
        if verb in ("PUT", "PATCH") and isinstance(body, dict):
            replicas = (body.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int):
                raise bad_request("spec.replicas of a Scale is an integer")
            return 200, store.scale(resource.plural, namespace, name, replicas, manager)
        raise ApiError(405, "MethodNotAllowed", verb)

    def _control(self, verb: str, path: str) -> None:
        """``GET /_fake/stats``, ``POST /_fake/reset``, ``POST /_fake/faults`` (JSON fields of ``Faults``),
        ``POST /_fake/pod-faults`` (``{"fault": ..., "image": ...}`` or ``{"clear": true}``), ``POST /_fake/settle``."""
        store = self.server.store
        try:
            body = self._body() if verb == "POST" else {}
        except ApiError as exc:
            self._send(exc.code, exc.body())
            return
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
            elif path == "/_fake/pod-faults" and verb == "POST":
                if body.get("clear"):
                    store.controller.clear_faults()
                else:
                    store.controller.inject(
                        body["fault"], image=body.get("image"), pod=body.get("pod"), namespace=body.get("namespace", "")
                    )
                self._send(200, {})
            elif path == "/_fake/settle" and verb == "POST":
                self._send(200, {"steps": store.controller.settle()})
            else:
                self._send(404, ApiError(404, "NotFound", path).body())


class FakeKubeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        nodes: Iterable[NodeSpec] | None = None,
        store: Store | None = None,
    ) -> None:
        super().__init__((host, port), Handler)
        self.store = store or Store()
        for node in default_nodes() if nodes is None else nodes:
            self.store.add_node(node)
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
        self.store.controller.stop()
        self.shutdown()
        self.server_close()


def main() -> None:
    """Run standalone: ``python -m tests.fakekube.server [port] [--controller thread] [--gpu-nodes N]`` (prints
    its URL). ``--controller settle`` (the default) settles the controllers after every write; ``thread`` runs them
    every 50 ms on their own, so pods become ready a moment after the writes that made them."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakekube.server")
    parser.add_argument("port", nargs="?", type=int, default=0)
    parser.add_argument("--controller", choices=("settle", "thread"), default="settle")
    parser.add_argument("--gpu-nodes", type=int, default=4, help="nodes of 8 GPUs per GPU type (default 4)")
    parser.add_argument("--cpu-nodes", type=int, default=2, help="CPU nodes without taints (default 2)")
    args = parser.parse_args()
    nodes = default_nodes(args.gpu_nodes, args.cpu_nodes)
    server = FakeKubeServer(port=args.port, nodes=nodes)
    if args.controller == "thread":
        server.store.controller.start()
    print(server.url, flush=True)
    server.serve_forever()


__all__ = ["FakeKubeServer", "cpu_nodes", "gpu_nodes", "main"]

if __name__ == "__main__":
    main()
