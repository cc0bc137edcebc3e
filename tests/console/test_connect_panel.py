"""The Connect panel (templates/includes/connect.html) as the template renders it: the gateway from the context
processor, snippets in the protocol asked with the model and key filled in, a copy button each, keyboard tabs, and a
playground whose key cannot reach the console.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.template.loader import render_to_string
from django.test import RequestFactory

from controlplane.context_processors import GatewayAddress, gateway

KEY = "fd_live_abcd1234_" + "S" * 40
SNIPPETS = ("curl", "python", "js")


@pytest.fixture(autouse=True)
def gateway_url(settings: Any) -> None:
    settings.FRONTDOOR_GATEWAY_URL = "http://127.0.0.1:8001/"


def render(**context: Any) -> str:
    return render_to_string("includes/connect.html", context, request=RequestFactory().get("/"))


def snippet(page: str, name: str) -> str:
    found = re.search(rf'<pre class="code" id="connect-{name}-code"><code>(.*?)</code></pre>', page, re.S)
    assert found is not None, f"no {name} snippet"
    return html.unescape(found.group(1))


def test_the_context_processor_gives_the_gateway_as_the_snippets_write_it(settings: Any) -> None:
    assert gateway(RequestFactory().get("/")) == {
        "gateway": GatewayAddress("http://127.0.0.1:8001", "127.0.0.1:8001", False)
    }

    settings.FRONTDOOR_GATEWAY_URL = "https://gateway.example.test"
    assert gateway(RequestFactory().get("/"))["gateway"] == GatewayAddress(
        "https://gateway.example.test", "gateway.example.test", True
    )


def test_an_openai_panel_has_the_base_url_and_curl_python_and_javascript_with_the_model() -> None:
    page = render(model="chat", protocol="openai", api_key="")

    assert '<code id="connect-base">http://127.0.0.1:8001/v1</code>' in page
    curl = snippet(page, "curl")
    assert curl.startswith("curl http://127.0.0.1:8001/v1/chat/completions \\\n")
    assert '-H "Authorization: Bearer $FRONTDOOR_API_KEY"' in curl
    assert """-d '{"model": "chat", "messages": [{"role": "user", "content": "Hello!"}]}'""" in curl
    python = snippet(page, "python")
    assert 'OpenAI(base_url="http://127.0.0.1:8001/v1", api_key=os.environ["FRONTDOOR_API_KEY"])' in python
    assert 'model="chat",' in python
    compile(python, "python-snippet", "exec")  # it is Python
    js = snippet(page, "js")
    assert 'fetch("http://127.0.0.1:8001/v1/chat/completions"' in js and 'model: "chat",' in js
    assert "`Bearer ${process.env.FRONTDOOR_API_KEY}`" in js
    assert "/v2/" not in page and "tritonclient" not in page


def test_a_v2_panel_has_curl_tritonclient_and_javascript_with_the_body_given() -> None:
    body = '{"inputs": [{"name": "user_id", "shape": [2], "datatype": "INT64", "data": [1, 2]}]}'
    page = render(model="ranker", protocol="v2", api_key="", v2_body=body)

    assert '<code id="connect-base">http://127.0.0.1:8001</code>' in page
    curl = snippet(page, "curl")
    assert curl.startswith("curl http://127.0.0.1:8001/v2/models/ranker/infer \\\n")
    assert curl.endswith(f"-d '{body}'")
    python = snippet(page, "python")
    assert 'httpclient.InferenceServerClient("127.0.0.1:8001")' in python
    assert 'client.infer("ranker", [users, items], headers=headers)' in python
    assert 'InferInput("user_id", [2], "INT64")' in python
    compile(python, "tritonclient-snippet", "exec")
    js = snippet(page, "js")
    assert 'fetch("http://127.0.0.1:8001/v2/models/ranker/infer"' in js and f"JSON.stringify({body})" in js
    assert "/v1/" not in page and "from openai" not in page


def test_a_v2_model_of_its_own_gets_a_generic_input_and_a_pointer_to_its_metadata() -> None:
    page = render(model="recsys", protocol="v2", api_key="", v2_generic=True)

    assert '"name": "INPUT0", "shape": [1], "datatype": "FP32"' in snippet(page, "curl")  # the default body
    python = snippet(page, "python")
    assert 'InferInput("INPUT0", [1], "FP32")' in python and "user_id" not in python
    compile(python, "tritonclient-snippet", "exec")
    assert "<code>GET /v2/models/recsys</code> lists their names" in page


def test_tritonclient_is_told_to_use_tls_for_an_https_gateway(settings: Any) -> None:
    settings.FRONTDOOR_GATEWAY_URL = "https://gateway.example.test:8443"

    python = snippet(render(model="ranker", protocol="v2", api_key=""), "python")

    assert 'InferenceServerClient("gateway.example.test:8443", ssl=True)' in python


def test_a_key_given_is_filled_into_every_snippet_and_the_environment_is_not_mentioned() -> None:
    for protocol in ("openai", "v2"):
        page = render(model="chat", protocol=protocol, api_key=KEY)

        for name in SNIPPETS:
            assert f"Bearer {KEY}" in snippet(page, name) or f'api_key="{KEY}"' in snippet(page, name), name
        assert "FRONTDOOR_API_KEY" not in page
        compile(snippet(page, "python"), "python-snippet", "exec")


def test_without_a_model_the_snippets_name_a_placeholder_and_say_what_to_put_there() -> None:
    page = render(model="", protocol="openai", api_key=KEY)

    assert '"model": "your-deployment"' in snippet(page, "curl")
    assert "Replace <code>your-deployment</code> with the name of one of this tenant's deployments." in page
    assert '<input type="text" id="connect-model" value=""' in page  # the playground asks for it


def test_an_image_model_gets_an_images_tab_with_its_call() -> None:
    page = render(model="painter", protocol="openai", api_key="", images=True)

    assert 'role="tab" id="connect-tab-images" aria-controls="connect-images"' in page
    images = snippet(page, "images")
    assert images.startswith("curl http://127.0.0.1:8001/v1/images/generations")
    assert (
        '"model": "painter", "prompt": "a lighthouse at dusk", "size": "256x256", "response_format": "b64_json"'
        in images
    )
    assert 'value="image" data-playground-kind' in page
    assert "connect-images" not in render(model="chat", protocol="openai", api_key="")


@pytest.mark.parametrize("protocol", ["openai", "v2"])
def test_each_snippet_has_a_copy_button_and_a_tab_of_its_own(protocol: str) -> None:
    page = render(model="chat", protocol=protocol, api_key="")

    for target in ("connect-base", *(f"connect-{name}-code" for name in SNIPPETS)):
        assert page.count(f'data-copy-target="{target}"') == 1, target
    tabs = re.findall(r'<button type="button" role="tab" id="connect-tab-(\w+)" aria-controls="connect-(\w+)"', page)
    assert [tab for tab, _ in tabs] == list(SNIPPETS) == [panel for _, panel in tabs]
    # One tab in the tab order (the selected one), each panel labelled by its tab.
    assert page.count('aria-selected="true"') == 1 and page.count('tabindex="-1"') == len(SNIPPETS) - 1
    for name in SNIPPETS:
        assert f'role="tabpanel" id="connect-{name}" aria-labelledby="connect-tab-{name}" tabindex="0"' in page
    # Without script the tab list stays hidden and every snippet shows under its own heading.
    assert '<div class="connect-tabs" role="tablist" aria-label="Snippets" hidden>' in page
    assert "console/connect.js" in page and "console/connect.css" in page


@pytest.mark.parametrize("protocol", ["openai", "v2"])
def test_the_playground_key_input_can_never_be_submitted_to_the_console(protocol: str) -> None:
    page = render(model="chat", protocol=protocol, api_key=KEY)
    playground = page[page.index("data-playground hidden") :]
    form = playground[: playground.index("</form>")]

    # Hidden until the script takes over; a submission goes nowhere (method dialog) and carries no field (no names).
    assert '<form method="dialog"' in form and "action=" not in form
    assert re.search(r"<input[^>]*\bname=", form.replace('name="connect-kind"', "")) is None
    assert re.search(r"<textarea[^>]*\bname=", form) is None
    key_input = re.search(r'<input type="password" id="connect-key"[^>]*>', form)
    assert key_input is not None
    assert 'autocomplete="off"' in key_input.group(0) and "value=" not in key_input.group(0)
    assert KEY not in form  # a key shown in the snippets is not put into the playground


def test_the_playground_constrains_what_it_sends() -> None:
    chat = render(model="chat", protocol="openai", api_key="")
    assert 'id="connect-model" value="chat"' in chat and 'maxlength="63"' in chat
    assert 'pattern="[a-z]([\\-a-z0-9]*[a-z0-9])?"' in chat
    assert '<textarea id="connect-prompt" rows="2" maxlength="4000" required' in chat
    v2 = render(model="ranker", protocol="v2", api_key="", v2_body='{"inputs": []}')
    assert 'maxlength="65536"' in v2 and "{&quot;inputs&quot;: []}</textarea>" in v2
    assert 'data-gateway="http://127.0.0.1:8001" data-protocol="v2"' in v2


def test_what_the_panel_is_given_is_escaped() -> None:
    page = render(model='x"><script>alert(1)</script>', protocol="openai", api_key="")

    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
