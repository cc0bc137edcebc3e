"""The reconcile tasks: registered names, retry policy, ids in / rows re-read, and a resync that writes nothing."""

# pytest fixtures are imported by name, which ruff reads as redefinitions:
# ruff: noqa: F811
from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from deployments import tasks
from deployments.backends import reset_backends
from deployments.backends.base import PermanentBackendError, TransientBackendError
from deployments.models import ModelDeployment, Revision
from deployments.reconcile import engine as reconcile
from quotas.models import Quota
from tenants.services import update_quota
from tests.fakekube.fixtures import fakekube  # noqa: F401
from tests.fakekube.server import FakeKubeServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def on_fakekube(fakekube: FakeKubeServer, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubeServer]:
    """Make ``get_backend()`` build a KubernetesBackend talking to the fake server."""
    settings.FRONTDOOR_BACKEND = "kubernetes"
    monkeypatch.setenv("FRONTDOOR_K8S_API_URL", fakekube.url)
    reset_backends()
    yield fakekube
    reset_backends()


def make_deployment(tenant: Any, name: str = "chat", **fields: Any) -> ModelDeployment:
    deployment = ModelDeployment.unscoped_objects.create(
        tenant=tenant, name=name, runtime="builtin", model="m", **fields
    )
    Revision.unscoped_objects.create(deployment=deployment, number=1, spec=deployment.revision_spec(), weight=100)
    return deployment


def test_it_registers_the_task_names_with_a_retry_policy_for_transient_errors_only() -> None:
    for task in (tasks.reconcile_deployment, tasks.reconcile_tenant):
        assert task.acks_late and task.reject_on_worker_lost
        assert TransientBackendError in task.autoretry_for
        assert not any(issubclass(PermanentBackendError, e) for e in task.autoretry_for)
        assert task.retry_backoff and task.retry_backoff_max == 60 and task.expires
    assert tasks.reconcile_deployment.name == "deployments.reconcile_deployment"
    assert tasks.reconcile_tenant.name == "deployments.reconcile_tenant"
    assert tasks.resync_all.name == "deployments.resync_all"


def test_it_reconciles_through_the_configured_backend(acme: Any, on_fakekube: FakeKubeServer) -> None:
    deployment = make_deployment(acme)
    assert tasks.reconcile_deployment.apply(args=[deployment.pk]).get() == "converged"
    assert ("deployments", "fd-acme", "chat-r1") in on_fakekube.store.objects


def test_it_treats_a_missing_row_as_done(on_fakekube: FakeKubeServer) -> None:
    assert tasks.reconcile_deployment.apply(args=[987654]).get() == "missing"
    assert tasks.reconcile_tenant.apply(args=[987654]).get() is False
    assert on_fakekube.store.stats.writes == 0


def test_it_retries_transient_errors_until_they_pass(acme: Any, on_fakekube: FakeKubeServer) -> None:
    deployment = make_deployment(acme)
    on_fakekube.store.faults.fail_next = 3
    result = tasks.reconcile_deployment.apply(args=[deployment.pk])
    assert result.get() == "converged"
    assert on_fakekube.store.faults.fail_next == 0


def test_it_does_not_retry_a_permanent_error(acme: Any, on_fakekube: FakeKubeServer) -> None:
    deployment = make_deployment(acme)
    on_fakekube.store.faults.reject_names = {"chat-r1": "spec.replicas: Invalid value: -1"}
    assert tasks.reconcile_deployment.apply(args=[deployment.pk]).get() == "degraded"
    attempts = [entry for entry in on_fakekube.store.stats.write_log if entry[3] == "chat-r1"]
    assert len(attempts) == 1
    deployment.refresh_from_db()
    assert (
        "spec.replicas: Invalid value" in next(c for c in deployment.conditions if c["type"] == "Degraded")["message"]
    )


