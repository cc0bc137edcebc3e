"""Fixtures: a fake Kubernetes API server per test, and a KubernetesBackend pointed at it.

Import into a test module: ``from tests.fakekube.fixtures import fakekube, kube_backend  # noqa: F401``.

``fakekube`` settles its controllers after every write (``store.auto_ready``): ReplicaSets, pods scheduled onto
the default nodes (``cluster.default_nodes``) within the namespace's ResourceQuota, ready pods and EndpointSlices
are there when the write returns. Set ``fakekube.store.auto_ready = False`` to hold the cluster still and drive
status by hand (``store.set_status``, ``store.add_pending_pod``) or step it (``store.controller.step()``).
``fakekube_live`` runs the controllers on their own thread instead, as a real cluster would: pods become ready a
moment after the writes, so a test waits for them (with a bound).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deployments.backends.kubernetes import KubernetesBackend
from deployments.backends.manifests import KubeSettings
from tests.fakekube.server import FakeKubeServer
from tests.fakekube.validation import server_side_problem


@pytest.fixture
def fakekube() -> Iterator[FakeKubeServer]:
    """A running fake API server that validates every object written to it against the real schemas."""
    server = FakeKubeServer().start()
    server.store.validator = server_side_problem
    yield server
    server.stop()


@pytest.fixture
def fakekube_live() -> Iterator[FakeKubeServer]:
    """Like ``fakekube``, with the controllers stepping on a background thread instead of inside each write."""
    server = FakeKubeServer().start()
    server.store.validator = server_side_problem
    server.store.controller.start(interval_s=0.02)
    yield server
    server.stop()


@pytest.fixture
def kube_backend(fakekube: FakeKubeServer, monkeypatch: pytest.MonkeyPatch) -> KubernetesBackend:
    monkeypatch.setenv("FRONTDOOR_K8S_API_URL", fakekube.url)
    backend = KubernetesBackend.from_environment()
    backend.kube = KubeSettings()
    return backend
