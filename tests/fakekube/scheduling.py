"""What a pod asks for, the ResourceQuota admission of a new pod, and the scheduler's choice of a node.

Quota: a pod is refused (403) when its requests would take the namespace past a ResourceQuota's ``hard``, with
the admission plugin's message: ``pods "x" is forbidden: exceeded quota: frontdoor-quota, requested:
requests.nvidia.com/gpu=4, used: requests.nvidia.com/gpu=8, limited: requests.nvidia.com/gpu=8``. Pods count until
they are gone (a terminating one too), as the quota's evaluator counts them within their grace period.

Scheduling: the default scheduler's filters in order (node unschedulable, taints the pod does not tolerate, node
selector and required node affinity, then resources: every request that does not fit, and the pod count), the
least allocated feasible node, and for a pod that fits nowhere the scheduler's message, reasons counted per node
and sorted: ``0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: 0/2 nodes are available: 2 No
preemption victims found for incoming pod..`` (the preemption clause is the default preemption plugin's).
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import Any

from deployments.backends.quantity import (
    BINARY,
    DECIMAL,
    QuantityError,
    format_quantity,
    parse_quantity,
    quantity_format,
)

_COMPUTE = ("cpu", "memory", "ephemeral-storage")


def _parse(value: Any) -> Fraction:
    try:
        return parse_quantity(value)
    except QuantityError:
        return Fraction(0)


def _container_requests(container: dict[str, Any]) -> dict[str, Fraction]:
    resources = container.get("resources") or {}
    requests = dict(resources.get("limits") or {})  # limits without requests: requests default to them
    requests.update(resources.get("requests") or {})
    return {name: _parse(value) for name, value in requests.items()}


def _container_limits(container: dict[str, Any]) -> dict[str, Fraction]:
    return {name: _parse(v) for name, v in ((container.get("resources") or {}).get("limits") or {}).items()}


def _effective(spec: dict[str, Any], per_container: Any) -> dict[str, Fraction]:
    """Containers add up; an init container runs alone, so the pod needs at least the largest of them."""
    total: dict[str, Fraction] = {}
    for container in spec.get("containers") or []:
        for name, amount in per_container(container).items():
            total[name] = total.get(name, Fraction(0)) + amount
    for container in spec.get("initContainers") or []:
        for name, amount in per_container(container).items():
            total[name] = max(total.get(name, Fraction(0)), amount)
    for name, value in (spec.get("overhead") or {}).items():
        total[name] = total.get(name, Fraction(0)) + _parse(value)
    return total


def pod_requests(pod: dict[str, Any]) -> dict[str, Fraction]:
    return _effective(pod.get("spec") or {}, _container_requests)


def quota_usage(pod: dict[str, Any]) -> dict[str, Fraction]:
    """What a pod counts against a ResourceQuota, by the quota's resource names."""
    spec = pod.get("spec") or {}
    usage: dict[str, Fraction] = {"pods": Fraction(1), "count/pods": Fraction(1)}
    for name, amount in _effective(spec, _container_requests).items():
        usage[f"requests.{name}"] = amount
        if name in _COMPUTE:
            usage[name] = amount
    for name, amount in _effective(spec, _container_limits).items():
        usage[f"limits.{name}"] = amount
    return usage


