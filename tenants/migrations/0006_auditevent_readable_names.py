"""Audit events written before objects were recorded by name get the names people know them by.

``object_repr`` used to be ``str(obj)``: ``2/chat`` for a deployment or a secret (tenant id / name),
``ci (fd_live_x_…)`` for a key, ``5@2:member`` for a membership (user id @ tenant id : role),
``invitation of a@b.c to 2 as member``, and ``quota of 2`` / ``settings of 2``. New events hold the name alone
(``controlplane.audit.object_name``); this rewrites the old ones the same way. A membership whose user is gone and
whose event does not name the user keeps its text.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import migrations

_STATEMENTS = [
    # A deployment's or a secret's name, without the tenant id in front of it.
    r"""UPDATE {audit} SET object_repr = regexp_replace(object_repr, '^[0-9]+/', '')
        WHERE object_type IN ('modeldeployment', 'tenantsecret') AND object_repr ~ '^[0-9]+/'""",
    # A key's name, without its displayed prefix.
    r"""UPDATE {audit} SET object_repr = regexp_replace(object_repr, ' \(fd_[A-Za-z0-9]+_[A-Za-z0-9]+_…\)$', '')
        WHERE object_type = 'apikey' AND object_repr ~ ' \(fd_[A-Za-z0-9]+_[A-Za-z0-9]+_…\)$'""",
    # An invitation's email.
    r"""UPDATE {audit} SET object_repr = regexp_replace(object_repr, '^invitation of (.*) to [0-9]+ as [a-z]+$', '\1')
        WHERE object_type = 'invitation' AND object_repr ~ '^invitation of .* to [0-9]+ as [a-z]+$'""",
    # A member's username: the one the event itself names, else the user's current one.
    r"""UPDATE {audit} SET object_repr = changes->>'user'
        WHERE object_type = 'membership' AND object_repr ~ '^[0-9]+@[0-9]+:' AND changes ? 'user'""",
    r"""UPDATE {audit} AS e SET object_repr = u.username FROM {user} AS u
        WHERE e.object_type = 'membership' AND e.object_repr ~ '^[0-9]+@[0-9]+:'
          AND u.id = split_part(e.object_repr, '@', 1)::bigint""",
    # A tenant has one quota and one settings row: the type says which.
    r"""UPDATE {audit} SET object_repr = ''
        WHERE object_type IN ('quota', 'tenantsettings') AND object_repr ~ '^(quota|settings) of [0-9]+$'""",
]


def name_old_events(apps: Any, schema_editor: Any) -> None:
    audit = schema_editor.quote_name(apps.get_model("tenants", "AuditEvent")._meta.db_table)
    user = schema_editor.quote_name(apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table)
    for statement in _STATEMENTS:
        schema_editor.execute(statement.format(audit=audit, user=user))


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0005_apikey_unique_live_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(name_old_events, migrations.RunPython.noop),
    ]
