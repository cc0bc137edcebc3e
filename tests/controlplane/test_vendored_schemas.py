"""The test suite reads every schema from the repository itself, so a clone in any folder validates manifests."""

from __future__ import annotations

from pathlib import Path

from tests.fakekube import validation

ROOT = Path(__file__).resolve().parents[2]


def test_it_reads_the_httproute_crd_from_inside_the_repository() -> None:
    crd = validation._CRD.resolve()
    assert crd.is_relative_to(ROOT), f"{crd} lies outside the repository"
    assert crd.is_file()
    schema = validation.httproute_schema()
    assert schema["properties"]["spec"]["type"] == "object"


def test_the_vendored_crd_names_its_version_and_licence() -> None:
    readme = (ROOT / "schemas" / "gateway-api" / "README.md").read_text()
    assert "v1.6.1" in readme and "Apache License 2.0" in readme
    assert "bundle-version: v1.6.1" in validation._CRD.read_text()
