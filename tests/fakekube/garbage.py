"""The garbage collector and pod termination: what a delete does to an object's dependents and to a pod.

A deleted owner takes its dependents along (``cascade``; pods terminate gracefully), or leaves them without the
owner reference (``orphan``, for ``propagationPolicy: Orphan``). A pod deleted with a grace period first only gets
its ``deletionTimestamp`` (``terminate``): the kubelet removes it at its next step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakekube.store import Store


def terminate(store: Store, namespace: str, pod: dict[str, Any], grace_s: int | None) -> dict[str, Any]:
    if "deletionTimestamp" in pod["metadata"]:
        return pod
    grace = grace_s if grace_s is not None else int((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
    meta = {**pod["metadata"], "deletionTimestamp": store.timestamp(), "deletionGracePeriodSeconds": grace}
    store.version += 1
    meta["resourceVersion"] = str(store.version)
    terminating = {**pod, "metadata": meta}
    store._put("pods", namespace, meta["name"], terminating)
    return terminating


def children(store: Store, namespace: str, uid: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for (plural, ns), objs in list(store.index.items()):
        if ns != namespace:
            continue
        for child in list(objs.values()):
            if any(o.get("uid") == uid for o in child.get("metadata", {}).get("ownerReferences") or []):
                found.append((plural, child))
    return found


def cascade(store: Store, namespace: str, uid: str) -> None:
    """Dependents go too (pods gracefully), and theirs."""
    for plural, child in children(store, namespace, uid):
        if plural == "pods":
            terminate(store, namespace, child, None)
            continue
        if store._remove(plural, namespace, child["metadata"]["name"]) is not None:
            cascade(store, namespace, child["metadata"]["uid"])


def orphan(store: Store, namespace: str, uid: str) -> None:
    for plural, child in children(store, namespace, uid):
        owners = [o for o in child["metadata"].get("ownerReferences") or [] if o.get("uid") != uid]
        meta = {k: v for k, v in child["metadata"].items() if k != "ownerReferences"}
        if owners:
            meta["ownerReferences"] = owners
        store.write_internal(plural, namespace, {**child, "metadata": meta})
