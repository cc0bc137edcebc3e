"""Shared fixtures: this run's own names on Redis and Postgres, personas and tenants on real Postgres."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import redis
from django.conf import settings as django_settings

from tests.support import isolation

# Fixtures shared by several folders live in plugins rather than in modules that tests import.
pytest_plugins = [
    "tests.fixtures.broker",
    "tests.fixtures.localagent",
    "tests.fixtures.platform",
]

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from rest_framework.test import APIClient

    from tenants.models import ApiKey, Tenant

# At import, not in a fixture: the settings are loaded by now, and conftests below this one (tests/gateway) read
# the run's prefix from the environment when they are imported.
RUN = isolation.RunNames.from_environ(os.environ, django_settings.FRONTDOOR_TEST_DATABASE)
isolation.apply(RUN)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session", autouse=True)
def run_names(redis_url: str) -> Iterator[isolation.RunNames]:
    """This run's names, checked before the first test; what the run left under them is deleted after the last."""
    isolation.check_applied(RUN)
    yield RUN
    client = redis.Redis.from_url(redis_url)
    try:
        isolation.sweep(client, RUN)
    finally:
        client.close()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(request: pytest.FixtureRequest) -> None:
    """The test database is named after the run; pytest-django's own suffix (pytest-xdist workers) comes after."""
    django_settings.DATABASES["default"]["TEST"]["NAME"] = RUN.database
    request.getfixturevalue("django_db_modify_db_settings_parallel_suffix")


@pytest.fixture
def redis_prefix(settings: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    """A Redis key prefix unique to this test, under the run's; its keys are deleted afterwards."""
    prefix = f"{RUN.redis_prefix}-{uuid.uuid4().hex[:8]}"
    settings.FRONTDOOR_REDIS_PREFIX = prefix  # type: ignore[attr-defined]
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)
    client.close()


# ---------------------------------------------------------------- personas (tenants, members, API clients)
#
# ``alice`` owns tenant A ("acme"), ``adam`` is its admin, ``bob`` a member, ``vera`` a viewer; ``charlie`` owns
# tenant B ("globex") and must see nothing of acme; ``staff`` is platform staff. ``api(user)`` is a client signed
# in as ``user`` (None = anonymous); ``issue_key(tenant, scopes)`` returns (ApiKey, full key);
# ``key_api(tenant, scopes)`` a client that sends ``Authorization: Bearer <key>``.


def _make_user(username: str, **extra: Any) -> User:
    from django.contrib.auth.models import User

    # No password: hashing one costs ~100 ms per user, and personas sign in with force_login anyway.
    return User.objects.create_user(username=username, email=f"{username}@example.test", password=None, **extra)


def _make_tenant(slug: str, name: str) -> Tenant:
    from quotas.models import Quota
    from tenants.models import Tenant

    tenant = Tenant.objects.create(slug=slug, name=name)
    Quota.unscoped_objects.create(tenant=tenant)
    return tenant


def _make_member(tenant: Tenant, username: str, role: str) -> User:
    from tenants.models import Membership

    user = _make_user(username)
    Membership.unscoped_objects.create(tenant=tenant, user=user, role=role)
    return user


@pytest.fixture
def acme(db: None) -> Tenant:
    return _make_tenant("acme", "Acme")


@pytest.fixture
def globex(db: None) -> Tenant:
    return _make_tenant("globex", "Globex")


@pytest.fixture
def alice(acme: Tenant) -> User:
    return _make_member(acme, "alice", "owner")


@pytest.fixture
def adam(acme: Tenant) -> User:
    return _make_member(acme, "adam", "admin")


@pytest.fixture
def bob(acme: Tenant) -> User:
    return _make_member(acme, "bob", "member")


@pytest.fixture
def vera(acme: Tenant) -> User:
    return _make_member(acme, "vera", "viewer")


@pytest.fixture
def charlie(globex: Tenant) -> User:
    return _make_member(globex, "charlie", "owner")


@pytest.fixture
def staff(db: None) -> User:
    return _make_user("staff", is_staff=True)


@pytest.fixture
def api(db: None) -> Callable[[User | None], APIClient]:
    """``api(user)``: a REST client signed in (session) as ``user``; ``api(None)`` is anonymous."""
    from rest_framework.test import APIClient

    def make(user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_login(user)
        return client

    return make


@pytest.fixture
def issue_key(db: None) -> Callable[..., tuple[ApiKey, str]]:
    """``issue_key(tenant, scopes, **fields)`` -> (ApiKey, full key string)."""
    from tenants.models import ApiKey

    def make(tenant: Tenant, scopes: list[str], **fields: Any) -> tuple[ApiKey, str]:
        # Names are unique among a tenant's unrevoked keys: a second key of the same scopes is "key-<scopes>-2".
        name = base = f"key-{'-'.join(scopes)}"
        live = ApiKey.objects.for_tenant(tenant).filter(revoked_at__isnull=True)
        taken = set(live.filter(name__startswith=base).values_list("name", flat=True))
        for number in itertools.count(2):
            if name not in taken:
                break
            name = f"{base}-{number}"
        return ApiKey.issue(tenant=tenant, name=name, scopes=scopes, **fields)

    return make


@pytest.fixture
def key_api(issue_key: Callable[..., tuple[ApiKey, str]]) -> Callable[[Tenant, list[str]], APIClient]:
    """``key_api(tenant, scopes)``: a REST client authenticating with a fresh key of ``tenant``."""
    from rest_framework.test import APIClient

    def make(tenant: Tenant, scopes: list[str]) -> APIClient:
        _, full_key = issue_key(tenant, scopes)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {full_key}")
        return client

    return make
