"""The Deployment controller, as ``kube-controller-manager`` runs it.

One ReplicaSet per pod template, named ``<deployment>-<template hash>`` (the hash as the real controller computes
it: FNV-32a of the template, its decimal digits mapped onto ``bcdfghjklmnpqrstvwxz2456789``), labelled and selected
with ``pod-template-hash``, owned by the Deployment, carrying the revision annotations. A RollingUpdate surges the
new ReplicaSet up to ``replicas + maxSurge`` pods and takes old ones down as far as ``replicas - maxUnavailable``
available pods allow (unhealthy old pods first); Recreate takes every old pod down first. Status: ``replicas``,
``updatedReplicas``, ``readyReplicas``, ``availableReplicas``, ``unavailableReplicas``, ``observedGeneration``, and
the conditions ``Available``, ``Progressing`` (with ``ProgressDeadlineExceeded`` once no progress is seen for
``progressDeadlineSeconds``) and ``ReplicaFailure`` copied from the new ReplicaSet. Old ReplicaSets beyond
``revisionHistoryLimit`` are deleted.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from tests.fakekube.kinds import ApiError
from tests.fakekube.workloads import (
    DESIRED,
    HASH_LABEL,
    MANAGER,
    MAX_REPLICAS,
    REVISION,
    controller_of,
    owner_ref,
    resolve,
    set_condition,
    template_hash,
)

if TYPE_CHECKING:
    from tests.fakekube.controller import Controller


def _new_replicaset(deployment: dict[str, Any], template_key: str, revision: int, replicas: int) -> dict[str, Any]:
    spec = deployment["spec"]
    template = copy.deepcopy(spec["template"])
    template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = template_key
    selector = copy.deepcopy(spec["selector"])
    selector.setdefault("matchLabels", {})[HASH_LABEL] = template_key
    surge = resolve(((spec.get("strategy") or {}).get("rollingUpdate") or {}).get("maxSurge"), spec["replicas"], True)
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{deployment['metadata']['name']}-{template_key}",
            "labels": dict(template["metadata"]["labels"]),
            "annotations": {
                REVISION: str(revision),
                DESIRED: str(spec["replicas"]),
                MAX_REPLICAS: str(spec["replicas"] + surge),
            },
            "ownerReferences": [owner_ref(deployment)],
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": int(spec.get("minReadySeconds", 0)),
            "selector": selector,
            "template": template,
        },
    }


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    meta = template.get("metadata") or {}
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != HASH_LABEL}
    return {**template, "metadata": {**meta, "labels": labels}}


def _scale(ctl: Controller, namespace: str, deployment: dict[str, Any], rs: dict[str, Any], replicas: int) -> None:
    current = int(rs["spec"].get("replicas", 0))
    annotations = dict(rs["metadata"].get("annotations") or {})
    annotations[DESIRED] = str(deployment["spec"]["replicas"])
    if current == replicas and (rs["metadata"].get("annotations") or {}) == annotations:
        return
    scaled = {
        **rs,
        "spec": {**rs["spec"], "replicas": replicas},
        "metadata": {**rs["metadata"], "annotations": annotations},
    }
    ctl.store.write_internal("replicasets", namespace, scaled, manager=MANAGER)
    rs["spec"]["replicas"] = replicas  # this pass goes on with the new count
    if current != replicas:
        verb = "up" if replicas > current else "down"
        message = f"Scaled {verb} replica set {rs['metadata']['name']} from {current} to {replicas}"
        ctl.event(deployment, "Normal", "ScalingReplicaSet", message)


def _revision(rs: dict[str, Any]) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _rolling(
    ctl: Controller, namespace: str, d: dict[str, Any], new: dict[str, Any], old: list[dict[str, Any]]
) -> None:
    spec = d["spec"]
    replicas = int(spec["replicas"])
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    surge = resolve(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = resolve(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    everyone = [new, *old]
    # The new ReplicaSet: up to replicas + maxSurge pods in all, never past replicas of its own.
    new_count = int(new["spec"]["replicas"])
    if new_count > replicas:
        _scale(ctl, namespace, d, new, replicas)
    else:
        current = sum(int(rs["spec"]["replicas"]) for rs in everyone)
        room = min(replicas + surge - current, replicas - new_count)
        if room > 0:
            _scale(ctl, namespace, d, new, new_count + room)
    # The old ones: down as far as replicas - maxUnavailable available pods allow, unhealthy pods first.
    if not any(int(rs["spec"]["replicas"]) for rs in old):
        return
    min_available = replicas - unavailable
    new_unavailable = int(new["spec"]["replicas"]) - int((new.get("status") or {}).get("availableReplicas", 0))
    all_pods = sum(int(rs["spec"]["replicas"]) for rs in everyone)
    room = all_pods - min_available - new_unavailable
    if room <= 0:
        return
    oldest_first = sorted(old, key=lambda rs: (rs["metadata"]["creationTimestamp"], rs["metadata"]["name"]))
    for rs in oldest_first:
        wanted, available = int(rs["spec"]["replicas"]), int((rs.get("status") or {}).get("availableReplicas", 0))
        if room <= 0 or wanted <= available:
            continue
        down = min(room, wanted - available)
        _scale(ctl, namespace, d, rs, wanted - down)
        room -= down
    available_all = sum(int((rs.get("status") or {}).get("availableReplicas", 0)) for rs in everyone)
    budget = available_all - min_available
    for rs in oldest_first:
        wanted = int(rs["spec"]["replicas"])
        if budget <= 0:
            break
        if wanted == 0:
            continue
        down = min(wanted, budget)
        _scale(ctl, namespace, d, rs, wanted - down)
        budget -= down


def _recreate(
    ctl: Controller, namespace: str, d: dict[str, Any], new: dict[str, Any], old: list[dict[str, Any]]
) -> None:
    for rs in old:
        if int(rs["spec"]["replicas"]):
            _scale(ctl, namespace, d, rs, 0)
    if any(int((rs.get("status") or {}).get("replicas", 0)) for rs in old):
        return
    _scale(ctl, namespace, d, new, int(d["spec"]["replicas"]))


def sync_deployment(ctl: Controller, namespace: str, d: dict[str, Any], replicasets: list[dict[str, Any]]) -> None:
    store = ctl.store
    if "deletionTimestamp" in d["metadata"]:
        return
    spec = d["spec"]
    name = d["metadata"]["name"]
    uid = d["metadata"]["uid"]
    # Private copies of the specs: this pass scales them as it goes (stored objects never change in place).
    owned = [{**rs, "spec": dict(rs["spec"])} for rs in replicasets if controller_of(rs) == uid]
    template = spec["template"]
    key = template_hash(template, int((d.get("status") or {}).get("collisionCount", 0)))
    new = next((rs for rs in owned if _without_hash(rs["spec"]["template"]) == template), None)
    old = [rs for rs in owned if rs is not new]
    now = store.timestamp()
    created = False
    if new is None and not spec.get("paused"):
        revision = max((_revision(rs) for rs in old), default=0) + 1
        is_first = not any(int(rs["spec"]["replicas"]) for rs in old)
        strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
        replicas = int(spec["replicas"]) if is_first and strategy == "RollingUpdate" else 0
        try:
            created_rs = store.create(
                "replicasets",
                namespace,
                _new_replicaset(d, key, revision, replicas),
                manager=MANAGER,
                validate=False,
                settle=False,
            )
            new = {**created_rs, "spec": dict(created_rs["spec"])}
        except ApiError:  # a ReplicaSet of that name with another template: hash again with one more collision
            collisions = int((d.get("status") or {}).get("collisionCount", 0)) + 1
            store.write_status(
                "deployments", namespace, name, {**(d.get("status") or {}), "collisionCount": collisions}
            )
            return
        created = True
        if replicas:
            ctl.event(
                d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled up replica set {new['metadata']['name']} from 0 to {replicas}",
            )
    if new is not None and not spec.get("paused"):
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            _recreate(ctl, namespace, d, new, old)
        else:
            _rolling(ctl, namespace, d, new, old)
        if _revision(new) <= max((_revision(rs) for rs in old), default=0):
            bumped = copy.deepcopy(new)
            bumped["metadata"]["annotations"][REVISION] = str(max(_revision(rs) for rs in old) + 1)
            new = store.write_internal("replicasets", namespace, bumped, manager=MANAGER)
        _clean_history(ctl, namespace, d, old)
        annotations = dict(d["metadata"].get("annotations") or {})
        if annotations.get(REVISION) != str(_revision(new)):
            annotations[REVISION] = str(_revision(new))
            updated = copy.deepcopy(d)
            updated["metadata"]["annotations"] = annotations
            d = store.write_internal("deployments", namespace, updated, manager=MANAGER)
    _deployment_status(ctl, namespace, d, new, old, created, now)


def _clean_history(ctl: Controller, namespace: str, d: dict[str, Any], old: list[dict[str, Any]]) -> None:
    limit = int(d["spec"].get("revisionHistoryLimit", 10))
    idle = [
        rs for rs in old if not int(rs["spec"]["replicas"]) and not int((rs.get("status") or {}).get("replicas", 0))
    ]
    for rs in sorted(idle, key=_revision)[: max(0, len(idle) - limit)]:
        ctl.remove_replicaset(namespace, rs)


def _deployment_status(
    ctl: Controller,
    namespace: str,
    d: dict[str, Any],
    new: dict[str, Any] | None,
    old: list[dict[str, Any]],
    created: bool,
    now: str,
) -> None:
    store = ctl.store
    spec = d["spec"]
    replicas = int(spec["replicas"])
    everyone = ([new] if new else []) + old
    previous = d.get("status") or {}

    def total(key: str) -> int:
        return sum(int((rs.get("status") or {}).get(key, 0)) for rs in everyone)

    status: dict[str, Any] = {
        "observedGeneration": d["metadata"].get("generation", 1),
        "replicas": total("replicas"),
        "updatedReplicas": int(((new or {}).get("status") or {}).get("replicas", 0)),
        "readyReplicas": total("readyReplicas"),
        "availableReplicas": total("availableReplicas"),
    }
    if "collisionCount" in previous:
        status["collisionCount"] = previous["collisionCount"]
    unavailable = max(0, replicas - status["availableReplicas"])
    if unavailable:
        status["unavailableReplicas"] = unavailable
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    max_unavailable = resolve(rolling.get("maxUnavailable", "25%"), replicas, False)
    if (spec.get("strategy") or {}).get("type") == "Recreate":
        max_unavailable = replicas
    conditions = list(previous.get("conditions") or [])
    if status["availableReplicas"] >= replicas - max_unavailable:
        conditions = set_condition(
            conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
            True,
        )
    else:
        conditions = set_condition(
            conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now,
            True,
        )
    new_name = new["metadata"]["name"] if new else ""
    complete = (
        status["updatedReplicas"] == replicas
        and status["replicas"] == replicas
        and status["availableReplicas"] == replicas
    )
    progressed = (
        status["updatedReplicas"] > int(previous.get("updatedReplicas", 0))
        or status["readyReplicas"] > int(previous.get("readyReplicas", 0))
        or status["availableReplicas"] > int(previous.get("availableReplicas", 0))
        or (int(previous.get("replicas", 0)) - int(previous.get("updatedReplicas", 0)))
        > (status["replicas"] - status["updatedReplicas"])
    )
    progressing = next((c for c in conditions if c.get("type") == "Progressing"), None)
    deadline = spec.get("progressDeadlineSeconds")
    if new is None:
        pass
    elif created:
        conditions = set_condition(
            conditions,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            f'Created new replica set "{new_name}"',
            now,
            True,
        )
    elif complete:
        conditions = set_condition(
            conditions,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{new_name}" has successfully progressed.',
            now,
            True,
        )
    elif progressed or progressing is None:
        conditions = set_condition(
            conditions,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            f'ReplicaSet "{new_name}" is progressing.',
            now,
            True,
            touch=True,
        )
    elif deadline is not None and progressing.get("reason") != "ProgressDeadlineExceeded":
        since = ctl.parse_time(str(progressing.get("lastUpdateTime") or progressing.get("lastTransitionTime") or now))
        if since + int(deadline) < store.clock():
            conditions = set_condition(
                conditions,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{new_name}" has timed out progressing.',
                now,
                True,
            )
    failure = next(
        (c for c in ((new or {}).get("status") or {}).get("conditions") or [] if c.get("type") == "ReplicaFailure"),
        None,
    )
    if failure:
        conditions = set_condition(
            conditions, "ReplicaFailure", failure["status"], failure["reason"], failure["message"], now, True
        )
    else:
        conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
    status["conditions"] = conditions
    if not complete and deadline is not None and new is not None:
        current = next((c for c in conditions if c.get("type") == "Progressing"), None)
        if current and current.get("reason") != "ProgressDeadlineExceeded":
            since = ctl.parse_time(str(current.get("lastUpdateTime") or now))
            ctl.wake_at(namespace, since + int(deadline) + 1)
    store.write_status("deployments", namespace, d["metadata"]["name"], status)
