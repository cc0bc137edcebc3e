"""The batches page: every member and staff see each batch's progress, counts, times, errors and files; admins
cancel an open one (htmx answers with its rows, a refusal says why); another tenant sees nothing; downloads stream
the stored content."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from batches.models import Batch, BatchFile
from tenants.models import ApiKey, AuditEvent, Tenant
from tests.support.batch_rows import make_batch, request_lines, store_file
from tests.support.batches import reset_batch_storage

pytestmark = pytest.mark.django_db

URL = "/t/acme/batches/"

Console = Callable[[User | None], Client]


@pytest.fixture(autouse=True)
def files_dir(settings: Any, tmp_path: Path) -> Path:
    reset_batch_storage(settings, tmp_path / "files")
    return tmp_path / "files"


@pytest.fixture
def running(acme: Tenant) -> Batch:
    """acme's batch of 10 lines, 4 answered (3 completed, 1 failed), created by its key "batch-app"."""
    key, _ = ApiKey.issue(tenant=acme, name="batch-app", scopes=["inference"])
    return make_batch(acme, store_file(acme, request_lines(10), api_key=key), api_key=key, completed=3, failed=1)


def cancel_url(batch: Batch) -> str:
    return f"{URL}{batch.public_id}/cancel/"


def file_url(found: BatchFile | None) -> str:
    assert found is not None
    return f"/t/acme/files/{found.public_id}/content/"


def test_it_shows_each_batch_with_its_progress_and_files(console: Console, vera: User, running: Batch) -> None:
    response = console(vera).get(URL)

    assert response.status_code == 200
    page = response.content.decode()
    assert f"<code>{running.public_id}</code>" in page and "by key batch-app" in page
    assert '<span class="badge status-in_progress">in progress</span>' in page
    assert "<code>/v1/chat/completions</code>" in page
    assert 'aria-valuemax="10" aria-valuenow="4"' in page and 'style="width: 40%"' in page
    assert "4 / 10 answered (40%)" in page
    assert f'href="{file_url(running.input_file)}"' in page
    assert f'href="{URL}"' in page  # the nav link
    assert cancel_url(running) not in page  # viewers get no Cancel button


def test_it_polls_while_a_batch_is_open_and_stops_when_none_is(console: Console, bob: User, running: Batch) -> None:
    client = console(bob)
    assert 'hx-trigger="every 3s"' in client.get(URL).content.decode()

    Batch.unscoped_objects.filter(pk=running.pk).update(status=Batch.Status.COMPLETED, completed=9, failed=1)
    partial = client.get(URL, HTTP_HX_REQUEST="true").content.decode()

    assert "<html" not in partial and 'id="batch-table"' in partial
    assert "hx-trigger" not in partial and "10 / 10 answered (100%)" in partial


def test_an_ended_batch_offers_its_output_and_error_files_and_shows_its_errors(
    console: Console, vera: User, acme: Tenant
) -> None:
    output = store_file(acme, b'{"id": "r1"}\n', purpose=BatchFile.Purpose.OUTPUT)
    errors = store_file(acme, b'{"id": "r2"}\n', purpose=BatchFile.Purpose.OUTPUT)
    failure = {"code": "token_revoked", "message": "the key was revoked"}
    make_batch(acme, status=Batch.Status.FAILED, output_file=output, error_file=errors, errors=[failure])

    page = console(vera).get(URL).content.decode()

    assert f'href="{file_url(output)}"' in page and f'href="{file_url(errors)}"' in page
    assert "input deleted" in page  # the batch's input file is gone
    assert "<code>token_revoked</code>: the key was revoked" in page


def test_the_empty_state_says_how_to_create_a_batch(console: Console, vera: User, settings: Any) -> None:
    settings.FRONTDOOR_GATEWAY_URL = "https://gateway.example.test"

    page = console(vera).get(URL).content.decode().replace("&quot;", '"')

    assert "No batches yet." in page
    assert 'base_url="https://gateway.example.test/v1"' in page
    assert 'client.files.create(file=open("requests.jsonl", "rb"), purpose="batch")' in page
    assert "client.batches.create(" in page and "hx-trigger" not in page


