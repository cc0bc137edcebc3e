"""The GPU map, ``{"<gpu type>": count}``: a tenant quota's GPUs, the cluster's capacity, a machine's GPU slots.

One check of its shape for all of them, free of Django because the local agent reads its slots with it.
"""

from __future__ import annotations

from collections.abc import Collection

NOT_A_GPU_MAP = "must be an object mapping GPU type to a count"


def gpu_map_error(value: object, known_types: Collection[str] | None = None) -> str | None:
    """Why ``value`` is not a GPU map, or None when it is one.

    A GPU map is an object of GPU type to non-negative integer (a boolean is not a count). With ``known_types``,
    every type must be one of them.
    """
    if not isinstance(value, dict):
        return NOT_A_GPU_MAP
    for gpu_type, count in value.items():
        if known_types is not None and gpu_type not in known_types:
            return f"unknown GPU type {gpu_type!r}; known types: {', '.join(known_types)}"
        if not isinstance(gpu_type, str):
            return NOT_A_GPU_MAP
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            return f"GPU count for {gpu_type!r} must be a non-negative integer"
    return None
