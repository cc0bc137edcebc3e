"""The batch files in an S3-compatible bucket: a moto server on 127.0.0.1, with explicit test credentials.

``AWS_EC2_METADATA_DISABLED`` and the credentials in the environment keep boto3 from looking for cloud metadata
off the machine; every request goes to the moto server's loopback port.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from django.core.files.storage import storages
from django.test import Client
from moto.server import ThreadedMotoServer

from batches import services, storage
from batches.models import BatchFile
from controlplane.contracts.batch_wire import KEY_HEADER, TENANT_HEADER, TOKEN_HEADER
from tenants.models import ApiKey, Tenant
from tests.support.batches import chat_lines, jsonl

BUCKET = "frontdoor-test-batches"


@pytest.fixture
def s3(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    assert host == "127.0.0.1"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "batch_files": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": endpoint,
                "region_name": "us-east-1",
                "location": "frontdoor",
                "file_overwrite": True,
                "default_acl": None,
                "querystring_auth": False,
            },
        },
    }
    storages._storages.pop("batch_files", None)
    try:
        yield client
    finally:
        storages._storages.pop("batch_files", None)
        server.stop()


def _keys(client: Any) -> list[str]:
    return [item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


@pytest.mark.django_db
def test_upload_read_and_delete_in_the_bucket(s3: Any, acme: Tenant, django_capture_on_commit_callbacks: Any) -> None:
    content = jsonl(chat_lines(300, "chat"))
    created = services.upload_file(
        acme,
        actor=None,
        request_id="r1",
        filename="../../etc/in.jsonl",
        purpose="batch",
        content=io.BytesIO(content),
        size=len(content),
    )
    assert created.filename == "in.jsonl"  # a label only: the object's name comes from the tenant and the id
    assert _keys(s3) == [f"frontdoor/tenants/{acme.pk}/files/{created.public_id}.jsonl"]
    assert b"".join(storage.read_chunks(created.storage_name, 4096)) == content
    assert created.lines == 300 and created.urls == {"/v1/chat/completions": 1}

    with django_capture_on_commit_callbacks(execute=True):  # the content goes once the row's deletion committed
        services.delete_file(acme, created.public_id, actor=None, request_id="r2")
    assert _keys(s3) == []
    assert not BatchFile.unscoped_objects.filter(pk=created.pk).exists()


@pytest.mark.django_db
def test_a_refused_upload_leaves_no_object(s3: Any, acme: Tenant) -> None:
    content = jsonl(chat_lines(3, "chat")) + b"{broken\n"
    with pytest.raises(services.Invalid, match="line 4"):
        services.upload_file(
            acme,
            actor=None,
            request_id="r",
            filename="x.jsonl",
            purpose="batch",
            content=io.BytesIO(content),
            size=len(content),
        )
    assert _keys(s3) == [] and not BatchFile.unscoped_objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_internal_routes_stream_through_the_bucket(s3: Any, acme: Tenant, settings: Any) -> None:
    key, _ = ApiKey.issue(tenant=acme, name="app", scopes=["inference"])
    headers = {TOKEN_HEADER: settings.FRONTDOOR_INTERNAL_TOKEN, TENANT_HEADER: "acme", KEY_HEADER: key.key_id}
    client = Client(headers=headers)
    content = jsonl(chat_lines(5, "chat"))
    upload = io.BytesIO(content)
    upload.name = "five.jsonl"
    created = client.post("/internal/openai/v1/files", {"purpose": "batch", "file": upload})
    assert created.status_code == 200, created.content
    file_id = created.json()["id"]
    downloaded = client.get(f"/internal/openai/v1/files/{file_id}/content")
    assert downloaded.status_code == 200 and downloaded.streaming
    assert b"".join(downloaded.streaming_content) == content  # type: ignore[arg-type]
    assert json.loads(client.get("/internal/openai/v1/files").content)["data"][0]["id"] == file_id
