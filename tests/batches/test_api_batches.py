"""The REST API's batches and batch files: members, staff and read keys see them, admins cancel, another tenant's
are 404s, and downloads stream the stored content."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from batches.models import Batch, BatchFile
from tenants.models import ApiKey, AuditEvent, Tenant
from tests.support.batch_rows import make_batch, request_lines, store_file

pytestmark = pytest.mark.django_db

BATCHES = "/api/v1/tenants/acme/batches/"
FILES = "/api/v1/tenants/acme/files/"

Api = Callable[[User | None], APIClient]
KeyApi = Callable[[Tenant, list[str]], APIClient]


@pytest.fixture
def running(acme: Tenant) -> Batch:
    """acme's batch of 10 lines, 4 answered (3 completed, 1 failed), created by its key "batch-app"."""
    key, _ = ApiKey.issue(tenant=acme, name="batch-app", scopes=["inference"])
    source = store_file(acme, request_lines(10), api_key=key)
    return make_batch(acme, source, api_key=key, completed=3, failed=1, prompt_tokens=40, completion_tokens=12)


def test_it_shows_a_batch_to_a_viewer(api: Api, vera: User, running: Batch) -> None:
    response = api(vera).get(f"{BATCHES}{running.public_id}/")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == running.public_id and body["status"] == "in_progress"
    assert body["endpoint"] == "/v1/chat/completions"
    assert body["input_file_id"] == running.input_file_public_id
    assert body["output_file_id"] is None and body["error_file_id"] is None
    assert body["request_counts"] == {"total": 10, "completed": 3, "failed": 1}
    assert body["progress"] == pytest.approx(0.4)
    assert body["usage"] == {"input_tokens": 40, "output_tokens": 12, "total_tokens": 52}
    assert body["created_by"] == "batch-app"
    assert body["errors"] == [] and body["metadata"] is None
    assert body["in_progress_at"] is not None and body["cancelled_at"] is None and body["expires_at"]


def test_it_lists_newest_first_paginated_and_filters_by_status(api: Api, bob: User, acme: Tenant) -> None:
    older = make_batch(acme, status=Batch.Status.COMPLETED, completed_at=timezone.now())
    Batch.unscoped_objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(hours=1))
    newer = make_batch(acme)

    listed = api(bob).get(BATCHES).json()
    completed = api(bob).get(BATCHES, {"status": "completed"}).json()

    assert listed["count"] == 2 and [b["id"] for b in listed["results"]] == [newer.public_id, older.public_id]
    assert [b["id"] for b in completed["results"]] == [older.public_id]
    assert api(bob).get(BATCHES, {"status": "nonsense"}).status_code == 400


def test_an_ended_batch_names_its_files_and_its_errors(api: Api, vera: User, acme: Tenant) -> None:
    output = store_file(acme, b'{"id": "r1"}\n', purpose=BatchFile.Purpose.OUTPUT, filename="output.jsonl")
    errors = store_file(acme, b'{"id": "r2"}\n', purpose=BatchFile.Purpose.OUTPUT, filename="errors.jsonl")
    failure = {"code": "invalid_line", "message": "line 2 is not JSON", "line": 2}
    ended = make_batch(
        acme, status=Batch.Status.FAILED, output_file=output, error_file=errors, errors=[failure], total=0
    )

    body = api(vera).get(f"{BATCHES}{ended.public_id}/").json()

    assert (body["output_file_id"], body["error_file_id"]) == (output.public_id, errors.public_id)
    assert body["errors"] == [{**failure, "param": None}]
    assert body["progress"] == 0.0


def test_an_admin_cancels_a_running_batch(api: Api, adam: User, acme: Tenant, running: Batch) -> None:
    response = api(adam).post(f"{BATCHES}{running.public_id}/cancel/")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelling" and response.json()["cancelling_at"] is not None
    running.refresh_from_db()
    assert (running.status, running.ending) == (Batch.Status.CANCELLING, Batch.Ending.CANCELLED)
    assert AuditEvent.objects.for_tenant(acme).filter(action="batch.cancel", actor=adam).count() == 1


def test_a_manage_key_cancels_and_a_read_key_only_reads(key_api: KeyApi, acme: Tenant, running: Batch) -> None:
    reader = key_api(acme, ["read"])
    assert reader.get(BATCHES).status_code == 200
    assert reader.post(f"{BATCHES}{running.public_id}/cancel/").status_code == 403

    assert key_api(acme, ["manage"]).post(f"{BATCHES}{running.public_id}/cancel/").status_code == 200
    assert key_api(acme, ["inference"]).get(BATCHES).status_code == 403


@pytest.mark.parametrize("persona", ["vera", "bob"])
def test_viewers_and_members_cannot_cancel(
    api: Api, persona: str, request: pytest.FixtureRequest, running: Batch
) -> None:
    response = api(request.getfixturevalue(persona)).post(f"{BATCHES}{running.public_id}/cancel/")

    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
    running.refresh_from_db()
    assert running.status == Batch.Status.IN_PROGRESS


