"""/v1/files and /v1/batches: authenticated by the gateway, forwarded to the control plane, bodies streamed both ways.

A stand-in control plane (aiohttp, on 127.0.0.1, in a thread of its own) records every request that reached it
whole and answers in several chunks, so the tests see what the gateway forwards and what it relays back.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx2 as httpx
import openai
import pytest
from aiohttp import web

from controlplane.contracts import batch_wire
from controlplane.contracts.env import ImproperlyConfiguredEnv
from gateway.config import GatewayConfig
from tests.support.gateway import Key, Process, World, free_port, start_gateway, stop

TOKEN = "files-proxy-test-internal-token-0123456789"
LIMIT = 8 * 1024 * 1024  # FRONTDOOR_BATCH_MAX_FILE_BYTES of this module's gateway
INTERNAL = batch_wire.INTERNAL_PREFIX
FILE = {
    "id": "file-abc123",
    "object": "file",
    "bytes": 120,
    "created_at": 1764201600,
    "filename": "input.jsonl",
    "purpose": "batch",
    "status": "processed",
}


@dataclass
class Received:
    method: str
    path: str  # as it came, percent-escapes and all
    query: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    chunks: list[bytes]


def json_chunks(document: object, parts: int = 3) -> list[bytes]:
    data = json.dumps(document).encode()
    step = -(-len(data) // parts)
    return [data[i : i + step] for i in range(0, len(data), step)]


def default_answer(method: str, path: str) -> Answer:
    """What a control plane answers, in several chunks: a file list, a file, a file's content, a batch."""
    if path.endswith("/content"):
        return Answer(200, {"Content-Type": "application/octet-stream"}, [b"x" * 1000] * 5)
    if path.endswith("/v1/files") and method == "GET":
        document: object = {"object": "list", "data": [FILE], "first_id": FILE["id"], "last_id": FILE["id"]}
        return Answer(200, {"Content-Type": "application/json"}, json_chunks({**document, "has_more": False}))
    return Answer(200, {"Content-Type": "application/json"}, json_chunks(FILE))


class StandIn:
    """A stand-in control plane: ``received`` holds the requests that reached it whole, ``script`` answers them.

    ``hold``, when set, keeps the last chunk of every answer back until the test sets it (bounded).
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: Callable[[str, str], Answer] = default_answer
        self.hold: threading.Event | None = None
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> StandIn:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = bytearray()
        async for chunk in request.content.iter_any():  # a request cut short raises here: never recorded
            body.extend(chunk)
        url = request.rel_url
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.received.append(Received(request.method, url.raw_path, url.raw_query_string, headers, bytes(body)))
        answer = self.script(request.method, url.raw_path)
        response = web.StreamResponse(status=answer.status, headers=answer.headers)
        await response.prepare(request)
        for number, chunk in enumerate(answer.chunks):
            if number == len(answer.chunks) - 1 and self.hold is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.hold.wait, 10)
            await response.write(chunk)
        await response.write_eof()
        return response


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    server = StandIn().start()
    yield server
    server.stop()


@pytest.fixture
def control_plane(stand_in: StandIn) -> StandIn:
    """The stand-in, with nothing received yet and its default answers."""
    stand_in.received.clear()
    stand_in.script = default_answer
    stand_in.hold = None
    return stand_in


@pytest.fixture(scope="module")
def gateway(session_tmp: Path, prefix: str, world: World, stand_in: StandIn) -> Iterator[Process]:
    """A gateway of this module's own, forwarding to the stand-in."""
    proc = start_gateway(
        session_tmp,
        prefix,
        FRONTDOOR_CONTROLPLANE_URL=stand_in.url,
        FRONTDOOR_INTERNAL_TOKEN=TOKEN,
        FRONTDOOR_BATCH_MAX_FILE_BYTES=str(LIMIT),
    )
    yield proc
    stop(proc.proc)


