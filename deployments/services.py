"""The one place that changes model deployments; the REST API and the console both call these functions.

Each function runs in one transaction (nothing half-written on failure), checks the tenant's quota under the
quota row lock where the change asks for more capacity, writes an audit event, bumps ``generation`` when the
reconciler must act, and enqueues a reconcile that is sent only once the transaction commits. No I/O with
backends happens here: the reconciler does that.

Every function takes the acting principal as ``actor`` (keyword-only and required: ``None`` is the system, e.g. a
rollout step or a management command) and the request's id as ``request_id`` for the audit event, the convention
of every service. Refusals are ``controlplane.domain_errors``: invalid input is ``Invalid`` with field messages,
a quota refusal ``QuotaExceeded``, a change to a deployment being deleted ``Deleting``; each front end gives them
its own status.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from controlplane.access import Principal
from controlplane.audit import diff_fields, record_audit
from controlplane.contracts.addresses import AddressRefused, split_url
from controlplane.contracts.protocols import default_protocol, protocol_refusal
from controlplane.contracts.replica_env import args_errors, env_errors
from controlplane.domain_errors import Deleting, Invalid, RolloutConflict
from deployments import network
from deployments.models import REVISION_SPEC_FIELDS, DeploymentEvent, ModelDeployment, Revision, Rollout, Runtime
from deployments.models.deployment import spec_protocol
from deployments.reconcile.enqueue import enqueue_reconcile
from deployments.secrets import secret_reference_errors
from deployments.sizing import SIZING_FIELDS
from quotas.admission import admit_deployment, lock_quota, pod_footprint
from tenants.models import Tenant

# Fields a tenant may set on a deployment. Everything else (status, generation, replicas observed...) is ours.
WRITABLE_FIELDS = (
    "name",
    "runtime",
    "model",
    "image",
    "args",
    "env",
    "secret_env",
    "upstream_key_secret",
    "endpoints",
    "protocol",
    "image_generation",
    "gpu_type",
    "gpu_count",
    "min_replicas",
    "max_replicas",
    "autoscaler_class",
    "target_concurrency",
    "slo_p95_latency_ms",
    "slo_error_rate",
    "timeout_s",
    "max_concurrent_requests",
    *SIZING_FIELDS,
    "cold_start_timeout_s",
    "scale_to_zero_grace_s",
    "desired_state",
)
# Read by the SLO collector from Postgres; changing them needs no reconcile.
_SLO_FIELDS = frozenset({"slo_p95_latency_ms", "slo_error_rate"})
# Fields whose change may ask for more capacity.
_CAPACITY_FIELDS = frozenset({"runtime", "gpu_type", "gpu_count", "max_replicas", "desired_state", *SIZING_FIELDS})
# Fields whose change means the endpoints must pass the address policy again (a name is resolved then).
_ENDPOINT_FIELDS = frozenset({"endpoints", "runtime"})
# Why a revision of another protocol than its deployment's never takes traffic: the gateway routes a deployment's
# requests by the deployment's protocol, to every revision that has weight.
_ONE_PROTOCOL = "a deployment is routed by one protocol, so a revision that changes it takes all traffic"


def validate_deployment(deployment: ModelDeployment, changed: Collection[str] | None = None) -> None:
    """Every rule a deployment must satisfy before it is saved; raises ``Invalid`` with field messages.

    ``changed`` names the fields an update changes (None: a new deployment). The endpoints' addresses are checked
    when they or the runtime change, not on every scale: a name that stopped resolving must not block a scale, and
    the gateway checks every address again before it connects.
    """
    errors: dict[str, list[str]] = {}
    # A name cannot change, so an update does not check it again: a deployment named before today's name rules
    # (one starting with a digit, which runs on the local backend) can still be scaled, changed and stopped.
    exclude = ["tenant", "created_by"] if changed is None else ["tenant", "created_by", "name"]
    try:
        deployment.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            errors.setdefault(name, []).extend(messages)

    def add(field: str, message: str) -> None:
        if message not in errors.setdefault(field, []):
            errors[field].append(message)

    if deployment.desired_state == ModelDeployment.DesiredState.DELETING and deployment.pk is None:
        add("desired_state", "a new deployment cannot start out deleting")
    if deployment.runtime == Runtime.EXTERNAL:
        if not deployment.endpoints:
            add("endpoints", "runtime 'external' needs at least one endpoint URL")
        if deployment.gpu_count:
            add("gpu_count", "runtime 'external' runs no replicas here, so it takes no GPUs")
        if deployment.secret_env:
            add("secret_env", "runtime 'external' runs no replicas here; its upstream key is upstream_key_secret")
        for name in SIZING_FIELDS:
            if getattr(deployment, name) is not None:
                add(name, "runtime 'external' runs no replicas here, so it takes no sizing")
    elif deployment.endpoints:
        add("endpoints", f"endpoints are only for runtime 'external'; runtime {deployment.runtime!r} runs replicas")
    check_addresses = changed is None or bool(_ENDPOINT_FIELDS & set(changed))
    for message in _endpoint_errors(deployment, check_addresses=check_addresses):
        add("endpoints", message)
    # On the local backend a replica is a process on the platform's host: the env and args that would run code
    # there are refused. On Kubernetes the tenant's image is its own, so only the reserved flags apply.
    local = settings.FRONTDOOR_BACKEND == "local"
    for message in args_errors(deployment.args, local=local):
        add("args", message)
    for message in env_errors(deployment.env, local=local):
        add("env", message)
    if isinstance(deployment.secret_env, dict):
        for message in env_errors({name: "" for name in deployment.secret_env}, local=local):
            add("secret_env", message)
    for field, messages in secret_reference_errors(deployment).items():
        for message in messages:
            add(field, message)
    per_node = settings.FRONTDOOR_K8S_GPUS_PER_NODE
    if settings.FRONTDOOR_BACKEND == "kubernetes" and deployment.gpus_per_replica > per_node:
        add(
            "gpu_count",
            f"a replica runs on one node, and a node has {per_node} GPUs (FRONTDOOR_K8S_GPUS_PER_NODE): "
            f"{deployment.gpu_count} per replica would never be scheduled; use tensor parallelism within {per_node}",
        )
    if deployment.gpu_type and deployment.gpu_type not in settings.FRONTDOOR_GPU_TYPES:
        add("gpu_type", f"unknown GPU type {deployment.gpu_type!r}; known: {', '.join(settings.FRONTDOOR_GPU_TYPES)}")
    if errors := {name: messages for name, messages in errors.items() if messages}:
        raise Invalid(errors)


def _endpoint_errors(deployment: ModelDeployment, *, check_addresses: bool) -> Iterable[str]:
    """Why the endpoints are refused: not http(s) URLs, or (``check_addresses``) not addresses we may reach."""
    endpoints = deployment.endpoints
    if not isinstance(endpoints, list):
        yield "must be a list of http(s) URLs"
        return
    parsed: list[str] = []
    for url in endpoints:
        try:
            split_url(url)
        except AddressRefused as exc:
            yield f"{url!r}: {exc}"
            continue
        parsed.append(url)
    if not check_addresses or not parsed or deployment.runtime != Runtime.EXTERNAL:
        return  # endpoints on another runtime are refused above, without resolving them
    policy = network.endpoint_policy(deployment.pk)
    for url in parsed:
        try:
            network.check_endpoint(url, policy)
        except AddressRefused as exc:
            yield f"{url!r}: {exc}"


def _check_name_free(tenant: Tenant, name: str) -> None:
    if ModelDeployment.objects.for_tenant(tenant).filter(name=name).exists():
        raise Invalid({"name": [f"a deployment named {name!r} already exists in this tenant"]})


def _lock_deployment(deployment: ModelDeployment) -> ModelDeployment:
    """Re-read the deployment under a row lock (two concurrent PATCHes would otherwise lose one's changes)."""
    return ModelDeployment.objects.for_tenant(deployment.tenant_id).select_for_update().get(pk=deployment.pk)


def _clamp_desired(deployment: ModelDeployment, current: int | None) -> int:
    """Replicas to run: the current figure kept within [min, max]; a new deployment starts at max(min, 1)."""
    wanted = max(deployment.min_replicas, 1) if current is None else current
    return min(max(wanted, deployment.min_replicas), deployment.max_replicas)


def _admit(deployment: ModelDeployment, replacing: ModelDeployment | None) -> None:
    if deployment.desired_state == ModelDeployment.DesiredState.DELETING:
        return
    cpu_cores, memory_gib = pod_footprint(deployment)
    admit_deployment(
        deployment.tenant,
        gpu_type=deployment.gpu_type,
        gpu_count=deployment.gpu_count,
        max_replicas=deployment.max_replicas,
        cpu_cores=cpu_cores,
        memory_gib=memory_gib,
        replacing=replacing,
    )


def split_weights(previous: Mapping[int, int], new_weight: int) -> dict[int, int]:
    """Weights of the previous revisions after a new one takes ``new_weight``: the rest, kept proportional.

    Largest-remainder rounding, so the result plus ``new_weight`` sums to exactly 100.
    """
    serving = {number: weight for number, weight in previous.items() if weight > 0}
    total = sum(serving.values())
    rest = 100 - new_weight
    result = dict.fromkeys(previous, 0)
    if total == 0 or rest == 0:
        return result
    exact = {number: rest * weight / total for number, weight in serving.items()}
    floors = {number: int(value) for number, value in exact.items()}
    short = rest - sum(floors.values())
    by_remainder = sorted(serving, key=lambda n: (-(exact[n] - floors[n]), -n))
    for number in by_remainder[:short]:
        floors[number] += 1
    result.update(floors)
    return result


def _new_revision(deployment: ModelDeployment, number: int, weight: int) -> Revision:
    return Revision.unscoped_objects.create(
        deployment=deployment, number=number, spec=deployment.revision_spec(), weight=weight
    )


@transaction.atomic
def create_deployment(
    tenant: Tenant, data: Mapping[str, Any], *, actor: Principal | None, request_id: str = ""
) -> ModelDeployment:
    """Create a deployment with its first revision (all traffic), within the tenant's quota."""
    unknown = set(data) - set(WRITABLE_FIELDS)
    if unknown:
        raise Invalid({name: ["this field cannot be set"] for name in sorted(unknown)})
    lock_quota(tenant)  # first, so concurrent creates of one tenant are admitted one at a time
    deployment = ModelDeployment(tenant=tenant, **data)
    if "protocol" not in data:
        deployment.protocol = default_protocol(deployment.runtime)
    deployment.created_by_id = actor.user_id if actor is not None else None
    validate_deployment(deployment)
    _check_name_free(tenant, deployment.name)
    _admit(deployment, replacing=None)
    deployment.desired_replicas = _clamp_desired(deployment, None)
    deployment.status = ModelDeployment.Status.PENDING
    deployment.save()  # IntegrityError on a concurrent same-name create: the API answers 409
    _new_revision(deployment, 1, 100)
    DeploymentEvent.record(deployment, "Created", f"revision r1 takes 100% of traffic ({deployment.model})")
    record_audit(
        actor,
        tenant,
        "deployment.create",
        deployment,
        {name: getattr(deployment, name) for name in data},
        request_id=request_id,
    )
    enqueue_reconcile(deployment.pk)
    return deployment


@transaction.atomic
def update_deployment(
    deployment: ModelDeployment,
    data: Mapping[str, Any],
    *,
    canary_weight: int | None = None,
    actor: Principal | None,
    request_id: str = "",
) -> ModelDeployment:
    """Change a deployment. A change to a spec field makes a new revision that takes all traffic, or
    ``canary_weight`` percent with the previous serving revisions keeping the rest proportionally."""
    unknown = set(data) - set(WRITABLE_FIELDS)
    if unknown:
        raise Invalid({name: ["this field cannot be set"] for name in sorted(unknown)})
    if "name" in data and data["name"] != deployment.name:
        raise Invalid({"name": ["a deployment cannot be renamed; create a new one"]})
    if data.get("desired_state") == ModelDeployment.DesiredState.DELETING:
        raise Invalid({"desired_state": ["use DELETE to delete a deployment"]})
    if canary_weight is not None and not 0 <= canary_weight <= 100:
        raise Invalid({"rollout": ["canary_weight must be between 0 and 100"]})
    lock_quota(deployment.tenant)
    current = _lock_deployment(deployment)
    if current.desired_state == ModelDeployment.DesiredState.DELETING:
        raise Deleting()
    stored = copy.copy(current)
    wanted = _with_followed_protocol(current, {name: value for name, value in data.items() if name != "name"})
    changes = diff_fields(current, wanted)
    if not changes:
        return current
    for name in changes:
        setattr(current, name, wanted[name])
    validate_deployment(current, changes)
    if "protocol" in changes and canary_weight is not None and canary_weight < 100:
        raise Invalid({"rollout": [_ONE_PROTOCOL]})
    if _CAPACITY_FIELDS & set(changes):
        _admit(current, replacing=stored)
    current.desired_replicas = _clamp_desired(current, current.desired_replicas)
    spec_changed = bool(set(REVISION_SPEC_FIELDS) & set(changes))
    if spec_changed:
        _refuse_while_rolling_out(current)  # a new revision would take traffic the rollout is moving
    if set(changes) - _SLO_FIELDS:
        current.generation += 1
    current.save()
    if spec_changed:
        _roll_out_new_revision(current, canary_weight)
    record_audit(actor, current.tenant, "deployment.update", current, changes, request_id=request_id)
    if set(changes) - _SLO_FIELDS:
        enqueue_reconcile(current.pk)
    return current


def _with_followed_protocol(deployment: ModelDeployment, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data``, with the protocol of the new runtime when it changes the runtime, names no protocol and the current
    one is not allowed any more (triton speaks v2 only, vLLM and TGI OpenAI only). Only a runtime that speaks one
    protocol refuses the current one, so the protocol that follows is never a guess."""
    wanted = dict(data)
    runtime = wanted.get("runtime", deployment.runtime)
    if "protocol" not in wanted and runtime != deployment.runtime and protocol_refusal(runtime, deployment.protocol):
        wanted["protocol"] = default_protocol(runtime)
    return wanted


def _set_weight(revision: Revision, weight: int) -> None:
    # save(), not QuerySet.update(): the post_save signal republishes the gateway's routing snapshot on commit.
    if revision.weight != weight:
        revision.weight = weight
        revision.save(update_fields=["weight"])


def _roll_out_new_revision(deployment: ModelDeployment, canary_weight: int | None) -> Revision:
    revisions = list(Revision.unscoped_objects.filter(deployment=deployment).order_by("number"))
    new_weight = 100 if canary_weight is None else canary_weight
    previous = {revision.number: revision.weight for revision in revisions}
    if not any(previous.values()):
        new_weight = 100  # nothing else serves: the new revision must, or the deployment would route nowhere
    kept = split_weights(previous, new_weight)
    for revision in revisions:
        _set_weight(revision, kept[revision.number])
    number = (revisions[-1].number if revisions else 0) + 1
    revision = _new_revision(deployment, number, new_weight)
    split = ", ".join(f"r{n}={w}" for n, w in sorted({**kept, number: new_weight}.items()) if w)
    DeploymentEvent.record(deployment, "RevisionCreated", f"revision r{number}; traffic {split}")
    return revision


@transaction.atomic
def scale_deployment(
    deployment: ModelDeployment,
    *,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    actor: Principal | None,
    request_id: str = "",
) -> ModelDeployment:
    """Set the replica bounds (within the quota); the current replica count is kept within them."""
    data = {
        name: value
        for name, value in (("min_replicas", min_replicas), ("max_replicas", max_replicas))
        if value is not None
    }
    lock_quota(deployment.tenant)
    current = _lock_deployment(deployment)
    if current.desired_state == ModelDeployment.DesiredState.DELETING:
        raise Deleting()
    stored = copy.copy(current)
    changes = diff_fields(current, data)
    if not changes:
        return current
    for name in changes:
        setattr(current, name, data[name])
    validate_deployment(current, changes)
    _admit(current, replacing=stored)
    current.desired_replicas = _clamp_desired(current, current.desired_replicas)
    current.generation += 1
    current.save()
    DeploymentEvent.record(current, "Scaled", f"replicas {current.min_replicas}..{current.max_replicas}")
    record_audit(actor, current.tenant, "deployment.scale", current, changes, request_id=request_id)
    enqueue_reconcile(current.pk)
    return current


@transaction.atomic
def set_traffic(
    deployment: ModelDeployment,
    weights: Mapping[int, int],
    *,
    actor: Principal | None,
    request_id: str = "",
    by_rollout: bool = False,
) -> ModelDeployment:
    """Set the traffic split by revision number; revisions left out get 0. Weights must sum to 100.

    While a rollout runs, only the rollout itself (``by_rollout``) sets the split: a change by hand is refused.
    """
    current = _lock_deployment(deployment)
    if current.desired_state == ModelDeployment.DesiredState.DELETING:
        raise Deleting()
    if not by_rollout:
        _refuse_while_rolling_out(current)
    revisions = {r.number: r for r in Revision.unscoped_objects.filter(deployment=current)}
    problems = [f"there is no revision r{number}" for number in sorted(set(weights) - set(revisions))]
    problems += [f"r{n}: weight {w} is not between 0 and 100" for n, w in sorted(weights.items()) if not 0 <= w <= 100]
    problems += [
        f"r{n} serves {spec_protocol(revisions[n].spec)!r}, the deployment speaks {current.protocol!r}: {_ONE_PROTOCOL}"
        for n, w in sorted(weights.items())
        if w > 0 and n in revisions and spec_protocol(revisions[n].spec) != current.protocol
    ]
    if not problems and sum(weights.values()) != 100:
        problems.append(f"weights must sum to 100, not {sum(weights.values())}")
    if problems:
        raise Invalid({"weights": problems})
    wanted = {number: weights.get(number, 0) for number in revisions}
    changes = {f"r{n}": [revisions[n].weight, w] for n, w in wanted.items() if revisions[n].weight != w}
    if not changes:
        return current
    for number, weight in wanted.items():
        _set_weight(revisions[number], weight)
    current.generation += 1
    current.save(update_fields=["generation", "updated_at"])
    split = ", ".join(f"r{n}={w}" for n, w in sorted(wanted.items()) if w)
    DeploymentEvent.record(current, "TrafficChanged", f"traffic {split}")
    record_audit(actor, current.tenant, "deployment.traffic", current, {"weights": changes}, request_id=request_id)
    enqueue_reconcile(current.pk)
    return current


def _refuse_while_rolling_out(deployment: ModelDeployment) -> None:
    """``RolloutConflict`` while a rollout of the deployment runs (it sets the traffic itself, step by step).

    Called under the deployment's row lock, which the rollout's steps take too: a step and a change by hand never
    interleave.
    """
    running = (
        Rollout.unscoped_objects.filter(deployment=deployment, status=Rollout.Status.RUNNING)
        .select_related("revision")
        .first()
    )
    if running is not None:
        raise RolloutConflict(
            f"A rollout of {running.revision.name} is running and sets the traffic itself: "
            "promote, pause or roll it back first."
        )


@transaction.atomic
def delete_deployment(deployment: ModelDeployment, *, actor: Principal | None, request_id: str = "") -> ModelDeployment:
    """Mark the deployment for deletion; the reconciler removes its objects, then the row. Deleting twice is fine."""
    current = _lock_deployment(deployment)
    if current.desired_state != ModelDeployment.DesiredState.DELETING:
        changes = diff_fields(current, {"desired_state": ModelDeployment.DesiredState.DELETING})
        current.desired_state = ModelDeployment.DesiredState.DELETING
        current.status = ModelDeployment.Status.DELETING
        current.generation += 1
        current.save(update_fields=["desired_state", "status", "generation", "updated_at"])
        DeploymentEvent.record(current, "Deleting", "deletion requested")
        record_audit(actor, current.tenant, "deployment.delete", current, changes, request_id=request_id)
    enqueue_reconcile(current.pk)  # again on a repeated delete: a nudge costs nothing, the task is idempotent
    return current
