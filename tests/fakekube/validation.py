"""Schema checks for generated manifests: ``kubernetes-validate --strict`` for built-in kinds, the Gateway API
CRD's ``v1`` openAPIV3Schema (jsonschema) for HTTPRoutes."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.37.0"  # a version kubernetes-validate ships strict schemas for
# Vendored in the repository (schemas/gateway-api/README.md: version and licence), so a clone anywhere validates.
_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "gateway-api"
_CRD = Path(os.environ.get("FRONTDOOR_K8S_SCHEMAS", str(_SCHEMAS))) / "gateway-api-v1.6.1-httproutes.crd.yaml"


@functools.cache
def httproute_schema() -> dict[str, Any]:
    crd = yaml.safe_load(_CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return dict(version["schema"]["openAPIV3Schema"])


def manifest_problem(obj: dict[str, Any]) -> str | None:
    """None when ``obj`` is valid for its kind, else the validator's message."""
    try:
        if obj.get("kind") == "HTTPRoute":
            jsonschema.validate(obj, httproute_schema())
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
        return str(getattr(exc, "message", exc))
    return None


def server_side_problem(obj: dict[str, Any]) -> str | None:
    """The fake server's write hook: validate what the client sent, minus fields the server itself owns."""
    clean = {k: v for k, v in obj.items() if k != "status"}
    meta = {
        k: v
        for k, v in (clean.get("metadata") or {}).items()
        if k not in {"uid", "resourceVersion", "generation", "creationTimestamp"}
    }
    clean["metadata"] = meta
    return manifest_problem(clean)
