"""What a tenant may put in a deployment: env and args that cannot run code on the agent's host, and endpoints the
address policy allows. Every refusal is a 400 naming the field and the culprit, and leaves nothing written.

Nothing here connects anywhere: names resolve through a table (``deployments.network.resolve_host`` replaced),
and the loopback ports are only checked, never contacted.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from deployments import network
from deployments.models import ModelDeployment, Revision
from tenants.models import Tenant
from tests.support.rows import deployment_row_counts

pytestmark = pytest.mark.django_db

BASE = "/api/v1/tenants/acme/deployments/"
PUBLIC = "93.184.215.14"  # a public address; never contacted
NAMES = {"localhost": ["127.0.0.1"], "api.example.org": [PUBLIC], "sneaky.example.org": [PUBLIC, "10.1.2.3"]}


@pytest.fixture(autouse=True)
def resolver(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """Names resolve from ``NAMES`` only; the platform's listeners are the usual local ones."""

    def resolve(host: str, port: int) -> list[str]:
        if host not in NAMES:
            raise OSError(f"no such host {host}")
        return NAMES[host]

    monkeypatch.setattr(network, "resolve_host", resolve)
    settings.FRONTDOOR_BACKEND = "local"
    settings.FRONTDOOR_LOCAL_AGENT_HOST = "127.0.0.1"
    settings.FRONTDOOR_LOCAL_AGENT_PORT = 8002
    settings.FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS = []


def builtin(**fields: Any) -> dict[str, Any]:
    return {"name": "chat", "runtime": "builtin", "model": "frontdoor/sim-chat", **fields}


def external(*endpoints: str) -> dict[str, Any]:
    return {"name": "ext", "runtime": "external", "model": "gpt-x", "endpoints": list(endpoints)}


def refused_fields(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request", "invalid")
    return dict(error["fields"])


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------- env and args (local backend)


@pytest.mark.parametrize(
    "env",
    [
        {"BROWSER": "sh -c 'id > leak.txt' %s"},
        {"PYTHONWARNINGS": "ignore::antigravity.x"},
        {"PYTHONPATH": "/tmp/evil"},
        {"PYTHONSTARTUP": "/tmp/evil.py"},
        {"LD_PRELOAD": "/tmp/evil.so"},
        {"BASH_ENV": "/tmp/evil.sh"},
        {"NODE_OPTIONS": "--require /tmp/evil.js"},
        {"GIT_SSH_COMMAND": "sh -c id"},
        {"OPENSSL_CONF": "/tmp/evil.cnf"},
        {"HF_TRUST_REMOTE_CODE": "1"},
        {"FRONTDOOR_REPLICA_KEY": "x"},
        {"path": "/tmp"},  # names are compared upper-cased
    ],
)
def test_it_refuses_env_that_changes_how_programs_start_and_writes_nothing(
    api: Callable[..., APIClient], bob: User, env: dict[str, str]
) -> None:
    before = deployment_row_counts()

    response = api(bob).post(BASE, builtin(env=env), format="json")

    fields = refused_fields(response)
    (name,) = env
    assert list(fields) == ["env"] and name in fields["env"][0]
    assert deployment_row_counts() == before


@pytest.mark.parametrize("name", ["PYTHONUNBUFFERED", "PYTHONHASHSEED", "HF_HOME", "OMP_NUM_THREADS", "MY_FLAG"])
def test_it_accepts_harmless_env(api: Callable[..., APIClient], bob: User, name: str) -> None:
    response = api(bob).post(BASE, builtin(env={name: "1"}), format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["env"] == {name: "1"}


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--port", "9"], "--port"),
        (["--port=9"], "--port"),
        (["--po=9"], "--port"),  # an argparse abbreviation
        (["--host", "0.0.0.0"], "--host"),
        (["--model-name", "other"], "--model-name"),
        (["--trust-remote-code"], "--trust-remote-code"),
        (["--trust_remote_code"], "--trust-remote-code"),
        (["--worker-extension-cls", "evil.Worker"], "--worker-extension-cls"),
        (["/etc/passwd"], "/etc/passwd"),
        (["--chat-template", "../../secrets"], "../../secrets"),
        (["--chat-template=~/x"], "~/x"),
    ],
)
def test_it_refuses_args_that_override_the_platform_load_code_or_name_outside_paths(
    api: Callable[..., APIClient], bob: User, args: list[str], culprit: str
) -> None:
    before = deployment_row_counts()

    response = api(bob).post(BASE, builtin(args=args), format="json")

    fields = refused_fields(response)
    assert list(fields) == ["args"] and culprit in fields["args"][0]
    assert deployment_row_counts() == before


