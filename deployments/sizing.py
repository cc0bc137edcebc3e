"""What a replica's pod asks for: CPU, memory, shared memory, ephemeral storage and how long it may take to start.

A deployment may set each of them (its revision spec's keys ``SIZING_FIELDS``, null: the default); the defaults
follow the runtime and the GPU count, the way model servers use a node:

- memory: 24 GiB per GPU for the engine's host-side buffers and the weights' staging, plus the shared memory, which
  Kubernetes counts against the container's memory (a ``medium: Memory`` emptyDir is RAM);
- shared memory (``/dev/shm``): NCCL and the engines' worker processes exchange tensors through it, and the 64 MiB a
  container gets by default makes tensor parallelism fail; 2 GiB per GPU;
- ephemeral storage: logs, compile caches and temporary files (the weights go to the model cache volume);
- startup: a 70B model loads for many minutes from a cold cache; a small CPU model in seconds.

Pure functions and constants: the API validates against ``BOUNDS``, the manifests and the API's answers show
``sizing_for``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SIZING_FIELDS = ("cpu_cores", "memory_gib", "shm_gib", "ephemeral_storage_gib", "startup_timeout_s")

# (least, most) a deployment may ask for, per field.
BOUNDS: dict[str, tuple[float, float]] = {
    "cpu_cores": (0.1, 256),
    "memory_gib": (0.25, 4096),
    "shm_gib": (0.0625, 1024),
    "ephemeral_storage_gib": (1, 10_000),
    "startup_timeout_s": (30, 7_200),
}

GPU_RUNTIMES = ("vllm", "tgi", "triton")


@dataclass(frozen=True)
class Sizing:
    cpu_cores: float
    memory_gib: float  # includes the shared memory
    shm_gib: float
    ephemeral_storage_gib: float
    startup_timeout_s: int


def default_sizing(runtime: str, gpu_count: int) -> Sizing:
    """The defaults for ``runtime`` with ``gpu_count`` GPUs per replica."""
    if gpu_count > 0:
        shm = 2.0 * gpu_count
        return Sizing(
            cpu_cores=4.0 * gpu_count,
            memory_gib=24.0 * gpu_count + shm,
            shm_gib=shm,
            ephemeral_storage_gib=20,
            startup_timeout_s=1_800 if runtime in ("vllm", "tgi") else 900,
        )
    if runtime == "triton":
        return Sizing(cpu_cores=2.0, memory_gib=5.0, shm_gib=1.0, ephemeral_storage_gib=10, startup_timeout_s=600)
    return Sizing(cpu_cores=1.0, memory_gib=2.5, shm_gib=0.5, ephemeral_storage_gib=5, startup_timeout_s=300)


def sizing_for(runtime: str, gpu_count: int, spec: Mapping[str, Any]) -> Sizing:
    """The defaults overridden by every key of ``spec`` (a revision spec, or a deployment's fields) that is set.

    Memory set without shared memory keeps the default shared memory; the API refuses shared memory above memory.
    """
    base = default_sizing(runtime, gpu_count)
    chosen: dict[str, Any] = {name: spec[name] for name in SIZING_FIELDS if spec.get(name) is not None}
    return Sizing(
        cpu_cores=float(chosen.get("cpu_cores", base.cpu_cores)),
        memory_gib=float(chosen.get("memory_gib", base.memory_gib)),
        shm_gib=float(chosen.get("shm_gib", base.shm_gib)),
        ephemeral_storage_gib=float(chosen.get("ephemeral_storage_gib", base.ephemeral_storage_gib)),
        startup_timeout_s=int(chosen.get("startup_timeout_s", base.startup_timeout_s)),
    )


def sizing_refusals(runtime: str, gpu_count: int, values: Mapping[str, Any]) -> dict[str, str]:
    """Why the sizing fields set in ``values`` are refused, by field (empty: accepted)."""
    errors: dict[str, str] = {}
    for name, (least, most) in BOUNDS.items():
        value = values.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not least <= value <= most:
            errors[name] = f"{name} must be a number from {least:g} to {most:g}"
    if not errors:
        sizing = sizing_for(runtime, gpu_count, values)
        if sizing.shm_gib >= sizing.memory_gib:
            errors["shm_gib"] = (
                f"shm_gib ({sizing.shm_gib:g}) must be less than memory_gib ({sizing.memory_gib:g}): shared memory is "
                "counted against the container's memory"
            )
    return errors
