"""``manage.py seed_demo``: the demo's chat deployment serves images, a v2 ranker sits beside it, and a second run
(or a run over a demo seeded before these existed) converges without new revisions."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command

from deployments.models import ModelDeployment, Revision

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_prefix(redis_prefix: str) -> str:
    return redis_prefix


def seed() -> dict[str, Any]:
    out = io.StringIO()
    call_command("seed_demo", "--json", stdout=out)
    return dict(json.loads(out.getvalue().strip().splitlines()[-1]))


def demo(name: str) -> ModelDeployment:
    return ModelDeployment.objects.unscoped().get(tenant__slug="demo", name=name)


def test_it_seeds_an_image_serving_chat_and_a_v2_ranker_and_names_them() -> None:
    result = seed()

    assert (result["model"], result["image_model"], result["v2_model"]) == ("demo-chat", "demo-chat", "ranker")
    chat, ranker = demo("demo-chat"), demo("ranker")
    assert (chat.protocol, chat.image_generation) == ("openai", True)
    assert (ranker.runtime, ranker.protocol, ranker.model) == ("builtin", "v2", "frontdoor/ranker")
    assert (ranker.min_replicas, ranker.max_replicas, ranker.image_generation) == (1, 1, False)
    assert Revision.objects.unscoped().get(deployment=ranker).spec["protocol"] == "v2"


def test_a_second_run_changes_no_deployment() -> None:
    seed()
    before = list(ModelDeployment.objects.unscoped().values_list("name", "generation").order_by("name"))

    seed()

    assert list(ModelDeployment.objects.unscoped().values_list("name", "generation").order_by("name")) == before
    assert Revision.objects.unscoped().count() == 2


def test_a_demo_chat_seeded_before_images_is_given_them_without_a_new_revision() -> None:
    seed()
    ModelDeployment.objects.unscoped().filter(name="demo-chat").update(image_generation=False)

    result = seed()

    assert result["image_model"] == "demo-chat" and demo("demo-chat").image_generation is True
    assert Revision.objects.unscoped().filter(deployment=demo("demo-chat")).count() == 1
