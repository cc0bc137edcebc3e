"""Every Redis key and channel another process reads, spelled out once: the names are a wire format.

Other tests name keys through ``controlplane.contracts.redis_names``; this one pins what those names are, so a change
to a spelling is a failing test here and not a silent split between a writer and its reader.
"""

from __future__ import annotations

from controlplane.contracts import drain
from controlplane.contracts import localagent as protocol
from controlplane.contracts import redis_names as names


def test_it_spells_the_config_snapshot_keys() -> None:
    assert names.config_snapshot_key("fd") == "fd:config:snapshot"
    assert names.config_version_key("fd") == "fd:config:version"
    assert names.config_seq_key("fd") == "fd:config:seq"
    assert names.gateway_acks_key("fd") == "fd:gateway:acks"


def test_it_spells_the_limiter_keys() -> None:
    key, tenant = names.api_key_scope("ab12cd34"), names.tenant_scope("acme")
    assert names.request_window_key("fd", key) == "fd:rpm:key:ab12cd34"
    assert names.request_window_key("fd", tenant) == "fd:rpm:tenant:acme"
    assert names.token_window_key("fd", key) == "fd:tpm:key:ab12cd34"
    assert names.token_total_key("fd", tenant) == "fd:tpm:tenant:acme:total"
    assert names.concurrency_key("fd", key) == "fd:conc:key:ab12cd34"
    assert names.concurrency_key("fd", tenant) == "fd:conc:tenant:acme"
    assert names.deployment_concurrency_key("fd", 9) == "fd:conc:deployment:9"
    assert names.budget_key_prefix("fd", "acme") == "fd:budget:acme:"


def test_it_spells_the_load_usage_and_scaling_keys() -> None:
    assert names.load_key("fd", 9, 11, 1764201600) == "fd:load:9:11:1764201600"
    assert names.revision_inflight_key("fd", 9, 11) == "fd:inflight:9:11"
    assert names.usage_stream_key("fd") == "fd:usage"
    assert names.wake_key("fd", 9) == "fd:wake:9"
    assert names.replica_queue_key("fd", 9) == "fd:queue:9"


def test_it_spells_the_local_backend_keys() -> None:
    assert names.local_desired_key("fd") == "fd:local:desired"
    assert names.local_status_key("fd", 9) == "fd:local:status:9"
    assert names.local_agent_key("fd") == "fd:local:agent"
    assert names.local_notify_channel("fd", "redis://127.0.0.1:6379/2") == "fd:db2:local:notify"


def test_the_protocol_modules_name_the_same_keys() -> None:
    assert protocol.desired_key("fd") == names.local_desired_key("fd")
    assert protocol.status_key("fd", 9) == names.local_status_key("fd", 9)
    assert protocol.agent_key("fd") == names.local_agent_key("fd")
    assert protocol.queue_key("fd", 9) == names.replica_queue_key("fd", 9)
    assert protocol.notify_channel("fd", "redis://h/1") == names.local_notify_channel("fd", "redis://h/1")
    assert drain.acks_key("fd") == names.gateway_acks_key("fd")
    assert drain.config_version_key("fd") == names.config_version_key("fd")
    assert drain.config_snapshot_key("fd") == names.config_snapshot_key("fd")
