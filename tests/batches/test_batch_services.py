"""The Batch API's rules at the control plane: quotas on open batches and queued lines, bad input refused and
nothing created, the internal routes closed to all but the gateway, cancel and retention."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from batches import services, storage
from batches.models import Batch, BatchFile
from batches.tasks import prune_files
from controlplane.contracts.batch_wire import KEY_HEADER, TENANT_HEADER, TOKEN_HEADER
from controlplane.domain_errors import Conflict, Invalid, QuotaExceeded
from quotas.models import Quota
from tenants.models import ApiKey, Tenant
from tests.support.batches import upload

pytestmark = pytest.mark.django_db


def _upload(tenant: Tenant, count: int, model: str = "chat") -> BatchFile:
    return upload(tenant, count, model)


def _create(tenant: Tenant, source: BatchFile, **overrides: Any) -> Batch:
    fields: dict[str, Any] = {
        "input_file_id": source.public_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": None,
    }
    fields.update(overrides)
    return services.create_batch(tenant, actor=None, request_id="r", **fields)


def test_open_batches_and_queued_lines_are_capped_by_the_quota(acme: Tenant) -> None:
    Quota.objects.for_tenant(acme).update(max_open_batches=2, max_batch_queued_lines=10)
    first = _create(acme, _upload(acme, 6))
    with pytest.raises(QuotaExceeded, match="queued batch lines past its quota of 10"):
        _create(acme, _upload(acme, 5))
    _create(acme, _upload(acme, 4))
    with pytest.raises(QuotaExceeded, match="2 open batches"):
        _create(acme, _upload(acme, 1))
    assert Batch.objects.for_tenant(acme).count() == 2
    # An ended batch frees its place and its lines.
    Batch.unscoped_objects.filter(pk=first.pk).update(status=Batch.Status.COMPLETED)
    _create(acme, _upload(acme, 6))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"endpoint": "/v1/images/generations"}, "endpoint"),
        ({"endpoint": None}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"metadata": ["a"]}, "metadata"),
        ({"metadata": {str(n): "v" for n in range(17)}}, "metadata"),
        ({"metadata": {"k": 5}}, "metadata"),
        ({"metadata": {"k": "x" * 513}}, "metadata"),
        ({"metadata": {"k": "a\x00b"}}, "metadata"),
        ({"input_file_id": 7}, "input_file_id"),
        ({"input_file_id": "file-nope"}, "input_file_id"),
        ({"endpoint": "/v1/embeddings"}, "input_file_id"),  # the lines name chat: refused naming line 1
    ],
)
def test_bad_batch_input_is_a_field_error_and_creates_nothing(acme: Tenant, overrides: dict, field: str) -> None:
    source = _upload(acme, 2)
    with pytest.raises(Invalid) as refused:
        _create(acme, source, **overrides)
    assert field in refused.value.fields
    assert not Batch.unscoped_objects.exists()


def test_a_file_of_another_tenant_is_unknown(acme: Tenant, globex: Tenant) -> None:
    theirs = _upload(globex, 2)
    with pytest.raises(Invalid, match="no file"):
        _create(acme, theirs)
    with pytest.raises(services.NotFound):
        services.get_file(acme, theirs.public_id)


def test_cancel_once_and_not_after_the_end(acme: Tenant) -> None:
    batch = _create(acme, _upload(acme, 2))
    assert services.cancel_batch(acme, batch.public_id, actor=None, request_id="r").status == "cancelling"
    assert services.cancel_batch(acme, batch.public_id, actor=None, request_id="r").status == "cancelling"
    Batch.unscoped_objects.filter(pk=batch.pk).update(status=Batch.Status.CANCELLED)
    with pytest.raises(Conflict):
        services.cancel_batch(acme, batch.public_id, actor=None, request_id="r")


def test_a_file_a_validating_batch_still_reads_cannot_be_deleted(acme: Tenant) -> None:
    source = _upload(acme, 2)
    _create(acme, source)
    with pytest.raises(Conflict):
        services.delete_file(acme, source.public_id, actor=None, request_id="r")
    assert storage.exists(source.storage_name)


def test_files_past_their_retention_go_with_their_content(acme: Tenant) -> None:
    old, fresh = _upload(acme, 1), _upload(acme, 1)
    BatchFile.unscoped_objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert prune_files() == 1
    assert not storage.exists(old.storage_name) and storage.exists(fresh.storage_name)
    assert list(BatchFile.unscoped_objects.values_list("pk", flat=True)) == [fresh.pk]


def test_the_internal_routes_need_the_token(acme: Tenant, globex: Tenant, settings: Any) -> None:
    key, _ = ApiKey.issue(tenant=acme, name="app", scopes=["inference"])
    theirs, _ = ApiKey.issue(tenant=globex, name="app", scopes=["inference"])
    mine = _upload(acme, 1)
    token = settings.FRONTDOOR_INTERNAL_TOKEN
    cases = [
        ({}, 401),
        ({TOKEN_HEADER: "wrong", TENANT_HEADER: "acme", KEY_HEADER: key.key_id}, 401),
        ({TOKEN_HEADER: token, TENANT_HEADER: "acme", KEY_HEADER: theirs.key_id}, 401),  # a key of another tenant
        ({TOKEN_HEADER: token, TENANT_HEADER: "nope", KEY_HEADER: key.key_id}, 401),
        ({TOKEN_HEADER: token, TENANT_HEADER: "globex", KEY_HEADER: theirs.key_id}, 404),  # not theirs to see
        ({TOKEN_HEADER: token, TENANT_HEADER: "acme", KEY_HEADER: key.key_id}, 200),
    ]
    for headers, status in cases:
        answer = Client(headers=headers).get(f"/internal/openai/v1/files/{mine.public_id}")
        assert answer.status_code == status, (headers, answer.content)
        if status != 200:
            assert set(answer.json()["error"]) == {"message", "type", "param", "code"}


def test_the_internal_routes_answer_bad_requests_in_openai_shape(acme: Tenant, settings: Any) -> None:
    key, _ = ApiKey.issue(tenant=acme, name="app", scopes=["inference"])
    client = Client(
        headers={TOKEN_HEADER: settings.FRONTDOOR_INTERNAL_TOKEN, TENANT_HEADER: "acme", KEY_HEADER: key.key_id}
    )
    cases = [
        client.post("/internal/openai/v1/batches", b"{not json", content_type="application/json"),
        client.post("/internal/openai/v1/batches", b"[]", content_type="application/json"),
        client.post("/internal/openai/v1/files", b"x", content_type="application/json"),
        client.post("/internal/openai/v1/files", {"purpose": "batch"}),
        client.post("/internal/openai/v1/files", {"purpose": "fine-tune", "file": io.BytesIO(b"{}")}),
        client.get("/internal/openai/v1/batches?limit=0"),
        client.get("/internal/openai/v1/batches?limit=abc"),
        client.get("/internal/openai/v1/files?after=file-nope"),
    ]
    for answer in cases:
        assert answer.status_code == 400, answer.content
        assert answer.json()["error"]["type"] == "invalid_request_error"
    assert client.get("/internal/openai/v1/batches/batch_nope").status_code == 404
    assert client.delete("/internal/openai/v1/batches/batch_nope").status_code == 405
    assert not BatchFile.unscoped_objects.exists() and not Batch.unscoped_objects.exists()


def test_listing_pages_newest_first(acme: Tenant, settings: Any) -> None:
    key, _ = ApiKey.issue(tenant=acme, name="app", scopes=["inference"])
    client = Client(
        headers={TOKEN_HEADER: settings.FRONTDOOR_INTERNAL_TOKEN, TENANT_HEADER: "acme", KEY_HEADER: key.key_id}
    )
    made = [_upload(acme, 1).public_id for _ in range(3)]
    first = client.get("/internal/openai/v1/files?limit=2").json()
    assert [f["id"] for f in first["data"]] == made[::-1][:2] and first["has_more"] is True
    rest = client.get(f"/internal/openai/v1/files?limit=2&after={first['last_id']}").json()
    assert [f["id"] for f in rest["data"]] == [made[0]] and rest["has_more"] is False
