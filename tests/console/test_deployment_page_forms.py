"""The deployment forms speak to people ("Min replicas can't be more than max replicas", not the REST API's
"min_replicas (3) exceeds max_replicas (2)"), and the create form marks the fields of each runtime: every field is
rendered (the page works without its script), and a field the script left out is not required."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client

from deployments import services
from deployments.console.forms import RUNTIME_FIELDS, human_message
from deployments.models import ModelDeployment, Revision
from tenants.models import Tenant
from tests.support.rows import deployment_row_counts

CREATE = "/t/acme/deployments/new/"
NEW = {
    "name": "chat",
    "runtime": "builtin",
    "model": "frontdoor/sim-chat",
    "gpu_count": "0",
    "min_replicas": "1",
    "max_replicas": "2",
    "target_concurrency": "8",
    "timeout_s": "120",
}
# What the create form's script sends for runtime 'external': the inputs of replicas (GPUs, image, sizing, secret
# environment) and the protocol are disabled, so they are absent. The endpoint is only checked and stored: no gateway
# runs in these tests and the console never calls it, so nothing connects to that private address.
EXTERNAL = {
    "name": "hosted",
    "runtime": "external",
    "model": "gpt-x",
    "endpoints": "http://10.9.0.5:8000/v1",
    "min_replicas": "1",
    "max_replicas": "1",
    "target_concurrency": "8",
    "timeout_s": "120",
}


@pytest.fixture
def allowed_upstream(settings: pytest.FixtureRequest) -> None:
    settings.FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS = ["10.9.0.0/16"]  # type: ignore[attr-defined]


def field_errors(client: Client, data: dict[str, str]) -> dict[str, list[str]]:
    response = client.post(CREATE, data)
    assert response.status_code == 422
    return dict(response.context["form"].errors)


@pytest.mark.parametrize(
    ("asked", "field", "says"),
    [
        ({"min_replicas": "3", "max_replicas": "2"}, "min_replicas", "Min replicas can't be more than max replicas."),
        ({"gpu_count": "1"}, "gpu_type", "Choose a GPU type: the replicas ask for GPUs."),
        (
            {"endpoints": "https://api.example.com/v1"},
            "endpoints",
            "Endpoints are for runtime external only; runtime builtin runs its own replicas: leave this empty.",
        ),
        (
            {"memory_gib": "1", "shm_gib": "2"},
            "shm_gib",
            "Shared memory (2 GiB) must be less than memory (1 GiB): it counts against the replica's memory.",
        ),
        (
            {"runtime": "vllm", "image_generation": "on"},
            "image_generation",
            "Runtime vllm serves no images; only builtin and external do.",
        ),
        (
            {"runtime": "triton", "protocol": "openai"},
            "protocol",
            "Runtime triton speaks v2 only: choose it, or leave this blank.",
        ),
    ],
)
def test_the_create_form_says_what_is_wrong_in_words(
    console: Callable[[User | None], Client], bob: User, acme: Tenant, asked: dict[str, str], field: str, says: str
) -> None:
    before = deployment_row_counts()

    assert field_errors(console(bob), NEW | asked)[field] == [says]
    assert deployment_row_counts() == before


def test_a_no_script_submission_of_a_field_that_does_not_apply_is_still_refused(
    console: Callable[[User | None], Client], bob: User, acme: Tenant, allowed_upstream: None
) -> None:
    errors = field_errors(console(bob), EXTERNAL | {"gpu_type": "nvidia-h100", "gpu_count": "1", "cpu_cores": "2"})

    assert errors["gpu_count"] == ["Runtime external runs no replicas here, so it takes no GPUs: set 0."]
    assert errors["cpu_cores"] == ["Runtime external runs no replicas here, so it takes no sizing: leave this blank."]


def test_the_scale_form_says_it_in_words_too(
    console: Callable[[User | None], Client], bob: User, acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    make_deployment(acme, "chat")

    response = console(bob).post("/t/acme/deployments/chat/scale/", {"min_replicas": "3", "max_replicas": "1"})

    assert response.status_code == 422
    assert response.context["scale_form"].errors["min_replicas"] == ["Min replicas can't be more than max replicas."]


def test_a_message_the_console_does_not_know_is_shown_as_the_service_wrote_it() -> None:
    quota = "quota exceeded: replicas: asked 99, 3 of 4 left"
    assert human_message(quota) == quota
    assert human_message("min_replicas (3) exceeds max_replicas (2)") == "Min replicas can't be more than max replicas."


def test_the_create_form_renders_every_field_each_marked_with_its_runtimes(
    console: Callable[[User | None], Client], bob: User, acme: Tenant
) -> None:
    page = console(bob).get(CREATE).content.decode()

    assert "data-runtime-form" in page and "console/deployment.js" in page
    marked = dict(re.findall(r'name="(\w+)"[^>]*data-runtimes="([\w ]+)"', page))
    assert marked == {name: " ".join(sorted(runtimes)) for name, runtimes in RUNTIME_FIELDS.items()}
    assert marked["endpoints"] == "external" and marked["upstream_key_secret"] == "external"
    assert marked["gpu_count"] == "builtin tgi triton vllm" and marked["protocol"] == "builtin external"
    for always in ("name", "runtime", "model", "min_replicas", "max_replicas", "target_concurrency", "timeout_s"):
        assert f'name="{always}"' in page and always not in marked


def test_it_creates_an_external_deployment_from_the_fields_the_script_leaves(
    console: Callable[[User | None], Client], bob: User, acme: Tenant, allowed_upstream: None
) -> None:
    response = console(bob).post(CREATE, EXTERNAL)

    assert response.status_code == 302
    hosted = ModelDeployment.objects.for_tenant(acme).get(name="hosted")
    assert (hosted.runtime, hosted.endpoints, hosted.gpu_count, hosted.cpu_cores) == (
        "external",
        ["http://10.9.0.5:8000/v1"],
        0,
        None,
    )


def test_the_new_revision_form_of_an_external_deployment_has_no_replica_inputs_and_ignores_them(
    console: Callable[[User | None], Client], bob: User, acme: Tenant, allowed_upstream: None
) -> None:
    client = console(bob)
    client.post(CREATE, EXTERNAL)

    page = client.get("/t/acme/deployments/hosted/").content.decode()
    made = client.post(
        "/t/acme/deployments/hosted/revision/",
        {"rev-model": "gpt-y", "rev-cpu_cores": "4", "rev-image": "evil:latest", "rev-canary_weight": "10"},
    )

    assert 'name="rev-model"' in page and 'name="rev-cpu_cores"' not in page and 'name="rev-image"' not in page
    assert made.status_code == 302
    newest = Revision.objects.for_tenant(acme).filter(deployment__name="hosted").order_by("-number").first()
    assert newest is not None and newest.spec["model"] == "gpt-y" and "cpu_cores" not in newest.spec
    assert "image" not in newest.spec or newest.spec["image"] == ""


def test_the_new_revision_form_of_a_replica_runtime_keeps_its_sizing(
    console: Callable[[User | None], Client], bob: User, acme: Tenant
) -> None:
    services.create_deployment(acme, {"name": "chat", "model": "frontdoor/sim-chat"}, actor=None)

    page = console(bob).get("/t/acme/deployments/chat/").content.decode()

    assert 'name="rev-cpu_cores"' in page and 'name="rev-image"' in page
