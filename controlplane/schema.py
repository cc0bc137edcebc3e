"""OpenAPI post-processing: every operation documents the API's error answers and their one JSON shape.

The handler in ``controlplane/errors.py`` answers every refusal as ``{"error": {"type", "code", "message",
"fields"}}``; clients (and the schema fuzzing in the test suite) can only rely on that if the schema says so.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "code", "message", "fields"],
            "properties": {
                "type": {"type": "string", "enum": ["invalid_request", "server_error"]},
                "code": {"type": "string", "description": "machine-readable, e.g. invalid, not_found, conflict"},
                "message": {"type": "string"},
                "fields": {
                    "type": "object",
                    "description": "each offending field and its messages",
                    "additionalProperties": True,
                },
            },
        }
    },
}

# Status -> what it means on this API; every operation may answer each of these.
ERRORS = {
    "400": "the input is invalid: see error.fields",
    "401": "no valid credentials",
    "403": "the credentials lack the role or scope, or the tenant is suspended",
    "404": "no such tenant or object (also for another tenant's objects)",
    "405": "the method is not allowed on this route",
    "409": "the change conflicts with the current state; retry or resolve",
    "413": "the request body is too large",
    "415": "the body's media type is not supported",
    "422": "a quota would be exceeded, or an Idempotency-Key was reused with another body",
    "429": "too many requests",
}
_REF = {"$ref": "#/components/schemas/Error"}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: add the ``Error`` component and the error statuses to every operation."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, description in ERRORS.items():
                operation["responses"].setdefault(
                    status, {"description": description, "content": {"application/json": {"schema": _REF}}}
                )
    return result


class ObjectSchema(AutoSchema):
    """For a view whose ``list`` action answers one object (a report with its rows inside), not an array."""

    def _is_list_view(self, serializer: Any = None) -> bool:
        return False
