"""Two tenants' batches on one batch worker: both progress, the small one does not wait for the large one's file.

Runs take turns on the batch queue, each for a slice of ``FRONTDOOR_BATCH_TASK_SECONDS`` shared among its tenant's
batches, so the worker's time goes round the tenants (``batches.tasks.slice_seconds``).
"""

from __future__ import annotations

import io

import openai
import pytest

from batches.models import Batch
from deployments import services as deployment_services
from tenants.models import Tenant
from tests.batches.conftest import BatchPlatform
from tests.support.batches import chat_lines, jsonl
from tests.support.platform import DEPLOYMENT, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]


def _submit(client: openai.OpenAI, model: str, count: int) -> str:
    content = jsonl(chat_lines(count, model))
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h").id


@pytest.mark.batch_env({"FRONTDOOR_BATCH_TASK_SECONDS": "1"})
def test_a_small_batch_finishes_while_a_large_one_of_another_tenant_runs(
    batch_platform: BatchPlatform, globex: Tenant
) -> None:
    bp = batch_platform
    deployment_services.create_deployment(
        globex,
        {"name": "scorer", "runtime": "builtin", "model": "frontdoor/sim-chat", "min_replicas": 1, "max_replicas": 1},
        actor=None,
    )

    def globex_serves() -> bool:
        try:
            return bool(bp.other.chat.completions.create(model="scorer", messages=[{"role": "user", "content": "hi"}]))
        except openai.APIError:
            return False

    wait_for(globex_serves, 60, "globex's deployment to serve", bp.logs)

    large = _submit(bp.client, DEPLOYMENT, 150)
    wait_for(lambda: Batch.unscoped_objects.get(public_id=large).completed >= 5, 60, "the large batch to run", bp.logs)
    small = _submit(bp.other, "scorer", 10)

    def small_done() -> Batch | None:
        found = Batch.unscoped_objects.get(public_id=small)
        return found if found.status == "completed" else None

    done = wait_for(small_done, 90, "the small batch to complete", bp.logs)
    assert done.completed == 10
    meanwhile = Batch.unscoped_objects.get(public_id=large)
    assert meanwhile.status == "in_progress", "the small batch waited for the large one's whole file"
    assert 5 <= meanwhile.completed < 150
    # And the large one goes on to complete.
    wait_for(lambda: Batch.unscoped_objects.get(public_id=large).status == "completed", 120, "the large batch", bp.logs)
