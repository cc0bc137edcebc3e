"""The REST API's key authentication: a key works only with the environment segment it was issued with."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from tenants.models import ApiKey, Tenant

pytestmark = pytest.mark.django_db

IssueKey = Callable[..., tuple[ApiKey, str]]


def with_env(full_key: str, env: str) -> str:
    _, _, key_id, secret = full_key.split("_")
    return f"fd_{env}_{key_id}_{secret}"


def get_tenant(presented: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {presented}")
    return client.get("/api/v1/tenants/acme/").status_code


def test_it_issues_keys_for_the_live_environment(acme: Tenant, issue_key: IssueKey) -> None:
    key, full_key = issue_key(acme, ["read"])
    assert key.env == "live"
    assert full_key.startswith("fd_live_")


def test_it_refuses_a_live_key_presented_as_a_test_key(acme: Tenant, issue_key: IssueKey) -> None:
    _, full_key = issue_key(acme, ["read"])
    assert get_tenant(full_key) == 200
    assert get_tenant(with_env(full_key, "test")) == 401


def test_it_refuses_a_test_key_presented_as_a_live_key(acme: Tenant, issue_key: IssueKey) -> None:
    key, full_key = issue_key(acme, ["read"])
    ApiKey.unscoped_objects.filter(pk=key.pk).update(env="test")  # a key issued for the test environment
    test_key = with_env(full_key, "test")
    assert get_tenant(test_key) == 200
    assert get_tenant(full_key) == 401


def test_it_answers_a_wrong_environment_as_it_answers_a_wrong_secret(acme: Tenant, issue_key: IssueKey) -> None:
    _, full_key = issue_key(acme, ["read"])
    wrong_env, wrong_secret = APIClient(), APIClient()
    wrong_env.credentials(HTTP_AUTHORIZATION=f"Bearer {with_env(full_key, 'test')}")
    wrong_secret.credentials(HTTP_AUTHORIZATION=f"Bearer {full_key[:-1]}{'b' if full_key[-1] == 'a' else 'a'}")
    env_answer = wrong_env.get("/api/v1/tenants/acme/")
    secret_answer = wrong_secret.get("/api/v1/tenants/acme/")
    assert env_answer.status_code == secret_answer.status_code == 401
    assert env_answer.json() == secret_answer.json()
