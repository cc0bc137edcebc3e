"""Typed readers for environment variables, shared by the control plane, the gateway and the agent.

Kept free of Django imports so the gateway (the hot path) can use it without loading Django.
A variable ``NAME_FILE`` holding a path is read instead of ``NAME`` (for secrets mounted as files).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from controlplane.contracts.gpu_map import gpu_map_error


class ImproperlyConfiguredEnv(ValueError):
    """An environment variable is present but its value cannot be used."""


def _raw(name: str) -> str | None:
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfiguredEnv(f"{name}_FILE={file_path!r} cannot be read: {exc}") from exc
    return os.environ.get(name)


def env_str(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool = False) -> bool:
    value = _raw(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfiguredEnv(f"{name}={value!r} is not a boolean (use true/false)")


def env_int(name: str, default: int) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfiguredEnv(f"{name}={value!r} is not an integer") from exc


def env_float(name: str, default: float) -> float:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ImproperlyConfiguredEnv(f"{name}={value!r} is not a number") from exc


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    value = _raw(name)
    if value is None or value.strip() == "":
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]


def env_json(name: str, default: Any = None) -> Any:
    """The variable's value parsed as JSON; ``default`` when it is unset or blank (a JSON ``null`` is None)."""
    import json

    value = _raw(name)
    if value is None or value.strip() == "":
        return default
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfiguredEnv(f"{name} is not JSON: {exc}") from exc


def env_gpu_counts(name: str) -> dict[str, int]:
    """A JSON object mapping GPU type to a non-negative count, e.g. ``{"nvidia-h100": 64}``; empty when unset."""
    parsed = env_json(name, {})
    if gpu_map_error(parsed) is not None:
        raise ImproperlyConfiguredEnv(f'{name} must map GPU type to a count, e.g. {{"nvidia-h100": 64}}')
    return parsed
