"""docs/configuration.md names every environment variable the code reads (docs stay true)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ["controlplane", "tenants", "deployments", "quotas", "batches", "gateway", "modelserver", "scripts"]
READERS = re.compile(
    r"""(?:env_(?:str|int|float|bool|list)|os\.environ\.get|os\.getenv|environ\.get|_env)\(\s*f?["']([A-Z][A-Z0-9_]+)["']"""
)


def variables_read_by_code() -> set[str]:
    found: set[str] = set()
    for folder in SOURCE_DIRS:
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".sh"} and "migrations" not in path.parts:
                found.update(READERS.findall(path.read_text()))
    return found


def test_it_finds_the_variables_the_settings_read() -> None:
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"} <= variables_read_by_code()


def test_it_documents_every_variable_the_code_reads() -> None:
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "docs" / "configuration.md").read_text()))
    missing = sorted(variables_read_by_code() - documented)
    assert missing == [], f"undocumented environment variables: {missing}"
