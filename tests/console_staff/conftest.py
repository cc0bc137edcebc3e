"""Fixtures for the usage and staff pages: usage rollups spread over days, keys and deployments; signed-in clients.

Personas (``alice`` owns acme, ``bob`` member, ``vera`` viewer, ``charlie`` owns globex, ``staff``) come from
``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from django.test import Client

from quotas.models import UsageRollup
from tenants.models import Tenant
from tests.support.staff import seed_usage

if TYPE_CHECKING:
    from django.contrib.auth.models import User


@pytest.fixture
def client_as(db: None) -> Callable[[User | None], Client]:
    """``client_as(user)``: a console client signed in as ``user`` (None = signed out)."""

    def make(user: User | None) -> Client:
        client = Client()
        if user is not None:
            client.force_login(user)
        return client

    return make


@pytest.fixture
def acme_usage(acme: Tenant) -> list[UsageRollup]:
    return seed_usage(acme)


@pytest.fixture
def globex_usage(globex: Tenant) -> list[UsageRollup]:
    return seed_usage(globex, seed=11)
