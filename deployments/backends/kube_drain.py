"""Whether the pods a Kubernetes scale-down removes have left every gateway (``kube_scaledown.unrouted``), read from
the same Redis the drain contract lives in: the tenant's section of the snapshot and the gateways' acknowledgements."""

from __future__ import annotations

import redis

from controlplane.contracts import drain
from controlplane.contracts import snapshot as snapshot_contract
from controlplane.contracts.env import env_float
from deployments.backends import kube_scaledown
from deployments.backends.base import TenantSpec, TransientBackendError


class DrainGate:
    """Reads the snapshot and the acks; built lazily, since most passes scale nothing down."""

    def __init__(self) -> None:
        self.ack_timeout_s = env_float("FRONTDOOR_DRAIN_ACK_TIMEOUT_S", drain.DEFAULT_ACK_TIMEOUT_S)
        self._client: redis.Redis | None = None

    def _redis(self) -> tuple[redis.Redis, str]:
        from django.conf import settings

        if self._client is None:
            self._client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
        return self._client, settings.FRONTDOOR_REDIS_PREFIX

    def unrouted(self, tenant: TenantSpec, addresses: list[str], since: float, now: float) -> bool:
        """Whether no gateway can still send a request to ``addresses``: they are not routed in the tenant's
        section and every live gateway loaded the current version, or they have been leaving for twice the ack
        timeout (a gateway that never acknowledges delays a scale-down by a bound, never forever)."""
        client, prefix = self._redis()
        section = snapshot_contract.tenant_section(tenant.id)
        try:
            version = int(client.get(drain.config_version_key(prefix)) or 0)
            raw = snapshot_contract.read_sections(client, prefix, [section])
            acks = drain.parse_acks(client.hgetall(drain.acks_key(prefix)))
        except redis.RedisError as exc:
            raise TransientBackendError(f"Redis unreachable while draining pods: {exc}") from exc
        routed = frozenset[str]().union(
            *(drain.routed_endpoints(snapshot_contract.decode_section(value)) for value in raw.values())
        )
        return kube_scaledown.unrouted(
            addresses,
            routed,
            acks,
            version,
            since,
            now,
            ack_timeout_s=self.ack_timeout_s,
            drain_timeout_s=2 * self.ack_timeout_s,
        )
