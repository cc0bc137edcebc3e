"""Fixtures: a fake Kubernetes API server per test, and a KubernetesBackend pointed at it.

Import into a test module: ``from tests.fakekube.fixtures import fakekube, kube_backend  # noqa: F401``.
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
def kube_backend(fakekube: FakeKubeServer, monkeypatch: pytest.MonkeyPatch) -> KubernetesBackend:
    monkeypatch.setenv("FRONTDOOR_K8S_API_URL", fakekube.url)
    backend = KubernetesBackend.from_environment()
    backend.kube = KubeSettings()
    return backend
