"""The batches page in a real browser: a running batch's progress refreshes by itself, and an admin cancels it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User

from batches.models import Batch
from tenants.models import Tenant
from tests.support.batch_rows import make_batch, request_lines, store_file
from tests.support.batches import reset_batch_storage
from tests.support.browser import screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_follows_a_running_batch_and_cancels_it(
    page: Page,
    sign_in: Callable[[Page, User], None],
    console_url: str,
    adam: User,
    acme: Tenant,
    settings: Any,
    tmp_path: Path,
) -> None:
    reset_batch_storage(settings, tmp_path / "files")
    batch = make_batch(acme, store_file(acme, request_lines(10)), completed=3, failed=1)
    sign_in(page, adam)

    page.goto(f"{console_url}/t/acme/batches/")
    row = page.locator(f"#batch-{batch.public_id}")
    assert row.get_by_test_id("batch-progress").inner_text() == "4 / 10 answered (40%)"
    assert row.get_by_role("progressbar").get_attribute("aria-valuenow") == "4"

    # The workers answer more lines; the table's own polling shows it without a reload.
    Batch.unscoped_objects.filter(pk=batch.pk).update(completed=6, failed=1)
    row.get_by_test_id("batch-progress").filter(has_text="7 / 10 answered (70%)").wait_for(timeout=10_000)
    screenshot(page, "batches.png")

    # confirm() is accepted; htmx puts the answer above the table and swaps the batch's rows out of band.
    row.get_by_role("button", name=f"Cancel {batch.public_id}").click()
    notice = page.locator("#batch-notice").get_by_text(f"Batch {batch.public_id} is cancelling")
    notice.wait_for()
    assert page.locator(f"#batch-{batch.public_id} .badge").inner_text() == "cancelling"
    assert row.get_by_role("button", name=f"Cancel {batch.public_id}").count() == 0
    page.wait_for_timeout(3500)  # a poll of the table (the batch is still open) leaves the notice in place
    assert notice.is_visible() and page.locator(f"#batch-{batch.public_id} .badge").inner_text() == "cancelling"
    batch.refresh_from_db()
    assert (batch.status, batch.ending) == (Batch.Status.CANCELLING, Batch.Ending.CANCELLED)
