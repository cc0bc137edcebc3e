"""Seed a chaos tenant through the service layer, in a process of its own (``DATABASE_URL`` names the database).

Run as ``python -m tests.deployments.reconcile.chaos_pg_seed --count N --queue Q`` from the repository root.
It creates tenant
``chaos`` with room for N deployments, then N builtin deployments through ``deployments.services.create_deployment``
(the path the REST API takes): each one's reconcile is enqueued on commit, onto queue Q. Prints the deployment ids
as a JSON list on stdout.

The chaos test runs this in a subprocess because its database is a disposable server the test restarts; the test
process itself never connects Django to it.
"""

from __future__ import annotations

import argparse
import json
import os


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--queue", required=True, help="the Celery queue the reconciles are sent to")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import django

    django.setup()
    from controlplane.celery import app
    from deployments.services import create_deployment
    from quotas.models import Quota
    from tenants.models import Tenant

    # enqueue_reconcile sends by task name with no queue: the default queue is where this test's worker listens.
    app.conf.task_default_queue = args.queue
    tenant = Tenant.objects.create(slug="chaos", name="Chaos")
    Quota.unscoped_objects.create(
        tenant=tenant, gpus={"nvidia-h100": 4 * args.count}, max_replicas=2 * args.count, max_deployments=args.count
    )
    ids = []
    for i in range(args.count):
        data = {"name": f"m{i}", "runtime": "builtin", "model": "m", "min_replicas": 1, "max_replicas": 2}
        ids.append(create_deployment(tenant, data, actor=None).pk)
    print(json.dumps(ids))


if __name__ == "__main__":
    main()
