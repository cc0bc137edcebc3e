"""API key names become unique among a tenant's unrevoked keys.

Keys that already share a name keep it in creation order: the oldest keeps the name, each later one is renamed
``name (2)``, ``name (3)``, … (a free name, cut to fit the column), and each rename is an ``api_key.update`` audit
event by the system, so the tenant sees why its key's name changed. Revoked keys keep their names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import migrations, models
from django.db.models import Count

NAME_MAX_LENGTH = 100


def renamed_duplicates(names: Sequence[str], max_length: int = NAME_MAX_LENGTH) -> list[str]:
    """``names`` (oldest first) with every repeat of an earlier name renamed ``name (n)``, the smallest n >= 2 that
    no other name takes; names that were unique stay as they are."""
    taken = set(names)
    seen: set[str] = set()
    result: list[str] = []
    for name in names:
        if name in seen:
            number = 2
            while True:
                suffix = f" ({number})"
                candidate = name[: max_length - len(suffix)] + suffix
                if candidate not in taken:
                    break
                number += 1
            taken.add(candidate)
            name = candidate
        seen.add(name)
        result.append(name)
    return result


def rename_duplicate_live_key_names(apps: Any, schema_editor: Any) -> None:
    ApiKey = apps.get_model("tenants", "ApiKey")
    AuditEvent = apps.get_model("tenants", "AuditEvent")
    live = ApiKey._default_manager.filter(revoked_at__isnull=True)
    crowded = live.values("tenant_id", "name").annotate(count=Count("id")).filter(count__gt=1)
    for tenant_id in sorted({row["tenant_id"] for row in crowded}):
        keys = list(live.filter(tenant_id=tenant_id).order_by("created_at", "id"))
        for key, new_name in zip(keys, renamed_duplicates([key.name for key in keys]), strict=True):
            if new_name == key.name:
                continue
            AuditEvent._default_manager.create(
                tenant_id=tenant_id,
                action="api_key.update",
                object_type="apikey",
                object_id=str(key.pk),
                object_repr=new_name,
                changes={"name": [key.name, new_name]},
            )
            key.name = new_name
            key.save(update_fields=["name"])


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0004_apikey_batch_limits"),
    ]

    operations = [
        migrations.RunPython(rename_duplicate_live_key_names, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="apikey",
            constraint=models.UniqueConstraint(
                condition=models.Q(("revoked_at__isnull", True)),
                fields=("tenant", "name"),
                name="apikey_unique_live_name_per_tenant",
            ),
        ),
    ]
