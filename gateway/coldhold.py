"""Refused everywhere means cold: a scale-to-zero deployment whose replicas all refuse the connection is starting.

A gateway whose snapshot still lists a replica that has just stopped (it loaded the next snapshot late, or the
replica crashed) gets a refused connection, and nothing reached any model. For a deployment with ``min_replicas``
0 that is the state "no replica yet", not a failure: the request is held exactly like one for a cold deployment
(the same hold timeout ``cold_hold_s``, the same per-process cap ``cold_queue_max``, one de-duplicated wake signal)
and sent again when a snapshot gives the deployment endpoints, or when the wake is signalled again. An error after
bytes were sent (a reset, a timeout, a bad answer) is final as before, and so is every error of a deployment that
never scales to zero, or whose endpoints a tenant gave (runtime ``external``: no replica of ours will appear).

``enter_hold`` and ``until_warm`` are the hold itself, which the inference pipeline also uses for a deployment the
snapshot already shows cold (no endpoints yet).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from gateway.context import GatewayContext
from gateway.errors import UpstreamFailure, model_not_found, service_unavailable
from gateway.outcome import Admitted, Outcome
from gateway.snapshot_index import DeploymentEntry

# UpstreamFailure kinds raised before anything was sent: every pick refused the connection, or every replica is
# ejected after refusing one.
NOTHING_SENT = frozenset({"connect", "no_replica"})
RETRY_EVERY_S = 5.0  # without a new snapshot, try the listed replicas again (and signal the wake again) this often

Attempt = Callable[[GatewayContext, Admitted, DeploymentEntry], Awaitable[None]]


def refused_as_cold(deployment: DeploymentEntry, failure: UpstreamFailure, outcome: Outcome) -> bool:
    """Whether ``failure`` means the deployment is cold: refused before any byte, and it may scale to zero."""
    return (
        failure.kind in NOTHING_SENT
        and not outcome.response_started
        and deployment.min_replicas == 0
        and not deployment.external
    )


async def serve_holding_refusals(
    ctx: GatewayContext, call: Admitted, deployment: DeploymentEntry, attempt: Attempt
) -> None:
    """Run ``attempt`` and, while it is refused everywhere for a scale-to-zero deployment, hold and run it again."""
    deadline: float | None = None
    try:
        while True:
            try:
                await attempt(ctx, call, deployment)
                return
            except UpstreamFailure as failure:
                if not refused_as_cold(deployment, failure, call.outcome):
                    raise
            if deadline is None:
                deadline = enter_hold(ctx, deployment)
            deployment = await until_warm(ctx, deployment, deadline, readmit=True)
    finally:
        if deadline is not None:
            ctx.cold.held -= 1


def enter_hold(ctx: GatewayContext, deployment: DeploymentEntry) -> float:
    """Take a place among the requests held for a cold deployment; returns the hold's deadline, or refuses (503)
    when ``cold_queue_max`` are held already. The caller gives the place back (``ctx.cold.held -= 1``)."""
    cold, cfg = ctx.cold, ctx.config
    if cold.held >= cfg.cold_queue_max:
        raise service_unavailable(
            f"Too many requests are waiting for '{deployment.name}' to start.", "deployment_starting", cfg.cold_hold_s
        )
    cold.held += 1
    return time.monotonic() + deployment.hold_s(cfg.cold_hold_s)


async def until_warm(
    ctx: GatewayContext, deployment: DeploymentEntry, deadline: float, *, readmit: bool
) -> DeploymentEntry:
    """The deployment as the next snapshot that gives it endpoints has it, signalling the wake every RETRY_EVERY_S.

    ``readmit``: give the replicas listed then a fresh chance (after refusals, one that refused may be a new process
    on its old port).
    """
    key = (deployment.tenant, deployment.name)
    while True:
        await ctx.cold.signal(deployment.id)
        left = deadline - time.monotonic()
        if left <= 0:
            raise service_unavailable(
                f"The deployment '{deployment.name}' is starting; retry shortly.", "deployment_starting", 5.0
            )
        await ctx.store.wait_for_change(min(left, RETRY_EVERY_S))
        current = ctx.store.current.deployments.get(key)
        if current is None:
            raise model_not_found(deployment.name)
        if current.cold:
            continue
        if readmit:
            ctx.balancer.readmit(endpoint for revision in current.revisions for endpoint in revision.endpoints)
        return current
