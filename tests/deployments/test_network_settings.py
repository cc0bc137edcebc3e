"""The address policy's settings: bad values stop the process at start with a message naming the variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRINT = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps([s.FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS, s.FRONTDOOR_WEB_ADDRESS, "
    "s.FRONTDOOR_PLATFORM_ADDRESSES]))"
)
VARIABLES = ("FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS", "FRONTDOOR_WEB_ADDRESS", "FRONTDOOR_PLATFORM_ADDRESSES", "WEB_PORT")


def settings_with(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    return subprocess.run(
        [sys.executable, "-c", PRINT],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "controlplane.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_defaults_allow_no_network_and_name_the_web_on_its_port() -> None:
    result = settings_with(WEB_PORT="8123")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [[], "127.0.0.1:8123", []]


def test_networks_and_addresses_are_read_and_normalised() -> None:
    result = settings_with(
        FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS="10.20.0.0/16, 127.0.0.1/8,fd00::/8",
        FRONTDOOR_WEB_ADDRESS="10.20.0.4:8000",
        FRONTDOOR_PLATFORM_ADDRESSES="[::1]:9090,metrics.internal:9100",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        ["10.20.0.0/16", "127.0.0.0/8", "fd00::/8"],
        "10.20.0.4:8000",
        ["[::1]:9090", "metrics.internal:9100"],
    ]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS", "10.0.0.0/33"),
        ("FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS", "127.0.0.0/8,not-a-network"),
        ("FRONTDOOR_WEB_ADDRESS", "127.0.0.1"),
        ("FRONTDOOR_WEB_ADDRESS", "127.0.0.1:99999"),
        ("FRONTDOOR_PLATFORM_ADDRESSES", "10.0.0.7:9090,http://x/"),
        ("FRONTDOOR_PLATFORM_ADDRESSES", "[::1:9090"),
    ],
)
def test_a_bad_value_stops_the_process_naming_the_variable(variable: str, value: str) -> None:
    result = settings_with(**{variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and variable in result.stderr
