"""The layers hold: import-linter keeps its contracts, and the data plane loads nothing of Django or the apps."""

from __future__ import annotations

import configparser
import json
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import controlplane

ROOT = Path(__file__).resolve().parents[2]

# The contracts that list every controlplane module but ``controlplane.contracts`` (import-linter has no "all but").
EVERY_OTHER_CONTROLPLANE_MODULE = ("data-plane-free-of-django", "contracts-stand-alone")
# No contract ignores an import: an exception to a layer is a change to the layers, not an ignore.
CONTRACTS_WITH_IGNORES: set[str] = set()
FRAMEWORKS_AND_APPS = {
    "django",
    "rest_framework",
    "celery",
    "kombu",
    "drf_spectacular",
    "django_filters",
    "django_htmx",
    "tenants",
    "deployments",
    "quotas",
}


def _contracts() -> dict[str, configparser.SectionProxy]:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    prefix = "importlinter:contract:"
    return {name.removeprefix(prefix): config[name] for name in config.sections() if name.startswith(prefix)}


def _listed(section: configparser.SectionProxy, key: str) -> set[str]:
    return {line.strip() for line in section.get(key, "").splitlines() if line.strip()}


def test_lint_imports_keeps_every_contract() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    result = subprocess.run([lint_imports], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_data_plane_contracts_forbid_every_controlplane_module_but_contracts() -> None:
    modules = {f"controlplane.{m.name}" for m in pkgutil.iter_modules(controlplane.__path__)}
    every_other = modules - {"controlplane.contracts"}
    contracts = _contracts()
    for name in EVERY_OTHER_CONTROLPLANE_MODULE:
        forbidden = {m for m in _listed(contracts[name], "forbidden_modules") if m.startswith("controlplane.")}
        assert forbidden == every_other, f"{name}: add {every_other - forbidden}, drop {forbidden - every_other}"


def test_no_contract_ignores_imports() -> None:
    with_ignores = {name for name, section in _contracts().items() if _listed(section, "ignore_imports")}
    assert with_ignores <= CONTRACTS_WITH_IGNORES


def test_the_data_plane_loads_no_django_and_no_app() -> None:
    script = "\n".join(
        [
            "import json, sys",
            "import gateway.app, modelserver.app, localagent.agent",
            "print(json.dumps(sorted(sys.modules)))",
        ]
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    outside = [
        name
        for name in loaded
        if name.split(".")[0] in FRAMEWORKS_AND_APPS
        or (name.startswith("controlplane.") and not name.startswith("controlplane.contracts"))
    ]
    assert outside == []
    assert "controlplane.contracts" in loaded  # what they do share was loaded, so the subprocess imported for real
