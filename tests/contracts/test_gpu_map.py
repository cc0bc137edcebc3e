"""The GPU map (controlplane/contracts/gpu_map.py): one shape check for the environment's GPU maps (the cluster's
capacity, the local agent's slots) and, with the known GPU types, a tenant's quota."""

from __future__ import annotations

import pytest

from controlplane.contracts.env import ImproperlyConfiguredEnv, env_gpu_counts
from controlplane.contracts.gpu_map import gpu_map_error
from localagent.config import AgentConfig

KNOWN = ("nvidia-h100", "nvidia-l4")
BAD_MAPS = ['["nvidia-h100"]', '{"nvidia-h100": -1}', '{"nvidia-h100": true}', '{"nvidia-h100": 1.5}', '"8"']


def test_a_map_of_counts_passes() -> None:
    assert gpu_map_error({"nvidia-h100": 8, "nvidia-l4": 0}) is None
    assert gpu_map_error({}, KNOWN) is None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (["nvidia-h100"], "must be an object mapping GPU type to a count"),
        ({"nvidia-h100": -1}, "GPU count for 'nvidia-h100' must be a non-negative integer"),
        ({"nvidia-h100": True}, "GPU count for 'nvidia-h100' must be a non-negative integer"),
        ({"nvidia-h100": "2"}, "GPU count for 'nvidia-h100' must be a non-negative integer"),
    ],
)
def test_it_names_what_is_wrong(value: object, error: str) -> None:
    assert gpu_map_error(value) == error
    assert gpu_map_error(value, KNOWN) == error


def test_with_known_types_it_refuses_any_other() -> None:
    assert gpu_map_error({"tpu-v5": 1}) is None
    assert gpu_map_error({"tpu-v5": 1}, KNOWN) == "unknown GPU type 'tpu-v5'; known types: nvidia-h100, nvidia-l4"


@pytest.mark.parametrize("raw", BAD_MAPS)
def test_the_capacity_and_the_agents_slots_refuse_the_same_maps(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONTDOOR_CLUSTER_GPU_CAPACITY", raw)
    monkeypatch.setenv("FRONTDOOR_LOCAL_GPU_SLOTS", raw)

    with pytest.raises(ImproperlyConfiguredEnv, match="FRONTDOOR_CLUSTER_GPU_CAPACITY must map GPU type to a count"):
        env_gpu_counts("FRONTDOOR_CLUSTER_GPU_CAPACITY")
    with pytest.raises(ImproperlyConfiguredEnv, match="FRONTDOOR_LOCAL_GPU_SLOTS must map GPU type to a count"):
        AgentConfig.from_env()


def test_the_agent_reads_its_slots_as_a_gpu_map(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONTDOOR_LOCAL_GPU_SLOTS", '{"nvidia-h100": 2}')
    assert AgentConfig.from_env().gpu_slots == {"nvidia-h100": 2}
    monkeypatch.setenv("FRONTDOOR_LOCAL_GPU_SLOTS", " ")
    assert AgentConfig.from_env().gpu_slots == {}
