"""Backends that run revisions' replicas: ``local`` (processes on this machine) and ``kubernetes``.

``get_backend()`` returns the configured backend (``FRONTDOOR_BACKEND``), built once per process so its
connection pool and caches are shared by every reconcile the worker runs.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from deployments.backends.base import Backend

_lock = threading.Lock()
_backends: dict[str, Backend] = {}


def build_backend(name: str) -> Backend:
    """A new backend of kind ``name``; imports lazily so the web process never loads the Kubernetes client."""
    if name == "kubernetes":
        from deployments.backends.kubernetes import KubernetesBackend

        return KubernetesBackend.from_environment()
    if name == "local":
        from deployments.backends.local import LocalBackend

        return LocalBackend()
    raise ValueError(f"unknown backend {name!r}: use 'local' or 'kubernetes'")


def get_backend() -> Backend:
    """The configured backend, shared within this process."""
    name = settings.FRONTDOOR_BACKEND
    with _lock:
        if name not in _backends:
            _backends[name] = build_backend(name)
        return _backends[name]


def reset_backends() -> None:
    """Forget the built backends (tests that point ``FRONTDOOR_K8S_API_URL`` at a new fake server)."""
    with _lock:
        _backends.clear()