def test_it_accepts_plain_args(api: Callable[..., APIClient], bob: User) -> None:
    response = api(bob).post(BASE, builtin(args=["--stall-ms", "1", "--tokens-per-s=500"]), format="json")

    assert response.status_code == 201, response.json()


def test_on_kubernetes_the_image_is_the_tenants_so_only_reserved_flags_are_refused(
    api: Callable[..., APIClient], bob: User, settings: Any
) -> None:
    settings.FRONTDOOR_BACKEND = "kubernetes"
    vllm = {"runtime": "vllm", "model": "m/x", "gpu_type": "nvidia-h100", "gpu_count": 1}

    accepted = api(bob).post(
        BASE, builtin(**vllm, args=["--trust-remote-code"], env={"PYTHONPATH": "/app"}), format="json"
    )
    reserved = api(bob).post(BASE, builtin(**vllm, name="other", args=["--port", "9"]), format="json")

    assert accepted.status_code == 201, accepted.json()
    assert "--port" in refused_fields(reserved)["args"][0]


@pytest.mark.parametrize(
    ("change", "field", "culprit"),
    [
        ({"env": {"BROWSER": "sh -c id"}}, "env", "BROWSER"),
        ({"env": {"PYTHONWARNINGS": "ignore::antigravity.x"}}, "env", "PYTHONWARNINGS"),
        ({"args": ["--trust-remote-code"]}, "args", "--trust-remote-code"),
        ({"args": ["--port", "9"], "rollout": {"canary_weight": 10}}, "args", "--port"),
    ],
)
def test_a_patch_with_refused_env_or_args_makes_no_revision(
    api: Callable[..., APIClient], bob: User, change: dict[str, Any], field: str, culprit: str
) -> None:
    created = api(bob).post(BASE, builtin(env={"PYTHONUNBUFFERED": "1"}), format="json")
    assert created.status_code == 201, created.json()
    before = deployment_row_counts()

    response = api(bob).patch(f"{BASE}chat/", change, format="json")

    fields = refused_fields(response)
    assert culprit in fields[field][0]
    assert deployment_row_counts() == before
    stored = ModelDeployment.objects.unscoped().get(name="chat")
    assert (stored.env, stored.args, stored.generation) == ({"PYTHONUNBUFFERED": "1"}, [], 1)


# ---------------------------------------------------------------- endpoints


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:6379", "not a public address"),
        ("http://2130706433/", "not a public address"),  # 127.0.0.1, decimal
        ("http://0x7f.0.0.1:5432/", "not a public address"),
        ("http://[::ffff:169.254.169.254]/", "not a public address"),
        ("http://169.254.169.254/latest/meta-data/", "not a public address"),
        ("http://10.0.0.1:8000", "not a public address"),
        ("http://[::1]:8002/", "not a public address"),
        ("http://localhost:8002/", "not a public address"),
        ("http://sneaky.example.org/v1", r"10\.1\.2\.3"),
        ("http://nowhere.example.org/v1", "does not resolve"),
        ("http://[::1", "not a valid URL"),
        ("http://a:99999", "not a valid URL"),
        ("http://a:0/", "outside 1-65535"),
        ("ftp://x", "only http and https"),
        ("http://user:pw@api.example.org/", "credentials"),
        ("not a url", "spaces"),
    ],
)
def test_it_refuses_endpoints_the_address_policy_refuses_and_writes_nothing(
    api: Callable[..., APIClient], bob: User, url: str, why: str
) -> None:
    before = deployment_row_counts()

    response = api(bob).post(BASE, external(url), format="json")

    fields = refused_fields(response)
    assert list(fields) == ["endpoints"]
    assert url in fields["endpoints"][0]
    assert re.search(why, fields["endpoints"][0]), fields
    assert deployment_row_counts() == before


def test_it_accepts_a_public_endpoint_by_name(api: Callable[..., APIClient], bob: User) -> None:
    response = api(bob).post(BASE, external("https://api.example.org/v1"), format="json")

    assert response.status_code == 201, response.json()


@pytest.fixture
def loopback_allowed(settings: Any) -> None:
    settings.FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]


def redis_port() -> int:
    return urlsplit(settings.REDIS_URL).port or 6379


@pytest.mark.usefixtures("loopback_allowed")
def test_an_allowed_network_admits_a_free_loopback_port(api: Callable[..., APIClient], bob: User) -> None:
    url = f"http://127.0.0.1:{free_loopback_port()}/v1"

    response = api(bob).post(BASE, external(url), format="json")

    assert response.status_code == 201, response.json()