@pytest.mark.parametrize("ended", [Batch.Status.COMPLETED, Batch.Status.CANCELLED, Batch.Status.FINALIZING])
def test_cancelling_a_batch_that_ended_is_a_409(api: Api, adam: User, acme: Tenant, ended: str) -> None:
    batch = make_batch(acme, status=ended)

    response = api(adam).post(f"{BATCHES}{batch.public_id}/cancel/")

    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"
    assert ended in response.json()["error"]["message"]
    batch.refresh_from_db()
    assert batch.status == ended


def test_cancelling_twice_answers_the_cancelling_batch(api: Api, adam: User, running: Batch) -> None:
    client = api(adam)
    client.post(f"{BATCHES}{running.public_id}/cancel/")

    again = client.post(f"{BATCHES}{running.public_id}/cancel/")

    assert again.status_code == 200 and again.json()["status"] == "cancelling"


def test_staff_see_and_cancel_in_any_tenant(api: Api, staff: User, running: Batch) -> None:
    client = api(staff)
    assert [b["id"] for b in client.get(BATCHES).json()["results"]] == [running.public_id]
    assert client.post(f"{BATCHES}{running.public_id}/cancel/").status_code == 200


def test_another_tenants_batches_and_files_do_not_exist(
    api: Api, charlie: User, globex: Tenant, running: Batch, key_api: KeyApi
) -> None:
    assert running.input_file is not None
    other = api(charlie)
    # acme's routes are unknown to charlie, and acme's ids are unknown under charlie's own tenant.
    assert other.get(BATCHES).status_code == 404
    assert other.get(f"{BATCHES}{running.public_id}/").status_code == 404
    assert other.post(f"{BATCHES}{running.public_id}/cancel/").status_code == 404
    assert other.get(f"{FILES}{running.input_file.public_id}/content/").status_code == 404
    assert other.get(f"/api/v1/tenants/globex/batches/{running.public_id}/").status_code == 404
    assert other.post(f"/api/v1/tenants/globex/batches/{running.public_id}/cancel/").status_code == 404
    assert other.get(f"/api/v1/tenants/globex/files/{running.input_file.public_id}/").status_code == 404
    assert other.get(f"/api/v1/tenants/globex/files/{running.input_file.public_id}/content/").status_code == 404
    assert key_api(globex, ["manage"]).get(f"{BATCHES}{running.public_id}/").status_code == 404
    running.refresh_from_db()
    assert running.status == Batch.Status.IN_PROGRESS


def test_it_lists_files_and_shows_their_metadata(api: Api, vera: User, acme: Tenant, running: Batch) -> None:
    source = running.input_file
    assert source is not None
    output = store_file(acme, b'{"id": "r1"}\n', purpose=BatchFile.Purpose.OUTPUT, filename="output.jsonl")
    client = api(vera)

    listed = client.get(FILES).json()
    outputs = client.get(FILES, {"purpose": "batch_output"}).json()
    one = client.get(f"{FILES}{source.public_id}/").json()

    assert [f["id"] for f in listed["results"]] == [output.public_id, source.public_id]
    assert [f["id"] for f in outputs["results"]] == [output.public_id]
    assert one == {
        "id": source.public_id,
        "filename": "requests.jsonl",
        "purpose": "batch",
        "bytes": source.bytes,
        "lines": 10,
        "created_by": "batch-app",
        "created_at": one["created_at"],
        "expires_at": one["expires_at"],
    }


def test_a_download_streams_the_stored_content(key_api: KeyApi, acme: Tenant) -> None:
    content = request_lines(3)
    stored = store_file(acme, content)

    response = key_api(acme, ["read"]).get(f"{FILES}{stored.public_id}/content/")

    assert response.status_code == 200 and response.streaming
    assert b"".join(response.streaming_content) == content
    assert response["Content-Length"] == str(len(content))
    assert response["Content-Disposition"] == f'attachment; filename="{stored.public_id}.jsonl"'


def test_a_download_may_ask_for_octet_stream_and_its_errors_are_json(api: Api, vera: User, acme: Tenant) -> None:
    stored = store_file(acme, b'{"id": "r1"}\n')
    client = api(vera)

    found = client.get(f"{FILES}{stored.public_id}/content/", HTTP_ACCEPT="application/octet-stream")
    missing = client.get(f"{FILES}file-nope/content/", HTTP_ACCEPT="application/octet-stream")

    assert found.status_code == 200 and b"".join(found.streaming_content) == b'{"id": "r1"}\n'
    assert missing.status_code == 404 and missing["Content-Type"].startswith("application/json")
    assert missing.json()["error"]["code"] == "not_found"