def test_it_resyncs_unconverged_deployments_and_every_tenant_without_writing(
    acme: Any, globex: Any, on_fakekube: FakeKubeServer, broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    converged = make_deployment(acme)
    tasks.reconcile_deployment.apply(args=[converged.pk])
    changed = make_deployment(acme, name="embed")
    ModelDeployment.unscoped_objects.filter(pk=changed.pk).update(generation=5, observed_generation=4, status="ready")
    broker.clear()
    # A resync whose slice of ready deployments to revisit leaves out the converged one.
    monkeypatch.setattr(tasks, "ready_slice", lambda backend: ((converged.pk + 1) % 10, 10))
    with CaptureQueriesContext(connection) as queries:
        counts = tasks.resync_all.apply().get()
    assert counts == {"tenants": 2, "deployments": 1}
    assert broker.reconcile_ids() == [changed.pk]
    assert [q["sql"] for q in queries if q["sql"].split()[0].upper() in {"INSERT", "UPDATE", "DELETE"}] == []


def test_it_revisits_every_ready_deployment_on_kubernetes_once_in_ten_resyncs(
    acme: Any, on_fakekube: FakeKubeServer, settings: Any
) -> None:
    ready = [make_deployment(acme, name=f"chat-{n}") for n in range(12)]
    ModelDeployment.unscoped_objects.update(status="ready", observed_generation=F("generation"))
    period = settings.FRONTDOOR_RESYNC_SECONDS

    picked = [
        reconcile.deployments_needing_reconcile(tasks.ready_slice("kubernetes", now=1_000_000 * period + n * period))
        for n in range(tasks.KUBERNETES_READY_SLICES)
    ]

    assert all(len(ids) < len(ready) for ids in picked), "each resync revisits only a slice"
    assert sorted(pk for ids in picked for pk in ids) == sorted(d.pk for d in ready)
    assert tasks.ready_slice("local") == (0, 1)
    assert reconcile.deployments_needing_reconcile((0, 1)) == sorted(d.pk for d in ready)


def queued(broker: Any, task: str) -> list[dict[str, Any]]:
    """The queued messages of ``task``: args, kwargs and whether they carry an ETA (a countdown)."""
    found = []
    for message in reversed(broker.messages()):
        if message["headers"].get("task") == task:
            args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            found.append({"args": args, "kwargs": kwargs, "eta": message["headers"].get("eta")})
    return found


@pytest.fixture
def on_local(settings: Any, redis_prefix: str) -> Iterator[None]:
    """``get_backend()`` builds a LocalBackend on this test's prefix; no agent runs, so replicas never get ready."""
    settings.FRONTDOOR_BACKEND = "local"
    reset_backends()
    yield
    reset_backends()


def test_it_looks_again_shortly_after_a_progressing_pass(acme: Any, on_local: None, broker: Any) -> None:
    deployment = make_deployment(acme)

    assert tasks.reconcile_deployment.apply(args=[deployment.pk]).get() == "progressing"

    (follow_up,) = queued(broker, "deployments.reconcile_deployment")
    assert follow_up["args"] == [deployment.pk]
    assert follow_up["kwargs"] == {"follow_ups": tasks.FOLLOW_UPS - 1}
    assert follow_up["eta"] is not None


def test_it_stops_following_up_after_the_last_one_and_for_resync_passes(
    acme: Any, on_local: None, broker: Any
) -> None:
    deployment = make_deployment(acme)

    assert tasks.reconcile_deployment.apply(args=[deployment.pk], kwargs={"follow_ups": 0}).get() == "progressing"
    assert queued(broker, "deployments.reconcile_deployment") == []

    tasks.resync_all.apply().get()
    (resync_pass,) = queued(broker, "deployments.reconcile_deployment")
    assert resync_pass["kwargs"] == {"follow_ups": 0}


def test_it_does_not_follow_up_a_converged_pass(acme: Any, on_fakekube: FakeKubeServer, broker: Any) -> None:
    deployment = make_deployment(acme)

    assert tasks.reconcile_deployment.apply(args=[deployment.pk]).get() == "converged"
    assert queued(broker, "deployments.reconcile_deployment") == []


def test_it_reconciles_the_tenant_right_after_a_quota_change(
    acme: Any, on_fakekube: FakeKubeServer, broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    tasks.reconcile_tenant.apply(args=[acme.pk]).get()
    quota = Quota.objects.for_tenant(acme).get()

    with django_capture_on_commit_callbacks(execute=True):
        update_quota(quota, changes={"gpus": {"nvidia-h100": 3}}, actor=None)

    (message,) = queued(broker, "deployments.reconcile_tenant")
    assert message["args"] == [acme.pk]
    tasks.reconcile_tenant.apply(args=message["args"]).get()  # what the worker does with it
    resource_quota = on_fakekube.store.objects[("resourcequotas", "fd-acme", "frontdoor-quota")]
    assert resource_quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "6"  # 3, with the default headroom of 2


def test_it_sends_a_follow_up_back_to_the_queue_its_pass_came_from(broker: Any) -> None:
    queue = f"{broker.queue}-follow-up"
    broker.client.delete(broker.key(queue))

    tasks.send_follow_up(42, 3, queue=queue)

    (raw,) = broker.client.lrange(broker.key(queue), 0, -1)
    message = json.loads(raw)
    args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert (message["headers"]["task"], args, kwargs) == ("deployments.reconcile_deployment", [42], {"follow_ups": 3})
    assert broker.messages() == []  # not the default queue
    broker.client.delete(broker.key(queue))
