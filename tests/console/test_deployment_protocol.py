"""The console's deployment form takes a protocol and image generation, and the detail page shows the protocol
and an example call of that protocol through the gateway."""

from __future__ import annotations

import html
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client

from deployments.models import ModelDeployment
from tenants.models import Tenant
from tests.support.rows import deployment_row_counts

NEW = {
    "name": "ranker",
    "runtime": "builtin",
    "model": "frontdoor/ranker",
    "gpu_count": "0",
    "min_replicas": "1",
    "max_replicas": "1",
    "target_concurrency": "8",
    "timeout_s": "120",
}


@pytest.fixture(autouse=True)
def gateway_url(settings: pytest.FixtureRequest) -> str:
    settings.FRONTDOOR_GATEWAY_URL = "http://127.0.0.1:8001/"  # type: ignore[attr-defined]
    return "http://127.0.0.1:8001"


def page_text(client: Client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def test_the_form_offers_a_protocol_and_image_generation_with_help(
    console: Callable[[User | None], Client], bob: User, acme: Tenant
) -> None:
    form = page_text(console(bob), "/t/acme/deployments/new/")

    assert '<select name="protocol"' in form
    assert '<option value="" selected>the runtime\'s default</option>' in form
    assert '<option value="openai">OpenAI</option>' in form and '<option value="v2">' in form
    assert '<input type="checkbox" name="image_generation"' in form
    assert "/v2/models/{name}/infer" in form and "runtime builtin or external only" in form


def test_it_creates_a_v2_deployment_and_shows_a_v2_infer_example_instead_of_chat(
    console: Callable[[User | None], Client], bob: User, acme: Tenant
) -> None:
    client = console(bob)
    response = client.post("/t/acme/deployments/new/", NEW | {"protocol": "v2"})
    assert response.status_code == 302

    assert ModelDeployment.objects.for_tenant(acme).get(name="ranker").protocol == "v2"
    detail = page_text(client, "/t/acme/deployments/ranker/")
    assert "Open Inference Protocol (v2)" in detail
    assert "curl http://127.0.0.1:8001/v2/models/ranker/infer" in detail
    assert '"name": "user_id", "shape": [2], "datatype": "INT64", "data": [1, 2]' in detail
    assert "/v1/chat/completions" not in detail


def test_an_openai_deployment_shows_the_chat_example_and_the_images_one_when_it_serves_images(
    console: Callable[[User | None], Client], bob: User, acme: Tenant
) -> None:
    client = console(bob)
    asked = NEW | {"name": "painter", "model": "frontdoor/sim-chat", "image_generation": "on"}
    assert client.post("/t/acme/deployments/new/", asked).status_code == 302

    painter = ModelDeployment.objects.for_tenant(acme).get(name="painter")
    assert (painter.protocol, painter.image_generation) == ("openai", True)
    detail = page_text(client, "/t/acme/deployments/painter/")
    assert "curl http://127.0.0.1:8001/v1/chat/completions" in detail
    assert '"model": "painter", "messages"' in detail
    assert "curl http://127.0.0.1:8001/v1/images/generations" in detail
    assert '"size": "256x256", "response_format": "b64_json"' in detail
    assert "/v2/models/" not in detail


def test_a_deployment_without_images_shows_no_images_example(
    console: Callable[[User | None], Client], bob: User, acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    make_deployment(acme, "chat")

    detail = page_text(console(bob), "/t/acme/deployments/chat/")

    assert "/v1/chat/completions" in detail and "/v1/images/generations" not in detail


def test_a_triton_deployment_gets_v2_and_its_example_says_the_inputs_are_the_models(
    console: Callable[[User | None], Client], bob: User, acme: Tenant
) -> None:
    client = console(bob)
    assert client.post("/t/acme/deployments/new/", NEW | {"name": "recsys", "runtime": "triton"}).status_code == 302

    detail = page_text(client, "/t/acme/deployments/recsys/")
    assert "/v2/models/recsys/infer" in detail and "GET /v2/models/recsys" in detail


@pytest.mark.parametrize(
    ("asked", "field", "says"),
    [
        ({"protocol": "grpc"}, "protocol", "Select a valid choice"),
        ({"protocol": "v2", "image_generation": "on"}, "image_generation", "OpenAI route"),
        ({"runtime": "vllm", "protocol": "v2"}, "protocol", "speaks openai"),
        ({"runtime": "triton", "protocol": "openai"}, "protocol", "speaks v2"),
    ],
)
def test_it_shows_a_refused_protocol_or_image_generation_on_its_field_and_creates_nothing(
    console: Callable[[User | None], Client], bob: User, acme: Tenant, asked: dict[str, str], field: str, says: str
) -> None:
    before = deployment_row_counts()

    response = console(bob).post("/t/acme/deployments/new/", NEW | asked)

    assert response.status_code == 422
    assert says in " ".join(response.context["form"].errors[field])
    assert deployment_row_counts() == before