def test_an_admin_cancels_with_htmx_and_gets_a_notice_and_the_batchs_rows(
    console: Console, adam: User, acme: Tenant, running: Batch
) -> None:
    client = console(adam)
    page = client.get(URL).content.decode()
    assert f'hx-post="{cancel_url(running)}" hx-target="#batch-notice"' in page and 'id="batch-notice"' in page

    response = client.post(cancel_url(running), HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    answer = response.content.decode()
    assert answer.startswith('<p class="banner success" role="status">') and "<html" not in answer
    assert f"Batch {running.public_id} is cancelling" in answer
    assert f'<template>\n<tbody id="batch-{running.public_id}"' in answer and 'hx-swap-oob="true"' in answer
    assert "status-cancelling" in answer
    assert cancel_url(running) not in answer  # nothing left to cancel
    running.refresh_from_db()
    assert running.status == Batch.Status.CANCELLING
    assert AuditEvent.objects.for_tenant(acme).filter(action="batch.cancel", actor=adam).count() == 1


def test_a_plain_cancel_redirects_to_the_list_with_a_message(console: Console, alice: User, running: Batch) -> None:
    client = console(alice)

    response = client.post(cancel_url(running))

    assert response.status_code == 302 and response["Location"] == URL
    assert f"Batch {running.public_id} is cancelling" in client.get(URL).content.decode()


def test_a_refused_cancel_says_why(console: Console, adam: User, acme: Tenant) -> None:
    ended = make_batch(acme, status=Batch.Status.COMPLETED)
    client = console(adam)

    htmx = client.post(cancel_url(ended), HTTP_HX_REQUEST="true")
    plain = client.post(cancel_url(ended))

    assert htmx.status_code == 200  # htmx 2 swaps no 4xx: the notice carries the refusal
    assert htmx.content.decode().startswith('<p class="banner error" role="alert">the batch is completed')
    assert plain.status_code == 409 and "the batch is completed" in plain.content.decode()
    ended.refresh_from_db()
    assert ended.status == Batch.Status.COMPLETED


@pytest.mark.parametrize("persona", ["vera", "bob"])
def test_viewers_and_members_cannot_cancel(
    console: Console, persona: str, request: pytest.FixtureRequest, running: Batch
) -> None:
    response = console(request.getfixturevalue(persona)).post(cancel_url(running), HTTP_HX_REQUEST="true")

    assert response.status_code == 403
    running.refresh_from_db()
    assert running.status == Batch.Status.IN_PROGRESS


def test_the_cancel_needs_the_csrf_token(adam: User, running: Batch, redis_prefix: str) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(adam)

    refused = client.post(cancel_url(running))
    running.refresh_from_db()
    assert refused.status_code == 403 and running.status == Batch.Status.IN_PROGRESS

    client.get(URL)
    token = client.cookies["csrftoken"].value
    accepted = client.post(cancel_url(running), HTTP_X_CSRFTOKEN=token, HTTP_HX_REQUEST="true")
    running.refresh_from_db()
    assert accepted.status_code == 200 and running.status == Batch.Status.CANCELLING


def test_staff_see_and_cancel_any_tenants_batches(console: Console, staff: User, running: Batch) -> None:
    client = console(staff)

    assert running.public_id in client.get(URL).content.decode()
    assert client.post(cancel_url(running)).status_code == 302
    running.refresh_from_db()
    assert running.status == Batch.Status.CANCELLING


def test_another_tenant_sees_nothing(console: Console, charlie: User, running: Batch) -> None:
    client = console(charlie)
    input_id = running.input_file_public_id

    assert client.get(URL).status_code == 404
    assert client.post(cancel_url(running)).status_code == 404
    assert client.get(file_url(running.input_file)).status_code == 404
    # acme's ids under charlie's own tenant are unknown too.
    assert client.post(f"/t/globex/batches/{running.public_id}/cancel/").status_code == 404
    assert client.get(f"/t/globex/files/{input_id}/content/").status_code == 404
    running.refresh_from_db()
    assert running.status == Batch.Status.IN_PROGRESS


def test_a_download_streams_the_stored_content(console: Console, vera: User, acme: Tenant) -> None:
    content = request_lines(4)
    stored = store_file(acme, content)

    response = console(vera).get(file_url(stored))

    assert response.status_code == 200 and response.streaming
    assert b"".join(response.streaming_content) == content
    assert response["Content-Disposition"] == f'attachment; filename="{stored.public_id}.jsonl"'
    assert console(vera).get("/t/acme/files/file-nope/content/").status_code == 404
