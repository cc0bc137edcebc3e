"""Batch API routes of the REST API, included by ``controlplane/urls.py`` under ``api/v1/``.

``tenants/{tenant}/batches/`` (+ ``{batch_id}/``, ``{batch_id}/cancel/``) and ``tenants/{tenant}/files/``
(+ ``{file_id}/``, ``{file_id}/content/``).
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver
from rest_framework.routers import SimpleRouter

from batches.api import BatchFileViewSet, BatchViewSet

_TENANT = r"tenants/(?P<tenant>[^/]+)"

router = SimpleRouter()
router.register(_TENANT + r"/batches", BatchViewSet, basename="batch")
router.register(_TENANT + r"/files", BatchFileViewSet, basename="batch-file")

urlpatterns: list[URLPattern | URLResolver] = list(router.urls)
