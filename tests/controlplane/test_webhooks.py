"""The SLO webhook sender refuses anything but public http(s) targets, and never follows redirects.

The default policy (``deployments.network``) reads the replicas of every deployment from Postgres, hence the database.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controlplane.contracts.addresses import AddressPolicy, parse_networks
from controlplane.webhooks import (
    WebhookRefused,
    is_public_address,
    resolve_target,
    send_webhook,
    sign,
)

pytestmark = pytest.mark.django_db
# The receiver below listens on loopback: these tests allow it explicitly, as an operator would a network.
LOOPBACK_ALLOWED = AddressPolicy(allowed_networks=parse_networks(["127.0.0.0/8"]))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.1.2.3:8080/hook",
        "http://[::1]/hook",
        "http://10.0.0.5/hook",
        "http://172.16.3.4/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.10.10/hook",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://[fe80::1]/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://224.0.0.1/hook",
        "http://localhost/hook",
    ],
)
def test_it_refuses_non_public_addresses(url: str) -> None:
    with pytest.raises(WebhookRefused, match="not a public address"):
        resolve_target(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/hook", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://example.com/", "only http and https"),
        ("https://user:pw@example.com/hook", "credentials"),
        ("http:///hook", "no host"),
        ("http://example.com:99999/", "not a valid URL"),
    ],
)
def test_it_refuses_bad_urls(url: str, why: str) -> None:
    with pytest.raises(WebhookRefused, match=why):
        resolve_target(url)


def test_it_refuses_a_name_that_resolves_to_a_private_address() -> None:
    with pytest.raises(WebhookRefused, match=r"10\.1\.2\.3"):
        resolve_target("https://hooks.example.com/x", resolver=lambda host, port: ["10.1.2.3"])


def test_it_refuses_a_name_with_one_public_and_one_private_address() -> None:
    with pytest.raises(WebhookRefused, match=r"127\.0\.0\.1"):
        resolve_target("https://hooks.example.com/x", resolver=lambda host, port: ["93.184.215.14", "127.0.0.1"])


def test_it_pins_the_connection_to_the_checked_public_address() -> None:
    target = resolve_target("https://hooks.example.com/a/b?x=1", resolver=lambda host, port: ["93.184.215.14"])
    assert (target.address, target.host, target.port, target.path) == ("93.184.215.14", "hooks.example.com", 443,
                                                                        "/a/b?x=1")


def test_it_calls_only_global_unicast_public() -> None:
    assert is_public_address(ipaddress.ip_address("8.8.8.8"))
    assert is_public_address(ipaddress.ip_address("2606:4700:4700::1111"))
    assert not is_public_address(ipaddress.ip_address("100.100.100.100"))
    assert not is_public_address(ipaddress.ip_address("fd00:ec2::254"))


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]] = []
    redirect = False

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append((self.path, dict(self.headers), body))
        if type(self).redirect:
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
        else:
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Handler", (_Recorder,), {"received": [], "redirect": False})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://hooks.test:{server.server_address[1]}/slo", handler
    server.shutdown()
    server.server_close()


def _local(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def test_it_posts_signed_json_to_the_resolved_address(receiver: tuple[str, type[_Recorder]]) -> None:
    url, handler = receiver
    result = send_webhook(url, {"type": "slo.breached"}, secret="s3cret", resolver=_local, policy=LOOPBACK_ALLOWED)
    assert result.delivered and result.status == 204
    path, headers, body = handler.received[0]
    assert path == "/slo"
    assert json.loads(body) == {"type": "slo.breached"}
    assert headers["Host"].startswith("hooks.test")
    assert headers["X-Frontdoor-Signature"] == sign(body, "s3cret")


def test_it_does_not_follow_redirects(receiver: tuple[str, type[_Recorder]]) -> None:
    url, handler = receiver
    handler.redirect = True
    result = send_webhook(url, {"type": "slo.breached"}, resolver=_local, policy=LOOPBACK_ALLOWED)
    assert not result.delivered
    assert result.status == 302
    assert len(handler.received) == 1


def test_it_reports_an_unreachable_target_without_raising() -> None:
    result = send_webhook(
        "http://hooks.test:1/x", {"a": 1}, timeout_s=0.5, resolver=_local, policy=LOOPBACK_ALLOWED
    )
    assert not result.delivered and result.status is None
