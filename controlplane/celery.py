"""The Celery app: Redis broker, JSON only, late acks so a crashed worker's task is redelivered."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("frontdoor")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