def counts_against_quota(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _format(amount: Fraction, like: str) -> str:
    try:
        fmt = quantity_format(like)
    except QuantityError:
        fmt = DECIMAL
    return format_quantity(amount, BINARY if fmt == BINARY else DECIMAL)


def quota_refusal(quota: dict[str, Any], used: dict[str, Fraction], pod: dict[str, Any]) -> str | None:
    """The admission plugin's reason to refuse ``pod`` under ``quota``, or None when it fits."""
    hard = (quota.get("spec") or {}).get("hard") or {}
    usage = quota_usage(pod)
    requested = {name: usage[name] for name in hard if name in usage}
    exceeded = sorted(n for n, amount in requested.items() if used.get(n, Fraction(0)) + amount > _parse(hard[n]))
    if not exceeded:
        return None

    def pretty(values: dict[str, Fraction]) -> str:
        return ",".join(f"{n}={_format(values.get(n, Fraction(0)), str(hard[n]))}" for n in exceeded)

    return (
        f"exceeded quota: {quota['metadata']['name']}, requested: {pretty(requested)}, used: {pretty(used)}, "
        f"limited: {','.join(f'{n}={hard[n]}' for n in exceeded)}"
    )


# ---------------------------------------------------------------- the scheduler


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for toleration in tolerations:
        effect = toleration.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        key = toleration.get("key") or ""
        if toleration.get("operator") == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif key == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _matches_term(labels: dict[str, str], term: dict[str, Any]) -> bool:
    for expression in term.get("matchExpressions") or []:
        key, op, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        has = key in labels
        if op == "In" and not (has and labels[key] in values):
            return False
        if op == "NotIn" and has and labels[key] in values:
            return False
        if op == "Exists" and not has:
            return False
        if op == "DoesNotExist" and has:
            return False
    return True


def selects_node(spec: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if affinity:
        return any(_matches_term(labels, term) for term in affinity.get("nodeSelectorTerms") or [])
    return True


def _taint_text(taint: dict[str, Any]) -> str:
    return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"


_ALLOCATABLE: dict[tuple[str, str], dict[str, Fraction]] = {}


def allocatable_of(node: dict[str, Any]) -> dict[str, Fraction]:
    """A node's allocatable resources, parsed once per version of the node."""
    key = (node["metadata"].get("uid", ""), node["metadata"].get("resourceVersion", ""))
    if key not in _ALLOCATABLE:
        if len(_ALLOCATABLE) > 10_000:
            _ALLOCATABLE.clear()
        _ALLOCATABLE[key] = {k: _parse(v) for k, v in ((node.get("status") or {}).get("allocatable") or {}).items()}
    return _ALLOCATABLE[key]


def node_reasons(
    pod: dict[str, Any],
    node: dict[str, Any],
    used: dict[str, Fraction],
    pods_on_node: int,
    requests: dict[str, Fraction] | None = None,
) -> tuple[list[str], bool]:
    """Why ``pod`` (asking for ``requests``) does not fit ``node`` (empty when it does), and whether evicting others
    could help."""
    spec = pod.get("spec") or {}
    tolerations = spec.get("tolerations") or []
    node_spec = node.get("spec") or {}
    if node_spec.get("unschedulable") and not tolerates(
        tolerations, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    ):
        return ["node(s) were unschedulable"], False
    for taint in node_spec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return [_taint_text(taint)], False
    if not selects_node(spec, (node.get("metadata") or {}).get("labels") or {}):
        return ["node(s) didn't match Pod's node affinity/selector"], False
    allocatable = allocatable_of(node)
    reasons = []
    if pods_on_node + 1 > allocatable.get("pods", Fraction(110)):
        reasons.append("Too many pods")
    for name, amount in sorted((pod_requests(pod) if requests is None else requests).items()):
        if amount > 0 and used.get(name, Fraction(0)) + amount > allocatable.get(name, Fraction(0)):
            reasons.append(f"Insufficient {name}")
    return reasons, True


def least_allocated_score(node: dict[str, Any], used: dict[str, Fraction], requests: dict[str, Fraction]) -> Fraction:
    """The default scoring's idea: the share of CPU and memory left free once the pod is placed."""
    allocatable = allocatable_of(node)
    score = Fraction(0)
    for name in ("cpu", "memory"):
        total = allocatable.get(name, Fraction(0))
        if total > 0:
            score += (total - used.get(name, Fraction(0)) - requests.get(name, Fraction(0))) / total
    return score


def unschedulable_message(
    node_count: int, reasons: list[list[str]], helpful: list[bool], with_preemption: bool = True
) -> str:
    """The scheduler's ``FitError`` text for a pod no node could take."""
    if node_count == 0:
        return "no nodes available to schedule pods"
    counts = Counter(reason for node in reasons for reason in node)
    message = f"0/{node_count} nodes are available: " + ", ".join(sorted(f"{n} {r}" for r, n in counts.items())) + "."
    if with_preemption:
        victims = Counter(
            "No preemption victims found for incoming pod" if h else "Preemption is not helpful for scheduling"
            for h in helpful
        )
        detail = ", ".join(sorted(f"{n} {r}" for r, n in victims.items()))
        message += f" preemption: 0/{node_count} nodes are available: {detail}.."
    return message
