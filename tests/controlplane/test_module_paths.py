"""Paths that outlive a move: the models' migrations match the models, and the agent's old module path still runs."""

from __future__ import annotations

import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_the_migrations_describe_the_models_as_they_are() -> None:
    out = StringIO()
    # --check exits non-zero (SystemExit) when a model differs from what its migrations build.
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_the_local_agent_still_starts_under_its_old_module_path() -> None:
    old = subprocess.run(
        [sys.executable, "-m", "deployments.localagent", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    new = subprocess.run(
        [sys.executable, "-m", "localagent", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert old.returncode == 0, old.stderr
    assert "--stop-all" in old.stdout
    assert old.stdout == new.stdout
