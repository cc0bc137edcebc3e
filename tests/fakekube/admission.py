"""What the API server does to an object between decoding a write and storing it.

- Defaults: the fields the real server fills in (``spec.replicas: 1``, ``revisionHistoryLimit``, the pod's
  ``restartPolicy``, ``dnsPolicy``, ``terminationMessagePath``, ``imagePullPolicy``, probe thresholds, a Service's
  ``clusterIP``, ``sessionAffinity`` and ``targetPort``, the ``kubernetes.io/metadata.name`` label of a namespace,
  the CRD defaults of an HTTPRoute's refs). Defaulting runs after server-side apply merged, so a field an applier
  drops comes back at its default (``spec.replicas`` at 1), as on a real cluster.
- Quantities in canonical form (``deployments.backends.quantity``): container ``requests``/``limits``, an
  ``emptyDir``'s ``sizeLimit``, a claim's storage, a quota's ``hard``, an HPA's targets; a malformed one is a 400.
- Empty optional fields left out, as Go's ``omitempty`` writes built-in types: an empty string, list or map
  (``data: {}``, ``env: []``, ``value: ""``) is not stored. Objects of a CRD are kept as sent.
- Checks beyond the schema: names and labels (``names.py``), a Deployment's selector matching its template and
  staying as created, a claim's spec staying as created except a larger storage request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from deployments.backends.quantity import QUANTITY_ERROR, QuantityError, canonical, parse_quantity
from tests.fakekube.kinds import Resource, bad_request
from tests.fakekube.names import (
    FieldError,
    forbidden_field,
    invalid,
    invalid_value,
    label_errors,
    metadata_errors,
    required,
)

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# Maps of Go type map[string]X: their entries are kept as they are, even empty strings.
_MAP_FIELDS = frozenset(
    {
        "labels",
        "annotations",
        "data",
        "stringData",
        "binaryData",
        "nodeSelector",
        "matchLabels",
        "requests",
        "limits",
        "hard",
        "used",
        "capacity",
        "allocatable",
        "allocatedResources",
    }
)


# ---------------------------------------------------------------- defaults


def _default_probe(probe: dict[str, Any]) -> None:
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)):
        probe.setdefault(key, value)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("scheme", "HTTP")


def _default_container(container: dict[str, Any]) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = str(container.get("image") or "")
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for key in ("startupProbe", "readinessProbe", "livenessProbe"):
        if isinstance(container.get(key), dict):
            _default_probe(container[key])


def default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                _default_container(container)
    for volume in spec.get("volumes") or []:
        if isinstance(volume, dict) and isinstance(volume.get("secret"), dict):
            volume["secret"].setdefault("defaultMode", 420)


def _default_deployment(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxSurge", "25%")
        rolling.setdefault("maxUnavailable", "25%")
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        default_pod_spec(template["spec"])


def _default_replicaset(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        default_pod_spec(template["spec"])


def _default_service(obj: dict[str, Any], allocate_ip: Callable[[], str]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        if not spec.get("clusterIP"):
            spec["clusterIP"] = allocate_ip()
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))


def _default_httproute(obj: dict[str, Any]) -> None:
    """The Gateway API CRD's schema defaults."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    for ref in spec.get("parentRefs") or []:
        if isinstance(ref, dict):
            ref.setdefault("group", "gateway.networking.k8s.io")
            ref.setdefault("kind", "Gateway")
    for rule in spec.get("rules") or []:
        if not isinstance(rule, dict):
            continue
        rule.setdefault("matches", [{"path": {"type": "PathPrefix", "value": "/"}}])
        for ref in rule.get("backendRefs") or []:
            if isinstance(ref, dict):
                ref.setdefault("group", "")
                ref.setdefault("kind", "Service")
                ref.setdefault("weight", 1)


