"""A large batch alone never raises a deployment's desired replicas above its batch share.

Batch lines keep the deployment's requests in flight at the batch gate at most (``DeploymentEntry.batch_capacity``,
from the publisher's ``batch_gate``); the autoscaler (Knative's algorithm, ``deployments.scaling.kpa``) sees that
concurrency. Driven with the gate full every tick, from zero or from its minimum, it settles within the share and
never passes it, for every size, target and share.
"""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.snapshot.publisher import batch_gate
from deployments.scaling.kpa import ScalerConfig, ScalerState, decide
from gateway.snapshot_index import DeploymentEntry, RevisionEntry


def _capacity(ready: int, slots: float, share: int) -> int:
    endpoints = tuple(f"http://127.0.0.1:{9000 + n}" for n in range(ready))
    entry = DeploymentEntry(
        id=1, tenant="t", name="d", model="m", state="running", max_concurrent=None, timeout_s=30, created=0,
        revisions=(RevisionEntry(id=1, name="r1", weight=100, endpoints=endpoints),),
        batch_per_replica=slots, batch_replicas=share,
    )  # fmt: skip
    capacity = entry.batch_capacity()
    assert capacity is not None
    return capacity


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("target", [1, 2, 8, 33])
@pytest.mark.parametrize(("min_replicas", "max_replicas"), [(0, 1), (0, 4), (1, 4), (0, 10), (2, 7)])
def test_a_batch_alone_stays_within_its_share(
    settings: Any, share: float, target: int, min_replicas: int, max_replicas: int
) -> None:
    settings.FRONTDOOR_BATCH_REPLICA_SHARE = share
    slots, share_replicas = batch_gate(target, max_replicas)
    assert share_replicas <= max_replicas
    config = ScalerConfig(min_replicas=min_replicas, max_replicas=max_replicas, target_concurrency=target)
    state, ready, highest = ScalerState(), min_replicas, 0
    for tick in range(200):  # 400 s of 2 s ticks: past the stable and panic windows and the scale-to-zero grace
        in_flight = _capacity(ready, slots, share_replicas)  # the batch keeps its gate full
        decision = decide(
            state, config, now=tick * 2.0, concurrency=in_flight, ready=ready, wake=ready == 0 and in_flight > 0
        )
        state.desired = decision.desired
        ready = decision.desired  # replicas start at once here: the fastest a batch could push it
        highest = max(highest, ready)
    assert highest <= max(min_replicas, share_replicas)
    if share > 0 and slots >= 1:  # a replica that takes one request or more below the target: batch uses its share
        assert highest == max(min_replicas, share_replicas)
