"""The population ``bench/publish_side.py`` measures: tenants, deployments, revisions, API keys, all bulk-created.

Loaded by path from ``bench/publish_side.py`` (``bench`` on the path is the measured tree's package); it imports the
tree's models only, inside ``populate``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tenants.models import Tenant


@dataclass
class Fixture:
    big_id: int
    big_slug: str
    small_id: int
    big_deployments: list[int]
    small_deployment: int
    small_key_pk: int
    small_key_id: str
    revisions_of: str  # a big-tenant deployment's name
    owner_id: int


def populate(args: argparse.Namespace) -> Fixture:
    """The big tenant, the others, their deployments (two revisions each), keys and the big tenant's owner."""
    from django.contrib.auth import get_user_model

    from deployments.models import ModelDeployment, Revision
    from deployments.models.deployment import spec_digest
    from quotas.models import Quota
    from tenants.models import ApiKey, Membership, Role, Tenant

    n_tenants, n_deployments, n_keys = args.tenants, args.deployments, args.keys
    width = max(4, len(str(n_tenants - 1)))
    tenants = Tenant.objects.bulk_create(
        (Tenant(slug=f"t{i:0{width}d}", name=f"Tenant {i}") for i in range(n_tenants)), batch_size=2000
    )
    Quota.unscoped_objects.bulk_create((Quota(tenant=t) for t in tenants), batch_size=2000)

    def owner_of(i: int, big_share: int) -> Tenant:
        """The first ``big_share`` rows go to the big tenant, the rest round-robin to the others."""
        return tenants[0] if i < big_share or n_tenants == 1 else tenants[1 + (i - big_share) % (n_tenants - 1)]

    big_deployments, big_keys = max(1, n_deployments // 10), max(1, n_keys // 10)
    deployments = ModelDeployment.unscoped_objects.bulk_create(
        (
            ModelDeployment(
                tenant=owner_of(j, big_deployments),
                name=f"m{j:05d}",
                runtime="vllm",
                model=f"org/model-{j % 50}",
                gpu_type="nvidia-h100",
                gpu_count=1,
                min_replicas=1,
                max_replicas=2,
                desired_replicas=1,
                ready_replicas=1,
                status="ready",
                max_concurrent_requests=16,
            )
            for j in range(n_deployments)
        ),
        batch_size=2000,
    )

    def revision(d: ModelDeployment, number: int, n: int) -> Revision:
        spec = d.revision_spec()
        return Revision(
            deployment=d,
            number=number,
            spec=spec,
            spec_hash=spec_digest(spec),
            weight=50,
            # One replica each, unique, on loopback: nothing in the bench connects to replicas, and were anything to, it
            # would reach nothing off this machine.
            endpoints=[f"http://127.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}:8000"],
            desired_replicas=1,
            ready_replicas=1,
        )

    revisions = [revision(d, number, 2 * j + number) for j, d in enumerate(deployments) for number in (1, 2)]
    Revision.unscoped_objects.bulk_create(revisions, batch_size=2000)
    keys = ApiKey.unscoped_objects.bulk_create(
        (
            ApiKey(
                tenant=owner_of(i, big_keys),
                name=f"key {i}",
                key_id=f"{i:08x}",
                env="live",
                secret_hash="0" * 64,
                scopes=["inference"],
            )
            for i in range(n_keys)
        ),
        batch_size=5000,
    )
    owner = get_user_model().objects.create_user(username="bench-owner", password=None)
    Membership.unscoped_objects.create(tenant=tenants[0], user=owner, role=Role.OWNER)
    small = tenants[1] if n_tenants > 1 else tenants[0]
    small_key = next(k for k in keys if k.tenant_id == small.pk)
    return Fixture(
        big_id=tenants[0].pk,
        big_slug=tenants[0].slug,
        small_id=small.pk,
        big_deployments=[d.pk for d in deployments if d.tenant_id == tenants[0].pk],
        small_deployment=next(d.pk for d in deployments if d.tenant_id == small.pk),
        small_key_pk=small_key.pk,
        small_key_id=small_key.key_id,
        revisions_of=deployments[0].name,
        owner_id=owner.pk,
    )
