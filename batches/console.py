"""Console pages of a tenant's batches: the list at ``/t/<tenant>/batches/``, cancel, and file downloads.

Everyone in the tenant (and staff) sees each batch's status, progress, counts, times, errors and files; admins
cancel an open one. Batches are created through the gateway's ``/v1/batches`` (the empty state says how), so this
page changes nothing else. Cancel goes through ``batches.services.cancel_batch``, the REST API's function, and
downloads stream the stored content with ``content_response``, as the REST API and the gateway's route do.

While a batch on the page is open, the table polls itself (htmx, ``REFRESH_S``) and stops once none is. A cancel
from htmx answers with what happened, for the notice above the table (where the polling does not wipe it), and the
batch's rows out of band. htmx 2 does not swap 4xx answers, so a refused cancel answers so at 200; a plain form post
gets a redirect to the list, or the page at the refusal's status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render

from batches import services
from batches.models import Batch
from batches.openai_views import content_response
from batches.serializers import batch_errors, batch_progress
from controlplane.console import (
    TenantConsoleView,
    console_refusal,
    paginate,
    query_without_page,
    render_page_or_partial,
)
from controlplane.domain_errors import DomainError, NotFound
from tenants.models import Role

REFRESH_S = 3
# Where the Cancel button shows; ``cancel_batch`` decides, and says why it refuses.
CANCELLABLE = (Batch.Status.VALIDATING, Batch.Status.IN_PROGRESS)


@dataclass(frozen=True)
class BatchRow:
    """One batch as the table shows it."""

    batch: Batch
    percent: int  # answered lines as a whole percent of the total
    errors: list[dict[str, Any]]
    cancellable: bool


def batch_row(batch: Batch) -> BatchRow:
    return BatchRow(batch, round(batch_progress(batch) * 100), batch_errors(batch), batch.status in CANCELLABLE)


class BatchPage(TenantConsoleView):
    """What the list and the cancel share: the tenant's batches with their files, and how the table renders."""

    read_role = Role.VIEWER
    write_role = Role.ADMIN

    def batches(self) -> QuerySet[Batch]:
        return (
            Batch.objects.for_tenant(self.tenant)
            .select_related("input_file", "output_file", "error_file", "api_key")
            .order_by("-created_at", "-id")
        )

    def render_list(self, *, status: int = 200, **extra: Any) -> HttpResponse:
        page = paginate(self.request, self.batches())
        rows = [batch_row(batch) for batch in page]
        context = self.base_context(
            page=page,
            rows=rows,
            polling=any(row.batch.is_open for row in rows),
            refresh_s=REFRESH_S,
            query=query_without_page(self.request),
            gateway_v1=settings.FRONTDOOR_GATEWAY_URL.rstrip("/") + "/v1",
            **extra,
        )
        return render_page_or_partial(
            self.request, "batches/batches.html", "batches/partials/batch_table.html", context, status=status
        )

    def render_cancel_answer(self, batch_id: str, *, notice: str = "", refusal: str = "") -> HttpResponse:
        batch = self.batches().filter(public_id=batch_id).first()
        if batch is None:
            raise Http404("no such batch")
        context = self.base_context(row=batch_row(batch), notice=notice, refusal=refusal)
        return render(self.request, "batches/partials/cancel_answer.html", context)


class BatchListView(BatchPage):
    """The list, newest first and paginated; htmx gets the table alone (its own polling asks for it)."""

    def get(self, request: HttpRequest, tenant: str) -> HttpResponse:
        return self.render_list()


class BatchCancelView(BatchPage):
    """``POST``: ask a validating or running batch to stop (admin)."""

    def post(self, request: HttpRequest, tenant: str, batch_id: str) -> HttpResponse:
        htmx = getattr(request, "htmx", False)
        try:
            services.cancel_batch(self.tenant, batch_id, actor=self.principal, request_id=self.request_id)
        except NotFound as exc:
            raise Http404(exc.message) from exc
        except DomainError as exc:
            refusal = console_refusal(exc)
            if htmx:
                return self.render_cancel_answer(batch_id, refusal=refusal.message)
            return self.render_list(status=refusal.status, action_error=refusal.message)
        done = f"Batch {batch_id} is cancelling: lines already sent finish, the rest are reported as cancelled."
        if htmx:
            return self.render_cancel_answer(batch_id, notice=done)
        messages.success(request, done)
        return redirect("console-batches", tenant=self.tenant.slug)


class BatchFileContentView(TenantConsoleView):
    """A batch file's content (an input, output or error file), streamed from the batch storage."""

    read_role = Role.VIEWER
    write_role = Role.ADMIN

    def get(self, request: HttpRequest, tenant: str, file_id: str) -> StreamingHttpResponse:
        try:
            found = services.get_file(self.tenant, file_id)
        except NotFound as exc:
            raise Http404(exc.message) from exc
        return content_response(found)
