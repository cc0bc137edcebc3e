"""ASGI entry point for the control plane (the gateway has its own app: gateway.app:create_app)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
application = get_asgi_application()
