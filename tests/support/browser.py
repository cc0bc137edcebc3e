"""What the browser tests share: viewport sizes, screenshots for the docs, the stack of processes they drive."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.worker import Worker

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "img"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot for docs/console.md."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=full_page)
    return path


@dataclass
class Stack:
    gateway_url: str
    worker: Worker

    def logs(self) -> str:
        return self.worker.log()