def apply_defaults(resource: Resource, obj: dict[str, Any], allocate_ip: Callable[[], str]) -> None:
    """Fill in what the real server defaults, in place."""
    kind = resource.kind
    if kind == "Namespace":
        obj.setdefault("metadata", {}).setdefault("labels", {})[NAMESPACE_NAME_LABEL] = obj["metadata"]["name"]
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
    elif kind == "Deployment":
        _default_deployment(obj)
    elif kind == "ReplicaSet":
        _default_replicaset(obj)
    elif kind == "Pod":
        default_pod_spec(obj.setdefault("spec", {}))
    elif kind == "Service":
        _default_service(obj, allocate_ip)
    elif kind == "Secret":
        obj.setdefault("type", "Opaque")
    elif kind == "PersistentVolumeClaim":
        obj.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
    elif kind == "NetworkPolicy":
        spec = obj.setdefault("spec", {})
        if "policyTypes" not in spec:
            spec["policyTypes"] = ["Ingress", *(["Egress"] if spec.get("egress") else [])]
    elif kind == "HorizontalPodAutoscaler":
        obj.setdefault("spec", {}).setdefault("minReplicas", 1)
    elif kind == "HTTPRoute":
        _default_httproute(obj)


# ---------------------------------------------------------------- quantities


def _pod_quantity_maps(spec: Any) -> Iterator[tuple[dict[str, Any], str]]:
    if not isinstance(spec, dict):
        return
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            resources = container.get("resources") if isinstance(container, dict) else None
            if isinstance(resources, dict):
                for part in ("requests", "limits"):
                    if isinstance(resources.get(part), dict):
                        yield resources[part], ""
    if isinstance(spec.get("overhead"), dict):
        yield spec["overhead"], ""
    for volume in spec.get("volumes") or []:
        if isinstance(volume, dict) and isinstance(volume.get("emptyDir"), dict):
            yield volume["emptyDir"], "sizeLimit"


