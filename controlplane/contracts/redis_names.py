"""Redis key and channel names: every key or channel one process writes and another reads is spelled here.

Every name starts with the installation's prefix (``FRONTDOOR_REDIS_PREFIX``), so each function takes it first; the
control plane passes ``controlplane.redis.redis_prefix()``, the gateway and the local agent their configured prefix.
Keys a single process keeps for itself (the login limiter, task locks, autoscaler state, the SLO cursor) are not
here: the control plane names those with ``controlplane.redis.redis_key()``. docs/contracts.md says what each key
holds.

Channels. Keys are separated per installation by the Redis database and the key prefix, but pub/sub ignores the
database: a PUBLISH on database 1 reaches a subscriber connected to database 0. So a channel name carries the
database number as well as the prefix: ``<prefix>:db<N>:<name>``. Two installations on one Redis with the same prefix
and different databases then hear only their own notices, as they see only their own keys. The database is the one
the client of ``REDIS_URL`` selects (read with redis-py's own URL parser, so that ``redis://host/2``,
``redis://host?db=2`` and ``unix:///path?db=2`` mean what they mean to the client).
"""

from __future__ import annotations

from redis.connection import parse_url

# --- pub/sub channels --------------------------------------------------------------------------------------------

# The channels of one installation; every PUBLISH and SUBSCRIBE names one of them through ``channel()``.
CONFIG_NOTIFY = "config:notify"  # control plane -> gateways: a new config snapshot version (payload: the version)
WAKE = "wake"  # gateway -> autoscaler: a request waits for a scaled-to-zero deployment (payload: deployment id)
LOCAL_NOTIFY = "local:notify"  # LocalBackend -> local agent: a deployment's desired state changed (payload: its id)

ALL_CHANNELS = (CONFIG_NOTIFY, WAKE, LOCAL_NOTIFY)


def redis_db(redis_url: str) -> int:
    """The database number a client of ``redis_url`` selects (0 when the URL names none)."""
    return int(parse_url(redis_url).get("db") or 0)


def channel(prefix: str, redis_url: str, name: str) -> str:
    """The channel ``name`` (one of the constants above) of the installation of ``prefix`` on ``redis_url``."""
    return channel_in_db(prefix, redis_db(redis_url), name)


def channel_in_db(prefix: str, db: int, name: str) -> str:
    """``<prefix>:db<db>:<name>``, for a caller that holds a client rather than its URL."""
    return f"{prefix}:db{db}:{name}"


def local_notify_channel(prefix: str, redis_url: str) -> str:
    """Where ``LocalBackend`` announces a changed desired state to the local agent."""
    return channel(prefix, redis_url, LOCAL_NOTIFY)


# --- config snapshot (control plane -> gateways, backends) -------------------------------------------------------


def config_snapshot_key(prefix: str) -> str:
    """Where a whole snapshot document was stored before sections: deleted by the first sectioned publish."""
    return f"{prefix}:config:snapshot"


def config_sections_key(prefix: str) -> str:
    """The hash of the snapshot's sections (one per tenant, one for the platform), each encoded JSON."""
    return f"{prefix}:config:sections"


def config_index_key(prefix: str) -> str:
    """The hash of each section's version (the snapshot version that last wrote it), beside the sections."""
    return f"{prefix}:config:index"


def config_dirty_key(prefix: str) -> str:
    """The set of sections a commit changed since the publisher last took it (``ALL_SECTIONS``: every one)."""
    return f"{prefix}:config:dirty"


def config_taken_key(prefix: str) -> str:
    """The marks the running publisher took and has not stored yet: a crashed pass leaves them to its successor."""
    return f"{prefix}:config:taken"


def config_publisher_lock_key(prefix: str) -> str:
    """The short-lived lock the one running publisher holds (a token, with an expiry it keeps extending)."""
    return f"{prefix}:config:publisher"


def config_publish_queued_key(prefix: str) -> str:
    """Set while a publish task is queued and has not started: commits queue another only when it is absent."""
    return f"{prefix}:config:queued"


def config_stats_key(prefix: str) -> str:
    """The publisher's counters (builds, sections built, last build time) for operators and benchmarks."""
    return f"{prefix}:config:stats"


def config_version_key(prefix: str) -> str:
    """The stored snapshot's version: set together with the snapshot, polled by the gateways every second."""
    return f"{prefix}:config:version"


def config_seq_key(prefix: str) -> str:
    """The counter snapshot versions are allocated from, before the publisher reads Postgres."""
    return f"{prefix}:config:seq"


