"""The API docs pages work offline: Swagger UI and Redoc are the project's own static files (a pinned
drf-spectacular-sidecar), the pages load nothing from another origin, and the staff pages link to them."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from html.parser import HTMLParser
from importlib.metadata import version
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.test import Client
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DOCS_PAGES = ["/api/docs/", "/api/redoc/"]


class References(HTMLParser):
    """Every URL a page makes the browser load: script sources, stylesheets, icons, preconnects, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if (url := values.get(name)) is not None and tag in {"script", "link", "img", "iframe"}:
                self.urls.append(url)


def references(page: str) -> list[str]:
    parser = References()
    parser.feed(page)
    return parser.urls


@pytest.mark.django_db
@pytest.mark.parametrize("path", DOCS_PAGES)
def test_the_docs_pages_load_only_our_own_static_files(path: str, client: Client) -> None:
    response = client.get(path)
    assert response.status_code == 200
    page = response.content.decode()
    fetched = [url for url in references(page) if not url.startswith("data:")]  # data: URLs are the page's own
    assert fetched, "the page loads its UI from somewhere"
    assert all(url.startswith("/static/drf_spectacular_sidecar/") for url in fetched), fetched
    for url in fetched:  # and every one of them is there to serve
        assert finders.find(url.removeprefix("/static/")) is not None, url
    assert "cdn." not in page and "fonts.googleapis" not in page and "validator.swagger.io" not in page


@pytest.mark.django_db
def test_the_swagger_page_reads_the_schema_from_this_origin(client: Client) -> None:
    page = client.get("/api/docs/").content.decode()
    assert 'url: "/api/schema/"' in page
    assert '"validatorUrl": null' in page


def test_the_sidecar_is_a_pinned_dependency_and_the_installed_one_fits_the_pin() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [sidecar] = [Requirement(d) for d in dependencies if Requirement(d).name == "drf-spectacular-sidecar"]
    operators = {spec.operator for spec in sidecar.specifier}
    assert ">=" in operators and "<" in operators  # a floor and a ceiling: never a floating @latest
    assert sidecar.specifier.contains(version("drf-spectacular-sidecar"))


@pytest.mark.parametrize("path", ["/staff/", "/staff/capacity/"])
def test_the_staff_pages_link_the_api_docs(path: str, staff: User, client_as: Callable[[User | None], Client]) -> None:
    page = client_as(staff).get(path).content.decode()
    assert '<a href="/api/docs/">API docs</a>' in page.split('aria-label="Staff pages"', 1)[1]