def _quantity_places(kind: str, obj: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """(map, key) pairs holding quantities; an empty key means every value of the map."""
    spec: dict[str, Any] = obj["spec"] if isinstance(obj.get("spec"), dict) else {}
    status: dict[str, Any] = obj["status"] if isinstance(obj.get("status"), dict) else {}
    if kind in ("Deployment", "ReplicaSet"):
        template = spec.get("template")
        if isinstance(template, dict):
            yield from _pod_quantity_maps(template.get("spec"))
    elif kind == "Pod":
        yield from _pod_quantity_maps(spec)
    elif kind == "PersistentVolumeClaim":
        resources = spec.get("resources")
        if isinstance(resources, dict):
            for part in ("requests", "limits"):
                if isinstance(resources.get(part), dict):
                    yield resources[part], ""
    elif kind == "ResourceQuota":
        for hard in (spec.get("hard"), status.get("hard"), status.get("used")):
            if isinstance(hard, dict):
                yield hard, ""
    elif kind == "Node":
        for amounts in (status.get("capacity"), status.get("allocatable")):
            if isinstance(amounts, dict):
                yield amounts, ""
    elif kind == "HorizontalPodAutoscaler":
        for metric in spec.get("metrics") or []:
            if not isinstance(metric, dict):
                continue
            for source in metric.values():
                target = source.get("target") if isinstance(source, dict) else None
                if isinstance(target, dict):
                    for key in ("value", "averageValue"):
                        if key in target:
                            yield target, key


def canonicalize_quantities(resource: Resource, obj: dict[str, Any]) -> None:
    """Rewrite every quantity in canonical form, in place; a malformed one is the decoder's 400."""
    for place, key in _quantity_places(resource.kind, obj):
        for name in [key] if key else list(place):
            if name not in place or place[name] is None:
                continue
            try:
                place[name] = canonical(place[name])
            except QuantityError as exc:
                raise bad_request(
                    f'{resource.kind} in version "{resource.version}" cannot be handled as a {resource.kind}: '
                    f"{QUANTITY_ERROR}"
                ) from exc


# ---------------------------------------------------------------- omitempty


def _prune(value: Any, path: tuple[str, ...], kind: str) -> Any:
    if isinstance(value, dict):
        key = path[-1] if path else ""
        is_map = key in _MAP_FIELDS or (kind == "Service" and path == ("spec", "selector"))
        if is_map:
            return {k: _prune(v, (*path, k), kind) if isinstance(v, dict | list) else v for k, v in value.items()}
        out = {}
        for k, v in value.items():
            pruned = _prune(v, (*path, k), kind)
            if pruned is None or pruned == "" or pruned == []:
                continue
            if pruned == {} and (k in _MAP_FIELDS or (kind == "Service" and (*path, k) == ("spec", "selector"))):
                continue
            out[k] = pruned
        return out
    if isinstance(value, list):
        return [_prune(item, path, kind) for item in value]
    return value


def drop_empty_fields(resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as Go's ``omitempty`` would write a built-in type: empty strings, lists and maps left out."""
    if not resource.builtin:
        return obj
    pruned: dict[str, Any] = _prune(obj, (), resource.kind)
    pruned.setdefault("metadata", {})
    return pruned


# ---------------------------------------------------------------- checks beyond the schema


def _selector_text(selector: Any) -> str:
    """A LabelSelector as Go's %#v prints it in the messages of these checks."""
    if not isinstance(selector, dict):
        return "nil"
    labels = selector.get("matchLabels") or {}
    shown = ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
    labels_text = f"map[string]string{{{shown}}}" if labels else "map[string]string(nil)"
    return f"v1.LabelSelector{{MatchLabels:{labels_text}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}}"


def _selects(selector: Any, labels: dict[str, str]) -> bool:
    if not isinstance(selector, dict):
        return False
    wanted = selector.get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in wanted.items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression.get("key"), expression.get("operator"), set(expression.get("values") or [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return bool(wanted or selector.get("matchExpressions"))


def _workload_errors(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    errors: list[FieldError] = []
    if not isinstance(selector, dict):
        errors.append(required("spec.selector"))
    else:
        errors += label_errors(selector.get("matchLabels"), "spec.selector.matchLabels")
        if not _selects(selector, template_labels):
            errors.append(
                invalid_value(
                    "spec.template.metadata.labels",
                    template_labels,
                    "`selector` does not match template `labels`",
                )
            )
    errors += label_errors(template_labels, "spec.template.metadata.labels")
    if old is not None and (old.get("spec") or {}).get("selector") != selector:
        errors.append(FieldError("spec.selector", "Invalid value", _selector_text(selector), "field is immutable"))
    return errors


def _claim_errors(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    if old is None:
        return []
    new_spec, old_spec = dict(obj.get("spec") or {}), dict(old.get("spec") or {})
    new_storage = ((new_spec.get("resources") or {}).get("requests") or {}).get("storage")
    old_storage = ((old_spec.get("resources") or {}).get("requests") or {}).get("storage")
    for spec in (new_spec, old_spec):
        spec.pop("resources", None)
        spec.pop("volumeName", None)
        spec.pop("volumeAttributesClassName", None)
    if new_spec != old_spec:
        return [
            forbidden_field(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound "
                "claims",
            )
        ]
    if (
        new_storage is not None
        and old_storage is not None
        and parse_quantity(new_storage) < parse_quantity(old_storage)
    ):
        return [forbidden_field("spec.resources.requests.storage", "field can not be less than status.capacity")]
    return []


def check_write(resource: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Raise the 422 ``Invalid`` the real server answers for what its validation refuses beyond the schema."""
    meta = obj.get("metadata") or {}
    errors = metadata_errors(resource, meta)
    if resource.kind in ("Deployment", "ReplicaSet"):
        errors += _workload_errors(obj, old)
    elif resource.kind == "Service":
        errors += label_errors((obj.get("spec") or {}).get("selector"), "spec.selector")
    elif resource.kind == "PersistentVolumeClaim":
        errors += _claim_errors(obj, old)
    if errors:
        raise invalid(resource, str(meta.get("name") or ""), errors)
