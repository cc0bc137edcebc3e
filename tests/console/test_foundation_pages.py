"""What every page has (the top bar's API docs link) and the pages whose numbers and times read for people: counts
with thousands separators, times relative with the UTC time on hover; tables that stack on a phone."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from batches.models import Batch
from deployments import secrets
from deployments.models import TenantSecret
from tenants import invitations, webhook_settings
from tenants.models import Invitation, Membership, Tenant, TenantSettings
from tests.support.batch_rows import make_batch, request_lines, store_file
from tests.support.batches import reset_batch_storage

pytestmark = pytest.mark.django_db

Console = Callable[[User | None], Client]
# <time datetime="2026-12-02T01:23:45Z" title="2026-12-02 01:23 UTC">…</time>
TIME = re.compile(
    r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ" title="\d{4}-\d\d-\d\d \d\d:\d\d UTC">([^<]+)</time>'
)


def times_in(page: str) -> list[str]:
    return TIME.findall(page)


def test_the_top_bar_links_the_api_docs(console: Console, vera: User) -> None:
    page = console(vera).get("/t/acme/").content.decode()

    assert f'<a class="docs" href="{reverse("api-docs")}">API docs</a>' in page


def test_signed_out_pages_have_no_top_bar_links(console: Console, db: None) -> None:
    assert 'class="docs"' not in console(None).get("/login/").content.decode()


def test_batches_show_counts_with_separators_and_relative_times(
    console: Console, vera: User, acme: Tenant, settings: Any, tmp_path: Path
) -> None:
    reset_batch_storage(settings, tmp_path / "files")
    batch = make_batch(acme, store_file(acme, request_lines(3)), total=12_000, completed=1_234, failed=5)
    now = timezone.now()  # times well clear of a unit's edge, however slow the run
    Batch.unscoped_objects.filter(pk=batch.pk).update(
        created_at=now - timedelta(minutes=3, seconds=20), expires_at=now + timedelta(hours=5, minutes=30)
    )

    page = console(vera).get("/t/acme/batches/").content.decode()

    assert "1,239 / 12,000 answered (10%)" in page
    assert "1,234 completed" in page and "5 failed" in page
    assert times_in(page) == ["3 min ago", "in 5 h"]  # created, expires


def test_members_show_since_and_invitation_expiry_as_relative_times(console: Console, adam: User, acme: Tenant) -> None:
    now = timezone.now()
    Membership.objects.for_tenant(acme).filter(user=adam).update(created_at=now - timedelta(days=2, hours=3))
    invitation, _ = invitations.create_invitation(
        acme, email="new@example.test", role="member", invited_by=adam, actor=None
    )
    Invitation.objects.for_tenant(acme).filter(pk=invitation.pk).update(expires_at=now + timedelta(days=6, hours=12))

    page = console(adam).get("/t/acme/members/").content.decode()

    assert "2 days ago" in times_in(page)
    assert "expires <time" in page and "in 6 days" in times_in(page)


def test_the_members_table_stacks_on_a_phone_with_a_label_per_cell(console: Console, adam: User) -> None:
    page = console(adam).get("/t/acme/members/").content.decode()

    assert '<div class="table-wrap stack"><table>' in page
    for label in ("User", "Email", "Role", "Since"):
        assert f'data-label="{label}"' in page


def test_settings_and_secrets_show_when_they_changed(console: Console, adam: User, acme: Tenant) -> None:
    webhook_settings.set_webhook(acme, "https://hooks.example.com/slo", actor=None)
    TenantSettings.objects.for_tenant(acme).update(updated_at=timezone.now() - timedelta(minutes=2, seconds=20))
    secrets.create_secret(acme, name="hf-token", value="hf_value", actor=None)
    TenantSecret.objects.for_tenant(acme).update(updated_at=timezone.now() - timedelta(hours=5, minutes=20))
    client = console(adam)

    settings_page = client.get("/t/acme/settings/").content.decode()
    secrets_page = client.get("/t/acme/secrets/").content.decode()

    assert "(settings changed <time" in settings_page and times_in(settings_page) == ["2 min ago"]
    assert times_in(secrets_page) == ["5 h ago"]
