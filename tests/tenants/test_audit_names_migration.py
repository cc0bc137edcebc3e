"""The migration that gives audit events written before objects were recorded by name the names people know."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tenants.models import AuditEvent

BEFORE = ("tenants", "0005_apikey_unique_live_name")
AFTER = ("tenants", "0006_auditevent_readable_names")


def _migrate(target: tuple[str, str]) -> Any:
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    executor.loader.build_graph()
    return executor.loader.project_state([target]).apps


@pytest.mark.django_db(transaction=True)
def test_old_events_get_the_names_people_know() -> None:
    apps = _migrate(BEFORE)
    try:
        tenant = apps.get_model("tenants", "Tenant")._default_manager.create(slug="acme", name="Acme")
        bob = User.objects.create_user("bob")
        events = apps.get_model("tenants", "AuditEvent")._default_manager
        old = [
            ("modeldeployment", f"{tenant.pk}/chat", {}, "chat"),
            ("tenantsecret", f"{tenant.pk}/hf-token", {}, "hf-token"),
            ("apikey", "ci (2) (fd_live_ab12cd34_…)", {}, "ci (2)"),
            ("invitation", f"invitation of new@example.test to {tenant.pk} as member", {}, "new@example.test"),
            ("membership", f"{bob.pk}@{tenant.pk}:member", {"role": ["member", "admin"]}, "bob"),
            ("membership", f"999@{tenant.pk}:member", {"user": "gone", "role": "member"}, "gone"),
            ("membership", f"998@{tenant.pk}:viewer", {"role": "viewer"}, f"998@{tenant.pk}:viewer"),
            ("quota", f"quota of {tenant.pk}", {}, ""),
            ("tenantsettings", f"settings of {tenant.pk}", {}, ""),
            ("tenant", "acme", {}, "acme"),
            ("modeldeployment", "chat", {}, "chat"),  # already a name: unchanged
        ]
        for object_type, text, changes, _ in old:
            events.create(
                tenant=tenant,
                action=f"{object_type}.update",
                object_type=object_type,
                object_repr=text,
                changes=changes,
            )
    finally:
        _migrate(AFTER)
    rows = AuditEvent.unscoped_objects.order_by("id").values_list("object_repr", flat=True)
    assert list(rows) == [name for *_, name in old]