@pytest.fixture
def acme(world: World, gateway: Process) -> Key:
    key = world.key(world.tenant())
    world.publish(gateway)
    return key


def bearer(key: Key) -> dict[str, str]:
    return {"authorization": f"Bearer {key.full}"}


def raw_request(gateway: Process, head: str) -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, no body) exactly as written; the status and the body."""
    address = urlsplit(gateway.url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"Connection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def multipart(boundary: str, content: bytes) -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="input.jsonl"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )


def test_it_forwards_the_caller_it_authenticated_and_nothing_the_client_claims(
    gateway: Process, acme: Key, control_plane: StandIn
) -> None:
    forged = {
        batch_wire.TOKEN_HEADER: "a-guess",
        batch_wire.TENANT_HEADER: "someone-else",
        batch_wire.KEY_HEADER: "somekey1",
        "x-frontdoor-other": "anything",
    }
    reply = httpx.get(
        gateway.url + "/v1/files?purpose=batch&limit=2&after=file-x%20y",
        headers={**bearer(acme), **forged, "x-request-id": "client-rid"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"] == [FILE]
    [received] = control_plane.received
    assert (received.method, received.path) == ("GET", INTERNAL + "/v1/files")
    assert received.query == "purpose=batch&limit=2&after=file-x%20y"
    assert received.headers[batch_wire.TOKEN_HEADER] == TOKEN
    assert received.headers[batch_wire.TENANT_HEADER] == acme.tenant
    assert received.headers[batch_wire.KEY_HEADER] == acme.key_id
    assert received.headers["x-request-id"] == reply.headers["x-request-id"] == "client-rid"
    assert "authorization" not in received.headers
    assert "x-frontdoor-other" not in received.headers


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/files/file-abc123"),
        ("DELETE", "/v1/files/file-abc123"),
        ("GET", "/v1/files/file-abc123/content"),
        ("GET", "/v1/batches"),
        ("POST", "/v1/batches"),
        ("GET", "/v1/batches/batch_abc123"),
        ("POST", "/v1/batches/batch_abc123/cancel"),
    ],
)
def test_it_forwards_every_route_with_its_method(
    gateway: Process, acme: Key, control_plane: StandIn, method: str, path: str
) -> None:
    reply = httpx.request(method, gateway.url + path, headers=bearer(acme), timeout=10)
    assert reply.status_code == 200
    [received] = control_plane.received
    assert (received.method, received.path) == (method, INTERNAL + path)


def test_it_streams_an_upload_through_byte_for_byte(gateway: Process, acme: Key, control_plane: StandIn) -> None:
    body = multipart("frontdoor-boundary", os.urandom(3 * 1024 * 1024))
    content_type = "multipart/form-data; boundary=frontdoor-boundary"
    reply = httpx.post(
        gateway.url + "/v1/files", content=body, headers={**bearer(acme), "content-type": content_type}, timeout=30
    )
    assert reply.status_code == 200
    [received] = control_plane.received
    assert received.body == body
    assert received.headers["content-type"] == content_type
    assert received.headers["content-length"] == str(len(body))


def test_it_refuses_a_chunked_upload_without_a_length(gateway: Process, acme: Key, control_plane: StandIn) -> None:
    # The control plane reads the declared length of a body (WSGI): a chunked one would arrive there empty.
    pieces = [os.urandom(256 * 1024) for _ in range(3)]
    reply = httpx.post(
        gateway.url + "/v1/files",
        content=iter(pieces),
        headers={**bearer(acme), "content-type": "application/octet-stream"},
        timeout=30,
    )
    assert reply.status_code == 411
    assert reply.json()["error"]["code"] == "length_required"
    assert control_plane.received == []


def test_it_relays_a_files_content_chunk_by_chunk(gateway: Process, acme: Key, control_plane: StandIn) -> None:
    content = [os.urandom(64 * 1024) for _ in range(4)]
    disposition = 'attachment; filename="output.jsonl"'
    headers = {"Content-Type": "application/jsonl", "Content-Disposition": disposition, "X-Internal": "no"}
    control_plane.script = lambda method, path: Answer(200, headers, content)
    control_plane.hold = threading.Event()
    url = gateway.url + "/v1/files/file-out1/content"
    with httpx.stream("GET", url, headers=bearer(acme), timeout=15) as reply:
        assert reply.headers["content-type"] == "application/jsonl"
        assert reply.headers["content-disposition"] == disposition
        assert "x-internal" not in reply.headers
        got = b""
        pieces = reply.iter_bytes()
        while len(got) < 64 * 1024:  # what the control plane sent so far arrives before its last chunk
            got += next(pieces)
        control_plane.hold.set()
        got += b"".join(pieces)
    assert got == b"".join(content)


def test_it_stops_relaying_a_download_the_client_left(gateway: Process, acme: Key, control_plane: StandIn) -> None:
    control_plane.script = lambda method, path: Answer(200, {"Content-Type": "application/jsonl"}, [b"z" * 65536] * 3)
    control_plane.hold = threading.Event()
    address = urlsplit(gateway.url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        head = f"GET /v1/files/file-out2/content HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {acme.full}\r\n"
        sock.sendall(head.encode() + b"x-request-id: left-mid-download\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    try:
        for _ in range(40):  # the access log is flushed once a second
            lines = [line for line in gateway.log().splitlines() if '"left-mid-download"' in line]
            if lines:
                break
            time.sleep(0.1)
        # Logged as the client leaving while the control plane still holds its last chunk back: the relay stopped.
        assert lines and json.loads(lines[0])["status"] == 499
    finally:
        control_plane.hold.set()


def test_it_relays_the_control_planes_length_and_status(gateway: Process, acme: Key, control_plane: StandIn) -> None:
    error = json.dumps({"error": {"message": "No such batch", "type": "invalid_request_error", "code": None}})
    headers = {"Content-Type": "application/json", "Content-Length": str(len(error))}
    control_plane.script = lambda method, path: Answer(404, headers, json_chunks(json.loads(error)))
    reply = httpx.get(gateway.url + "/v1/batches/batch_missing", headers=bearer(acme), timeout=10)
    assert reply.status_code == 404
    assert reply.headers["content-length"] == str(len(error))
    assert reply.json()["error"]["message"] == "No such batch"


def test_it_refuses_a_content_length_above_the_limit_before_forwarding(
    gateway: Process, acme: Key, control_plane: StandIn
) -> None:
    status, body = raw_request(
        gateway,
        f"POST /v1/files HTTP/1.1\nHost: gateway\nAuthorization: Bearer {acme.full}\n"
        f"Content-Type: multipart/form-data; boundary=b\nContent-Length: {LIMIT + 1}\n",
    )
    assert status == 413
    assert json.loads(body)["error"]["code"] == "request_too_large"
    assert control_plane.received == []


@pytest.mark.parametrize(
    "target",
    [
        "/v1/files/..",
        "/v1/files/../batches",
        "/v1/files/%2e%2e",
        "/v1/files/file-1%2Fcontent",
        "/v1/files/file-1%2F..%2F..%2Fadmin",
        "/v1/files/file!1",
        "/v1/files/" + "f" * 65,
        "/v1/files/",
        "/v1/files/file-1/other",
        "/v1/batches/batch_1/cancel/now",
        "/v1/filesystem",
    ],
)
def test_it_answers_an_id_that_is_not_plain_as_an_unknown_url(
    gateway: Process, acme: Key, control_plane: StandIn, target: str
) -> None:
    status, body = raw_request(gateway, f"GET {target} HTTP/1.1\nHost: gateway\nAuthorization: Bearer {acme.full}\n")
    assert status == 404
    assert json.loads(body)["error"]["code"] == "unknown_url"
    assert control_plane.received == []


@pytest.mark.parametrize(("method", "path"), [("DELETE", "/v1/batches"), ("POST", "/v1/files/file-1")])
def test_it_refuses_a_method_the_route_does_not_have(
    gateway: Process, acme: Key, control_plane: StandIn, method: str, path: str
) -> None:
    reply = httpx.request(method, gateway.url + path, headers=bearer(acme), timeout=10)
    assert reply.status_code == 405
    assert reply.json()["error"]["code"] == "method_not_allowed"
    assert control_plane.received == []


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer fd_test_nokey123_" + "s" * 40}])
def test_it_refuses_a_caller_without_a_valid_key_before_forwarding(
    gateway: Process, control_plane: StandIn, headers: dict[str, str]
) -> None:
    reply = httpx.get(gateway.url + "/v1/files", headers=headers, timeout=10)
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "invalid_api_key"
    assert control_plane.received == []


def test_it_answers_503_while_the_control_plane_is_unreachable(
    session_tmp: Path, prefix: str, world: World, acme: Key
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    down = start_gateway(session_tmp, prefix, FRONTDOOR_CONTROLPLANE_URL=nobody, FRONTDOOR_INTERNAL_TOKEN=TOKEN)
    try:
        world.publish(down)
        reply = httpx.get(down.url + "/v1/files", headers=bearer(acme), timeout=10)
    finally:
        stop(down.proc)
    assert reply.status_code == 503
    assert reply.json()["error"]["code"] == "controlplane_unavailable"
    assert reply.headers["retry-after"] == "1"


def test_the_openai_client_lists_and_uploads_files_through_the_gateway(
    gateway: Process, acme: Key, control_plane: StandIn
) -> None:
    client = openai.OpenAI(api_key=acme.full, base_url=gateway.url + "/v1", max_retries=0, timeout=10)
    page = client.files.list(purpose="batch")
    assert [f.id for f in page.data] == [FILE["id"]]
    assert page.data[0].filename == "input.jsonl"
    lines = b'{"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
    created = client.files.create(file=("input.jsonl", lines), purpose="batch")
    assert created.id == FILE["id"]
    listed, uploaded = control_plane.received
    assert listed.query == "purpose=batch"
    assert uploaded.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert lines in uploaded.body


def test_it_reads_the_batch_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONTDOOR_CONTROLPLANE_URL", "https://cp.internal:8443/")
    monkeypatch.setenv("FRONTDOOR_INTERNAL_TOKEN", TOKEN)
    monkeypatch.setenv("FRONTDOOR_BATCH_MAX_FILE_BYTES", "1024")
    monkeypatch.setenv("FRONTDOOR_BATCH_REPLAY_TTL_S", "60")
    config = GatewayConfig.from_env()
    assert (config.controlplane_url, config.internal_token) == ("https://cp.internal:8443", TOKEN)
    assert (config.max_file_bytes, config.batch_replay_ttl_s) == (1024, 60.0)
    assert TOKEN not in repr(config)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FRONTDOOR_CONTROLPLANE_URL", "cp.internal:8000"),
        ("FRONTDOOR_CONTROLPLANE_URL", "ftp://cp.internal"),
        ("FRONTDOOR_BATCH_MAX_FILE_BYTES", "0"),
        ("FRONTDOOR_BATCH_REPLAY_TTL_S", "0"),
        ("FRONTDOOR_BATCH_REPLAY_TTL_S", "inf"),
    ],
)
def test_it_refuses_a_batch_setting_it_cannot_use(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfiguredEnv, match=name):
        GatewayConfig.from_env()


def test_it_refuses_to_start_in_production_without_an_internal_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONTDOOR_ENV", "production")
    monkeypatch.setenv("FRONTDOOR_KEY_PEPPER", "p" * 40)
    monkeypatch.delenv("FRONTDOOR_INTERNAL_TOKEN", raising=False)
    with pytest.raises(ImproperlyConfiguredEnv, match="FRONTDOOR_INTERNAL_TOKEN"):
        GatewayConfig.from_env()
