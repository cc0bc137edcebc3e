"""plan_replicas: how a deployment's requested replicas are split across its revisions (pure, no database)."""

from __future__ import annotations

import pytest

from deployments.models import ModelDeployment, Revision
from deployments.reconcile.engine import plan_replicas


def deployment(
    desired: int, *, min_replicas: int = 0, max_replicas: int = 8, state: str = "running"
) -> ModelDeployment:
    return ModelDeployment(
        desired_replicas=desired, min_replicas=min_replicas, max_replicas=max_replicas, desired_state=state
    )


def revision(pk: int, weight: int, *, desired: int = 0, ready: int = 0) -> Revision:
    return Revision(id=pk, number=pk, weight=weight, desired_replicas=desired, ready_replicas=ready, spec={})


@pytest.mark.parametrize(
    ("desired", "weights", "expected"),
    [
        (4, [100], {1: 4}),
        (4, [50, 50], {1: 2, 2: 2}),
        (3, [50, 50], {1: 1, 2: 2}),  # the remainder goes to the newest revision
        (4, [95, 5], {1: 3, 2: 1}),  # the canary's one replica comes out of the stable's share
        (5, [80, 20], {1: 4, 2: 1}),
        (3, [90, 5, 5], {1: 1, 2: 1, 3: 1}),
    ],
)
def test_it_splits_the_requested_count_by_weight_and_keeps_the_total(
    desired: int, weights: list[int], expected: dict[int, int]
) -> None:
    revisions = [revision(i + 1, w, ready=8) for i, w in enumerate(weights)]

    plan = plan_replicas(deployment(desired), revisions)

    assert plan == expected
    assert sum(plan.values()) == desired


def test_it_gives_every_weighted_revision_one_replica_even_past_max_replicas() -> None:
    # A canary on a one-replica deployment: both revisions take traffic, so both run (documented: total 2 > max 1).
    revisions = [revision(1, 80, ready=1), revision(2, 20)]

    plan = plan_replicas(deployment(1, min_replicas=1, max_replicas=1), revisions)

    assert plan == {1: 1, 2: 1}


def test_it_clamps_the_requested_count_to_the_bounds() -> None:
    assert plan_replicas(deployment(9, max_replicas=3), [revision(1, 100)]) == {1: 3}
    assert plan_replicas(deployment(0, min_replicas=2), [revision(1, 100)]) == {1: 2}


def test_it_runs_nothing_when_scaled_to_zero_or_stopped() -> None:
    revisions = [revision(1, 80, ready=1), revision(2, 20)]

    assert plan_replicas(deployment(0), revisions) == {1: 0, 2: 0}
    assert plan_replicas(deployment(2, state="stopped"), revisions) == {1: 0, 2: 0}


def test_it_keeps_a_drained_revision_until_the_routed_ones_are_ready_then_prunes_it() -> None:
    stable = revision(1, 0, desired=2, ready=2)

    waiting = plan_replicas(deployment(2), [stable, revision(2, 100, ready=1)])
    done = plan_replicas(deployment(2), [stable, revision(2, 100, ready=2)])

    assert waiting == {1: 2, 2: 2}
    assert done == {2: 2}
