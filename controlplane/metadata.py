"""OPTIONS answers for tenant-scoped routes: the fields each writable method takes, from the serializer alone.

DRF's ``SimpleMetadata`` fetches the object (``get_object``) to check object permissions before describing PUT;
singleton routes such as a tenant's quota or settings have no lookup id, so that fetch fails. Access here is
decided once, by the chokepoint's role check before the handler runs, so the object adds nothing.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.metadata import SimpleMetadata
from rest_framework.request import Request, clone_request

from controlplane.domain_errors import DomainError


class ScopedMetadata(SimpleMetadata):
    def determine_actions(self, request: Request, view: Any) -> dict[str, Any]:
        actions: dict[str, Any] = {}
        for method in {"PUT", "POST"} & set(view.allowed_methods):
            view.request = clone_request(request, method)
            try:
                view.check_permissions(view.request)
                if hasattr(view, "check_role"):
                    view.check_role(view.request)
            except (exceptions.APIException, DomainError):
                continue
            finally:
                view.request = request
            actions[method] = self.get_serializer_info(view.get_serializer())
        return actions
