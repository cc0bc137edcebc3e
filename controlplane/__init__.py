"""Frontdoor control plane: Django settings, URLs, Celery app and the tenant-scoped API base.

The Celery app is imported lazily (``controlplane.celery_app``) so that Django-free parts such as the gateway can
import ``controlplane.contracts`` without loading Celery or Django; Django processes load it in ``TenantsConfig.ready``.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "celery_app":
        from .celery import app

        return app
    raise AttributeError(name)
