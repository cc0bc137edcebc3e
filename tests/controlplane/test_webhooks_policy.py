"""SLO webhooks obey the platform's one address policy, as external endpoints do: the operator's allowed networks are
honoured, and even there the platform's own services and the deployments' replicas stay refused.

The only connections made go to a loopback receiver this test starts, inside the network the test allows.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from controlplane.webhooks import WebhookRefused, check_webhook_url, send_webhook
from deployments.models import ModelDeployment, Revision
from tenants.models import Tenant, TenantSettings

pytestmark = pytest.mark.django_db

SETTINGS_URL = "/api/v1/tenants/acme/settings/"


@pytest.fixture(autouse=True)
def platform(settings: Any) -> None:
    settings.FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.FRONTDOOR_LOCAL_AGENT_HOST = "127.0.0.1"
    settings.FRONTDOOR_LOCAL_AGENT_PORT = 8002


class _Receiver(BaseHTTPRequestHandler):
    received: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Handler", (_Receiver,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/slo", handler
    server.shutdown()
    server.server_close()


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_allowed_network_receives_webhooks(receiver: tuple[str, type[_Receiver]]) -> None:
    url, handler = receiver

    result = send_webhook(url, {"type": "slo.breached"})

    assert result.delivered and handler.received == ["/slo"]


def test_without_allowed_networks_loopback_is_refused(settings: Any) -> None:
    settings.FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS = []

    with pytest.raises(WebhookRefused, match="not a public address"):
        check_webhook_url(f"http://127.0.0.1:{free_loopback_port()}/slo")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{redis}/",
        "http://localhost:{redis}/",
        "http://127.0.0.3:{redis}/",
        "http://127.0.0.1:8002/status",  # the local agent's API
        "http://127.0.0.1:5432/",
    ],
)
def test_the_platforms_own_services_are_refused_even_in_an_allowed_network(url: str) -> None:
    redis_port = urlsplit(settings.REDIS_URL).port or 6379

    with pytest.raises(WebhookRefused, match="platform's own services"):
        send_webhook(url.format(redis=redis_port), {"type": "slo.breached"})


def test_a_deployments_replica_is_refused_even_in_an_allowed_network(acme: Tenant) -> None:
    port = free_loopback_port()
    deployment = ModelDeployment.unscoped_objects.create(tenant=acme, name="chat", model="m")
    Revision.unscoped_objects.create(
        deployment=deployment, number=1, spec=deployment.revision_spec(), weight=100,
        endpoints=[f"http://127.0.0.1:{port}"],
    )

    with pytest.raises(WebhookRefused, match="replica of another deployment"):
        check_webhook_url(f"http://127.0.0.1:{port}/hook")


def test_the_settings_api_refuses_a_platform_service_as_a_field_error(
    api: Callable[[User | None], APIClient], adam: User, acme: Tenant
) -> None:
    redis_port = urlsplit(settings.REDIS_URL).port or 6379

    response = api(adam).put(SETTINGS_URL, {"webhook_url": f"http://127.0.0.1:{redis_port}/"}, format="json")

    assert response.status_code == 400, response.json()
    assert "platform's own services" in response.json()["error"]["fields"]["webhook_url"][0]
    assert not TenantSettings.objects.for_tenant(acme).exists()
