"""Which pods a Kubernetes scale-down removes, and when they may go: after the gateways stopped routing to them."""

from __future__ import annotations

from typing import Any

from controlplane.contracts.drain import Ack
from deployments.backends import kube_scaledown as scaledown

NOW = 1_800_000_000.0


def pod(
    name: str, created: str, *, ready: bool = True, node: str = "n1", leaving: float | None = None
) -> dict[str, Any]:
    annotations = {scaledown.LEAVING_ANNOTATION: str(leaving)} if leaving is not None else {}
    return {
        "metadata": {"name": name, "creationTimestamp": created, "annotations": annotations},
        "spec": {"nodeName": node} if node else {},
        "status": {
            "phase": "Running" if node else "Pending",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_it_removes_what_serves_nothing_first_then_the_youngest() -> None:
    pods = [
        pod("old", "2026-12-01T10:00:00Z"),
        pod("young", "2026-12-01T12:00:00Z"),
        pod("middle", "2026-12-01T11:00:00Z"),
        pod("unready", "2026-12-01T09:00:00Z", ready=False),
        pod("pending", "2026-12-01T08:00:00Z", ready=False, node=""),
    ]

    assert scaledown.choose_leaving(pods, 5, 4).leaving == {"pending"}
    assert scaledown.choose_leaving(pods, 5, 3).leaving == {"pending", "unready"}
    three = scaledown.choose_leaving(pods, 5, 2)
    assert three.leaving == {"pending", "unready", "young"}
    assert scaledown.choose_leaving(pods, 5, 5) == scaledown.Plan(frozenset(), (), ())


def test_pods_already_leaving_stay_chosen_and_a_scale_up_takes_them_back() -> None:
    pods = [pod("a", "2026-12-01T10:00:00Z", leaving=NOW - 5), pod("b", "2026-12-01T12:00:00Z")]

    again = scaledown.choose_leaving(pods, 2, 1)
    back = scaledown.choose_leaving(pods, 2, 2)

    assert again.leaving == {"a"} and again.mark == () and again.unmark == ()
    assert back.leaving == frozenset() and back.unmark == ("a",)


def test_the_patch_marks_the_pod_for_the_replicaset_to_delete_first_and_unmarks_it() -> None:
    marked = scaledown.leaving_patch(NOW)["metadata"]["annotations"]
    unmarked = scaledown.leaving_patch(None)["metadata"]["annotations"]

    assert marked == {scaledown.LEAVING_ANNOTATION: f"{NOW:.3f}", "controller.kubernetes.io/pod-deletion-cost": "-1000"}
    assert unmarked == {scaledown.LEAVING_ANNOTATION: None, "controller.kubernetes.io/pod-deletion-cost": None}


def test_leaving_pods_go_once_unrouted_and_acknowledged_or_after_the_drain_timeout() -> None:
    leaving = ["http://10.0.0.9:8000"]
    acked = {"gw-1": Ack(version=7, ts=NOW - 0.5), "gw-2": Ack(version=7, ts=NOW - 0.2)}
    lagging = {**acked, "gw-3": Ack(version=6, ts=NOW - 0.1)}
    kwargs = {"ack_timeout_s": 15.0, "drain_timeout_s": 120.0}

    still_routed = scaledown.unrouted(leaving, frozenset(leaving), acked, 7, NOW - 2, NOW, **kwargs)
    one_lags = scaledown.unrouted(leaving, frozenset(), lagging, 7, NOW - 2, NOW, **kwargs)
    done = scaledown.unrouted(leaving, frozenset(), acked, 7, NOW - 2, NOW, **kwargs)
    timed_out = scaledown.unrouted(leaving, frozenset(leaving), lagging, 7, NOW - 121, NOW, **kwargs)

    assert (still_routed, one_lags, done, timed_out) == (False, False, True, True)
