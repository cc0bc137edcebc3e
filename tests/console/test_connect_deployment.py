"""Every deployment page has the Connect panel in the deployment's protocol, its model filled in, for every role."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from deployments.models import ModelDeployment
from tenants.models import Tenant


@pytest.fixture(autouse=True)
def gateway_url(settings: Any) -> None:
    settings.FRONTDOOR_GATEWAY_URL = "https://gateway.example.test/"


def detail(client: Client, name: str) -> str:
    response = client.get(f"/t/acme/deployments/{name}/")
    assert response.status_code == 200
    return response.content.decode()


def snippet(page: str, name: str) -> str:
    found = re.search(rf'<pre class="code" id="connect-{name}-code"><code>(.*?)</code></pre>', page, re.S)
    assert found is not None, f"no {name} snippet"
    return html.unescape(found.group(1))


def test_a_viewer_gets_the_panel_with_the_deployments_name_in_every_snippet(
    console: Callable[[User | None], Client], vera: User, acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    make_deployment(acme, "support-bot")

    page = detail(console(vera), "support-bot")

    assert page.count('data-connect data-gateway="https://gateway.example.test" data-protocol="openai"') == 1
    assert '<code id="connect-base">https://gateway.example.test/v1</code>' in page
    assert '"model": "support-bot"' in snippet(page, "curl")
    assert 'model="support-bot"' in snippet(page, "python")
    assert 'model: "support-bot"' in snippet(page, "js")
    assert 'id="connect-model" value="support-bot"' in page  # the playground's model, filled in too
    assert "connect-images" not in page


def test_an_image_deployment_gets_the_images_tab(
    console: Callable[[User | None], Client], bob: User, acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    make_deployment(acme, "painter", image_generation=True)

    page = detail(console(bob), "painter")

    assert "curl https://gateway.example.test/v1/images/generations" in snippet(page, "images")


def test_a_v2_builtin_deployment_gets_the_rankers_inputs_in_curl_tritonclient_and_the_playground(
    console: Callable[[User | None], Client], bob: User, acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    make_deployment(acme, "ranker", protocol="v2")

    page = detail(console(bob), "ranker")

    curl = snippet(page, "curl")
    assert curl.startswith("curl https://gateway.example.test/v2/models/ranker/infer")
    assert '"name": "user_id", "shape": [2], "datatype": "INT64", "data": [1, 2]' in curl
    python = snippet(page, "python")
    assert 'InferenceServerClient("gateway.example.test", ssl=True)' in python
    assert 'client.infer("ranker", [users, items]' in python
    playground_body = re.search(r"<textarea id=\"connect-body\"[^>]*>(.*?)</textarea>", page, re.S)
    assert playground_body is not None and '"item_id"' in html.unescape(playground_body.group(1))
    assert "/v1/chat/completions" not in page


def test_a_triton_deployment_points_at_its_models_metadata(
    console: Callable[[User | None], Client], bob: User, acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    make_deployment(acme, "recsys", runtime="triton", model="nvcr.io/recsys", image="nvcr.io/nvidia/tritonserver:24.05")

    page = detail(console(bob), "recsys")

    assert 'InferInput("INPUT0", [1], "FP32")' in snippet(page, "python")
    assert "<code>GET /v2/models/recsys</code>" in page
