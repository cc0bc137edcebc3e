"""The Open Inference Protocol's (v2) REST paths: which route a path is, with its model and version.

``/v2`` (server metadata), ``/v2/health/live``, ``/v2/health/ready``, and per model ``/v2/models/<model>`` (metadata),
``.../ready`` and ``.../infer``, each also as ``/v2/models/<model>/versions/<version>/...``. gRPC is not served.
A version goes into the upstream path as given, so it is held to the characters a version has (never ``..``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "/v2"
SERVER_METADATA = "server_metadata"
SERVER_LIVE = "server_live"
SERVER_READY = "server_ready"
MODEL_METADATA = "model_metadata"
MODEL_READY = "model_ready"
MODEL_INFER = "model_infer"

SERVER_ROUTES = {"/v2": SERVER_METADATA, "/v2/health/live": SERVER_LIVE, "/v2/health/ready": SERVER_READY}
_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")
_VERSION = re.compile(r"^[0-9A-Za-z_-][0-9A-Za-z._-]{0,63}$")
_ACTIONS = {None: MODEL_METADATA, "/ready": MODEL_READY, "/infer": MODEL_INFER}


@dataclass(frozen=True, slots=True)
class V2Route:
    route: str  # one of the names above
    model: str = ""  # the deployment's name, as the client wrote it
    version: str = ""  # "" when the path names none

    @property
    def method(self) -> str:
        return "POST" if self.route == MODEL_INFER else "GET"

    @property
    def upstream_rest(self) -> str:
        """What follows the model's name in the upstream path: the version, then ``/infer`` or ``/ready``."""
        action = {MODEL_INFER: "/infer", MODEL_READY: "/ready"}.get(self.route, "")
        return (f"/versions/{self.version}" if self.version else "") + action


def match(path: str) -> V2Route | None:
    """The route of a path under ``/v2``; None when it is none of the protocol's (a 404)."""
    route = SERVER_ROUTES.get(path)
    if route is not None:
        return V2Route(route)
    found = _MODEL.match(path)
    if found is None:
        return None
    model, version, action = found.groups()
    if version is not None and not _VERSION.match(version):
        return None
    return V2Route(_ACTIONS[action], model, version or "")
