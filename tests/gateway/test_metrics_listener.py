"""Prometheus text is served on a listener of its own, never on the inference port; optionally behind a token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.support.gateway import PEPPER, REDIS_URL, ROOT, Process, World, start_gateway, stop, wait_http

TOKEN = "metrics-scrape-token"


def test_it_answers_404_for_metrics_on_the_inference_port(gateway: Process) -> None:
    response = httpx.get(gateway.url + "/metrics", timeout=5)
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "Unknown request URL: GET /metrics.",
            "type": "invalid_request_error",
            "param": None,
            "code": "unknown_url",
        }
    }
    assert "frontdoor_gateway" not in response.text


def test_it_serves_prometheus_text_on_the_metrics_listener(gateway: Process, world: World) -> None:
    tenant = world.tenant()
    key = world.key(tenant, scopes=("read",))
    world.publish(gateway)
    assert httpx.get(gateway.url + "/v1/models", headers={"authorization": f"Bearer {key.full}"}).status_code == 200

    response = httpx.get(gateway.metrics_url + "/metrics", timeout=5)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE frontdoor_gateway_requests_total counter" in response.text
    assert f'frontdoor_gateway_requests_total{{tenant="{tenant}",deployment="",status="200"}} 1' in response.text
    assert httpx.get(gateway.metrics_url + "/v1/models", timeout=5).status_code == 404  # nothing else lives there


@pytest.fixture(scope="module")
def guarded_gateway(session_tmp: Path, prefix: str, world: World) -> Iterator[Process]:
    proc = start_gateway(session_tmp, prefix, FRONTDOOR_GATEWAY_METRICS_TOKEN=TOKEN)
    yield proc
    stop(proc.proc)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"],
)
def test_it_refuses_a_scrape_without_the_token(guarded_gateway: Process, authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    response = httpx.get(guarded_gateway.metrics_url + "/metrics", headers=headers, timeout=5)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "frontdoor_gateway" not in response.text


def test_it_serves_a_scrape_with_the_token(guarded_gateway: Process) -> None:
    response = httpx.get(
        guarded_gateway.metrics_url + "/metrics", headers={"authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    assert response.status_code == 200
    assert "# TYPE frontdoor_gateway_requests_total counter" in response.text


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that are free now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = int(s.getsockname()[1])
        if first + count > 65536:
            continue
        try:
            held = []
            for port in range(first, first + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports")


def test_it_gives_each_worker_its_own_metrics_port(tmp_path: Path, prefix: str, world: World) -> None:
    ports = consecutive_free_ports(3)  # the inference port, then one metrics port per worker
    inference, metrics = ports, ports + 1
    environment = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "FRONTDOOR_REDIS_PREFIX": prefix,
        "FRONTDOOR_KEY_PEPPER": PEPPER,
        "FRONTDOOR_GATEWAY_METRICS_PORT": str(metrics),
    }
    log_path = tmp_path / "gateway-workers.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(inference), "--workers", "2"],
            cwd=ROOT,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        for port in (metrics, metrics + 1):
            wait_http(f"http://127.0.0.1:{port}/metrics", proc)  # both workers started, each on its own port
        assert httpx.get(f"http://127.0.0.1:{inference}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{inference}/metrics", timeout=5).status_code == 404
    except Exception:
        print(log_path.read_text(errors="replace"))
        raise
    finally:
        stop(proc)


def test_it_refuses_to_start_when_its_metrics_port_is_taken(tmp_path: Path, prefix: str, world: World) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        try:
            started = start_gateway(tmp_path, prefix, FRONTDOOR_GATEWAY_METRICS_PORT=str(port))
        except RuntimeError as exc:
            assert "exited" in str(exc)
        else:
            stop(started.proc)  # it must not have started: stop it before failing, so that no process is left
            pytest.fail("the gateway started without its metrics port")
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("gateway-*.log"))
    assert f"no free metrics port on 127.0.0.1 among {port}..{port}" in logs