def gateway_acks_key(prefix: str) -> str:
    """The hash of every gateway process's acknowledged snapshot version (``controlplane.contracts.drain``)."""
    return f"{prefix}:gateway:acks"


# --- the limiter (gateway processes; the autoscaler and SLO collector read the deployment's leases) --------------
# A scope names whose limit a key counts for: an API key, a tenant or a deployment.


def api_key_scope(key_id: str) -> str:
    return f"key:{key_id}"


def tenant_scope(tenant_slug: str) -> str:
    return f"tenant:{tenant_slug}"


def batch_scope(scope: str) -> str:
    """The batch windows of a key or tenant scope: batch lines have per-minute limits of their own."""
    return f"batch:{scope}"


def deployment_scope(deployment_id: int) -> str:
    return f"deployment:{deployment_id}"


def request_window_key(prefix: str, scope: str) -> str:
    """The requests-per-minute window of ``scope``: a ZSET of request ids scored by admission time (ms)."""
    return f"{prefix}:rpm:{scope}"


def token_window_key(prefix: str, scope: str) -> str:
    """The tokens-per-minute window of ``scope``: a ZSET of ``<request id>:<tokens>`` scored by admission time."""
    return f"{prefix}:tpm:{scope}"


def token_total_key(prefix: str, scope: str) -> str:
    """The sum of the tokens held in ``token_window_key(prefix, scope)``."""
    return f"{prefix}:tpm:{scope}:total"


def concurrency_key(prefix: str, scope: str) -> str:
    """The concurrency leases of ``scope``: a ZSET of request ids scored by lease expiry in epoch milliseconds."""
    return f"{prefix}:conc:{scope}"


def deployment_concurrency_key(prefix: str, deployment_id: int) -> str:
    """A deployment's leases, always kept: its in-flight count is ``ZCOUNT <key> <now ms> +inf``."""
    return concurrency_key(prefix, deployment_scope(deployment_id))


def budget_key_prefix(prefix: str, tenant_slug: str) -> str:
    """What a tenant's monthly budget keys start with; the limiter's scripts append the month (``YYYYMM``)."""
    return f"{prefix}:budget:{tenant_slug}:"


# --- load figures and usage (gateway -> autoscaler, SLO collector, usage rollup) ---------------------------------


def load_key(prefix: str, deployment_id: int, revision_id: int, second: int) -> str:
    """One second of a revision's load figures (a hash of counters and latency buckets)."""
    return f"{prefix}:load:{deployment_id}:{revision_id}:{second}"


def revision_inflight_key(prefix: str, deployment_id: int, revision_id: int) -> str:
    """A revision's in-flight requests: a ZSET of request ids scored by lease expiry in epoch seconds."""
    return f"{prefix}:inflight:{deployment_id}:{revision_id}"


def usage_stream_key(prefix: str) -> str:
    """The stream of usage events (``controlplane.contracts.usage_events``)."""
    return f"{prefix}:usage"


def batch_line_key(prefix: str, request_id: str) -> str:
    """A batch line's answer in the gateway (``batch_wire.PENDING`` while a try is in flight): a re-run replays it."""
    return f"{prefix}:batchline:{request_id}"


def batch_runner_key(prefix: str, batch_id: int) -> str:
    """Set while a batch's run task is queued or working (it lapses after a killed one): the tick sends one run."""
    return f"{prefix}:batchrunner:{batch_id}"


def wake_key(prefix: str, deployment_id: int) -> str:
    """Set by a gateway holding a request for a cold deployment; the autoscale tick consumes it."""
    return f"{prefix}:wake:{deployment_id}"


def replica_queue_key(prefix: str, deployment_id: int) -> str:
    """Requests waiting in a deployment's ready replicas' own queues (an integer string), for the autoscaler."""
    return f"{prefix}:queue:{deployment_id}"


# --- the local backend (Celery workers <-> local agent; ``controlplane.contracts.localagent``) ------------------


def local_desired_key(prefix: str) -> str:
    """A hash: deployment id -> the desired document, or a tombstone."""
    return f"{prefix}:local:desired"


def local_status_key(prefix: str, deployment_id: int) -> str:
    """The agent's observed status of one deployment."""
    return f"{prefix}:local:status:{deployment_id}"


def local_agent_key(prefix: str) -> str:
    """The local agent's heartbeat."""
    return f"{prefix}:local:agent"