@pytest.mark.usefixtures("loopback_allowed")
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{redis}/",
        "http://localhost:{redis}/",
        "http://127.0.0.2:{redis}/",  # another loopback spelling of the same listener
        "http://[::1]:{redis}/",
        "http://2130706433:{redis}/",
        "http://127.0.0.1:5432/",  # Postgres (DATABASE_URL)
        "http://127.0.0.1:8002/",  # the local agent's API
        "http://127.0.0.1:8001/",  # the gateway (FRONTDOOR_GATEWAY_URL)
        "http://127.0.0.1:8000/",  # the web (FRONTDOOR_WEB_ADDRESS)
    ],
)
def test_an_allowed_network_never_admits_the_platforms_own_services(
    api: Callable[..., APIClient], bob: User, url: str
) -> None:
    before = deployment_row_counts()

    response = api(bob).post(BASE, external(url.format(redis=redis_port())), format="json")

    assert "platform's own services" in refused_fields(response)["endpoints"][0]
    assert deployment_row_counts() == before


@pytest.mark.usefixtures("loopback_allowed")
def test_operators_can_name_more_platform_addresses(api: Callable[..., APIClient], bob: User, settings: Any) -> None:
    port = free_loopback_port()
    settings.FRONTDOOR_PLATFORM_ADDRESSES = [f"127.0.0.1:{port}"]

    response = api(bob).post(BASE, external(f"http://127.0.0.1:{port}/"), format="json")

    assert "platform's own services" in refused_fields(response)["endpoints"][0]


@pytest.mark.usefixtures("loopback_allowed")
def test_an_allowed_network_never_admits_another_deployments_replica(
    api: Callable[..., APIClient], bob: User, charlie: User, globex: Tenant
) -> None:
    port = free_loopback_port()
    theirs = api(charlie).post("/api/v1/tenants/globex/deployments/", builtin(name="theirs"), format="json")
    assert theirs.status_code == 201, theirs.json()
    Revision.objects.unscoped().filter(deployment_id=theirs.json()["id"]).update(endpoints=[f"http://127.0.0.1:{port}"])
    before = deployment_row_counts()

    response = api(bob).post(BASE, external(f"http://localhost:{port}/v1"), format="json")

    assert "replica of another deployment" in refused_fields(response)["endpoints"][0]
    assert deployment_row_counts() == before


@pytest.mark.usefixtures("loopback_allowed")
def test_a_patch_to_a_refused_endpoint_changes_nothing(api: Callable[..., APIClient], bob: User) -> None:
    good = f"http://127.0.0.1:{free_loopback_port()}/v1"
    assert api(bob).post(BASE, external(good), format="json").status_code == 201
    before = deployment_row_counts()

    response = api(bob).patch(f"{BASE}ext/", {"endpoints": [good, f"http://127.0.0.1:{redis_port()}"]}, format="json")

    assert "platform's own services" in refused_fields(response)["endpoints"][0]
    stored = ModelDeployment.objects.unscoped().get(name="ext")
    assert (stored.endpoints, stored.generation) == ([good], 1)
    assert deployment_row_counts() == before


def test_a_scale_does_not_resolve_unchanged_endpoints_again(
    api: Callable[..., APIClient], bob: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert api(bob).post(BASE, external("https://api.example.org/v1"), format="json").status_code == 201

    def unreachable_dns(host: str, port: int) -> list[str]:
        raise OSError("the resolver is down")

    monkeypatch.setattr(network, "resolve_host", unreachable_dns)
    response = api(bob).post(f"{BASE}ext/scale/", {"max_replicas": 2}, format="json")

    assert response.status_code == 200, response.json()


def test_the_console_shows_a_refused_endpoint_on_its_field(bob: User, acme: Tenant) -> None:
    console = Client()
    console.force_login(bob)
    form = {
        "name": "ext",
        "runtime": "external",
        "model": "gpt-x",
        "image": "",
        "endpoints": "http://127.0.0.1:6379\n",
        "gpu_type": "",
        "gpu_count": "0",
        "min_replicas": "1",
        "max_replicas": "1",
        "target_concurrency": "8",
        "timeout_s": "120",
    }

    response = console.post("/t/acme/deployments/new/", form)

    assert response.status_code == 422
    assert "not a public address" in response.context["form"].errors["endpoints"][0]
    assert not ModelDeployment.objects.unscoped().exists()
