"""``manage.py seed_demo``: the demo tenant, its admin, a fresh API key and two built-in model deployments: the
chat model ``demo-chat`` (OpenAI, images too) and the recommendation scorer ``ranker`` (Open Inference Protocol v2).

Idempotent: a second run changes nothing but the key. Key secrets cannot be recovered, so every run issues a
new key named "demo" and revokes the previous one. The admin's password comes from FRONTDOOR_DEMO_PASSWORD
(set every run); without it a random one is generated when the user is created and left alone afterwards.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from controlplane.contracts.env import env_str
from controlplane.domain_errors import Invalid
from deployments.models import ModelDeployment
from deployments.services import create_deployment, update_deployment
from quotas.models import Quota
from tenants.models import ApiKey, Membership, Role, Scope, Tenant
from tenants.services import create_tenant, issue_key, revoke_key

DEMO_TENANT = "demo"
DEMO_USER = "admin"
DEMO_KEY_NAME = "demo"
DEMO_DEPLOYMENT = {
    "name": "demo-chat",
    "runtime": "builtin",
    "model": "frontdoor/sim-chat",
    "min_replicas": 1,
    "max_replicas": 2,
    # The built-in server makes images in its OpenAI mode: /v1/images/generations reaches this deployment too.
    "image_generation": True,
}
DEMO_RANKER = {
    "name": "ranker",
    "runtime": "builtin",
    "protocol": "v2",
    "model": "frontdoor/ranker",
    "min_replicas": 1,
    "max_replicas": 1,
}
# Routing-only declarations that a demo deployment seeded by an older version lacks: brought in line on the next run
# (no new revision), while what a person changed since (replicas, model ...) is left alone.
CONVERGED_FIELDS = ("image_generation",)


class Command(BaseCommand):
    help = "Create (or refresh) the demo tenant, admin user, API key and the demo-chat and ranker deployments."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            user, password = self._admin()
            tenant = self._tenant(user)
            full_key = self._fresh_key(tenant, user)
            deployment = self._deployment(tenant, DEMO_DEPLOYMENT)
            ranker = self._deployment(tenant, DEMO_RANKER)
        result = {
            "tenant": tenant.slug,
            "username": user.username,
            "password": password,  # None: unchanged since it was set
            "api_key": full_key,
            "model": deployment.name,
            "deployment_id": deployment.pk,
            "image_model": deployment.name if deployment.image_generation else None,
            "v2_model": ranker.name,
            "gateway_url": settings.FRONTDOOR_GATEWAY_URL,
        }
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        for name, value in result.items():
            shown = "(unchanged; set FRONTDOOR_DEMO_PASSWORD to choose one)" if value is None else value
            self.stdout.write(f"{name}: {shown}")

    def _admin(self) -> tuple[User, str | None]:
        wanted = env_str("FRONTDOOR_DEMO_PASSWORD")
        user, created = User.objects.get_or_create(username=DEMO_USER, defaults={"email": "admin@example.com"})
        password = wanted or (secrets.token_urlsafe(12) if created else None)
        changed = not (user.is_staff and user.is_superuser)
        user.is_staff = user.is_superuser = True
        if password is not None and not user.check_password(password):
            user.set_password(password)
            changed = True
        if changed or created:
            user.save()
        return user, password

    def _tenant(self, user: User) -> Tenant:
        tenant = Tenant.objects.filter(slug=DEMO_TENANT).first()
        if tenant is None:
            return create_tenant(slug=DEMO_TENANT, name="Demo", owner=user, actor=None)
        Quota.unscoped_objects.get_or_create(tenant=tenant)
        Membership.unscoped_objects.update_or_create(tenant=tenant, user=user, defaults={"role": Role.OWNER})
        return tenant

    def _fresh_key(self, tenant: Tenant, user: User) -> str:
        previous = ApiKey.unscoped_objects.filter(tenant=tenant, name=DEMO_KEY_NAME, revoked_at__isnull=True)
        for key in previous:
            revoke_key(key, actor=None)
        _, full_key = issue_key(tenant, name=DEMO_KEY_NAME, scopes=list(Scope.values), created_by=user, actor=None)
        return full_key

    def _deployment(self, tenant: Tenant, declared: dict[str, Any]) -> ModelDeployment:
        existing = ModelDeployment.unscoped_objects.filter(tenant=tenant, name=declared["name"]).first()
        if existing is None:
            return create_deployment(tenant, declared, actor=None)
        missing = {
            name: declared[name]
            for name in CONVERGED_FIELDS
            if name in declared and getattr(existing, name) != declared[name]
        }
        if not missing:
            return existing
        try:
            return update_deployment(existing, missing, actor=None)
        except Invalid as exc:  # changed since into something that cannot take them (another runtime): kept as is
            self.stderr.write(f"{existing.name} keeps its settings: {exc}")
            return existing
