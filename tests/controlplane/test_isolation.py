"""The suite's names on the shared Redis and Postgres are its run's own (tests/support/isolation.py), not an
installation's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from controlplane.celery import app
from tests.support.isolation import RunNames, celery_key

ROOT = Path(__file__).resolve().parents[2]
SHOW_CELERY_SETTINGS = (
    "import django; django.setup(); from django.conf import settings; import json; "
    "print(json.dumps([settings.CELERY_TASK_DEFAULT_QUEUE, settings.CELERY_BROKER_TRANSPORT_OPTIONS]))"
)


def celery_settings(keep_run: bool = False, **env: str) -> list[Any]:
    """(default queue, transport options) as a fresh process reads them: an installation's, or with ``keep_run`` a
    process the tests start (it inherits ``os.environ``)."""
    run_variables = {"FRONTDOOR_TEST_RUN", "FRONTDOOR_CELERY_QUEUE", "FRONTDOOR_CELERY_KEY_PREFIX"}
    environ = {k: v for k, v in os.environ.items() if keep_run or k not in run_variables}
    environ.update(DJANGO_SETTINGS_MODULE="controlplane.settings", **env)
    result = subprocess.run(
        [sys.executable, "-c", SHOW_CELERY_SETTINGS], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout.splitlines()[-1]))


def test_an_installation_uses_celerys_default_queue_and_unprefixed_keys() -> None:
    queue, options = celery_settings()

    assert queue == "celery"
    assert "global_keyprefix" not in options


def test_the_queue_and_the_key_prefix_come_from_the_environment() -> None:
    queue, options = celery_settings(FRONTDOOR_CELERY_QUEUE="second", FRONTDOOR_CELERY_KEY_PREFIX="second:")

    assert queue == "second"
    assert options["global_keyprefix"] == "second:"


def test_every_name_is_derived_from_the_run_id(run_names: RunNames) -> None:
    run = run_names.run_id
    redis_prefix, test_database = settings.FRONTDOOR_REDIS_PREFIX, settings.DATABASES["default"]["TEST"]["NAME"]

    assert redis_prefix == f"fdt-{run}"
    assert app.conf.task_default_queue == f"fdt-{run}"
    assert app.conf.broker_transport_options["global_keyprefix"] == f"fdt-{run}-celery:"
    assert test_database.endswith(f"_{run}")


def test_a_process_the_tests_start_uses_the_runs_queue_and_key_prefix(run_names: RunNames) -> None:
    queue, options = celery_settings(keep_run=True)

    assert queue == run_names.celery_queue
    assert options["global_keyprefix"] == run_names.celery_key_prefix


@pytest.mark.django_db
def test_the_test_database_is_named_after_the_run(run_names: RunNames) -> None:
    assert connection.settings_dict["NAME"] == run_names.database


def test_a_task_lands_in_the_runs_queue_under_its_key_prefix(run_names: RunNames, redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    key = celery_key(run_names.celery_queue)
    before = client.llen(key)
    try:
        app.send_task("deployments.reconcile_deployment", args=[0])
        assert client.llen(key) == before + 1
    finally:
        client.delete(key)
        client.close()
    assert key == f"fdt-{run_names.run_id}-celery:fdt-{run_names.run_id}"


def test_a_run_id_that_could_match_other_keys_is_refused() -> None:
    with pytest.raises(pytest.UsageError):
        RunNames.from_environ({"FRONTDOOR_TEST_RUN": "a*"}, "test_frontdoor")
