"""On SIGTERM the model server stops accepting connections, finishes the requests it holds (streams included) and
exits; past ``--graceful-shutdown-s`` it gives up on them and exits anyway. (uvicorn re-raises the signal once it has
shut down, so the exit status is the signal's either way.)"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from collections.abc import Callable

from tests.support.modelserver import RunningServer

STREAM = {
    "model": "frontdoor/sim-chat",
    "messages": [{"role": "user", "content": "tell me a story"}],
    "max_tokens": 12,
    "stream": True,
}


def stream_in_background(server: RunningServer) -> tuple[threading.Thread, list[str], threading.Event]:
    """A stream read line by line in a thread; ``started`` is set once its first event arrived."""
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        try:
            conn.request(
                "POST", "/v1/chat/completions", body=json.dumps(STREAM), headers={"content-type": "application/json"}
            )
            response = conn.getresponse()
            while raw := response.readline():
                line = raw.decode().strip()
                if line.startswith("data: "):
                    lines.append(line)
                    started.set()
        except (OSError, http.client.HTTPException) as exc:
            lines.append(f"error: {type(exc).__name__}")
        finally:
            started.set()
            conn.close()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, lines, started


def test_a_stream_in_flight_at_sigterm_is_finished_before_the_server_exits(
    make_modelserver: Callable[..., RunningServer],
) -> None:
    server = make_modelserver("--tokens-per-s", "4")  # 12 tokens: about 3 s of stream
    thread, lines, started = stream_in_background(server)
    assert started.wait(10)

    server.process.send_signal(signal.SIGTERM)

    deadline = time.monotonic() + 10
    while accepts(server):  # the listener closes at once: a new request must go elsewhere
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        time.sleep(0.02)
    assert thread.is_alive(), "the stream ended before the listener closed"
    thread.join(30)
    assert lines[-1] == "data: [DONE]", lines[-3:]
    server.process.wait(30)


def accepts(server: RunningServer) -> bool:
    try:
        socket.create_connection((server.host, server.port), timeout=1).close()
    except OSError:
        return False
    return True


def test_past_its_graceful_shutdown_bound_the_server_exits_anyway(
    make_modelserver: Callable[..., RunningServer],
) -> None:
    server = make_modelserver("--tokens-per-s", "0.5", "--graceful-shutdown-s", "1")  # a 24 s stream
    thread, lines, started = stream_in_background(server)
    assert started.wait(10)

    server.process.send_signal(signal.SIGTERM)

    deadline = time.monotonic() + 20
    while server.process.poll() is None:
        assert time.monotonic() < deadline, "the server did not give up on its stream"
        time.sleep(0.05)
    thread.join(10)
    assert "data: [DONE]" not in lines
