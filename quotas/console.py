"""Console pages for usage and quotas: the tenant Usage page and the platform-staff pages.

Staff pages (``/staff/...``) are for ``is_staff`` users only; anyone else signed in gets a 404 (the pages do not
admit they exist). Every figure comes from ``quotas.reports`` (aggregated in SQL, a fixed number of queries per
page); the quota editor changes quotas through ``tenants.services.update_quota``, the function the REST API calls,
and previews what a change would do with ``quotas.quota_preview`` (the autoscaler's own computation). Each page
renders in full, or only its partial for htmx requests; a refused form answers 422 with the form and its errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.views import View

from controlplane import charts
from controlplane.console import (
    TenantConsoleView,
    console_principal,
    nav_context,
    paginate,
    query_without_page,
    render_page_or_partial,
    show_refusal,
)
from controlplane.domain_errors import DomainError, Invalid
from controlplane.validators import BIGINT_MAX, INT_MAX
from quotas import reports
from quotas.csv_export import staff_usage_csv, tenant_usage_csv
from quotas.models import QUOTA_FIELDS, Quota
from quotas.quota_preview import CappedDeployment, deployments_capped_by
from tenants import services
from tenants.models import Tenant

TOP_N = 15


# ---------------------------------------------------------------- shared pieces


def report_range(request: HttpRequest) -> tuple[reports.DateRange, str | None]:
    """The requested ``from``/``to`` range, or the default range and the error to show beside the form."""
    try:
        return reports.parse_range(request.GET.get("from"), request.GET.get("to")), None
    except reports.ReportRangeError as exc:
        return reports.parse_range(None, None), str(exc)


def daily_charts(prefix: str, period: reports.DateRange, days: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests (and errors) per day as columns, tokens per day (prompt and completion) as lines."""
    categories = [row["day"].strftime("%b %d") for row in days]
    span = f"from {period.first} to {period.last} (UTC days)"
    return {
        "requests_chart": charts.column_chart(
            f"{prefix}-requests",
            "Requests per day",
            f"Requests and errors per day {span}; total {sum(r['requests'] for r in days):,} requests.",
            categories,
            [
                charts.Series("requests", [row["requests"] for row in days]),
                charts.Series("errors", [row["errors"] for row in days]),
            ],
            "requests",
            category_name="Day (UTC)",
        ),
        "tokens_chart": charts.line_chart(
            f"{prefix}-tokens",
            "Tokens per day",
            f"Prompt and completion tokens per day {span}; total {sum(r['tokens'] for r in days):,} tokens.",
            categories,
            [
                charts.Series("prompt", [row["prompt_tokens"] for row in days]),
                charts.Series("completion", [row["completion_tokens"] for row in days]),
            ],
            "tokens",
            category_name="Day (UTC)",
        ),
    }


def top_chart(chart_id: str, title: str, rows: list[dict[str, Any]], group_by: str) -> Any:
    """The top rows of a grouped report by tokens, as horizontal bars."""
    top = rows[:TOP_N]
    return charts.hbar_chart(
        chart_id,
        title,
        f"{title}: the {len(top)} largest by tokens in the chosen range.",
        [reports.label_of(row, group_by) for row in top],
        [row["tokens"] for row in top],
        "tokens",
        category_name=group_by.capitalize(),
    )


def labelled(rows: Any, group_by: str) -> list[dict[str, Any]]:
    return [{**row, "label": reports.label_of(row, group_by)} for row in rows]


def shown_units(figures: Iterable[dict[str, Any]]) -> dict[str, bool]:
    """Which of inferences and images a page shows: those any of its figures has (most traffic has neither)."""
    rows = list(figures)
    return {unit: any(row.get(unit) for row in rows) for unit in reports.UNIT_METRICS}


# ---------------------------------------------------------------- tenant usage page


class TenantUsageView(TenantConsoleView):
    """``/t/<slug>/usage/``: requests and tokens per day, per deployment and per key over a chosen range.

    Inferences and images get a figure and a column each only when the range has any.
    """

    def get(self, request: HttpRequest, tenant: str) -> HttpResponseBase:
        period, range_error = report_range(request)
        if request.GET.get("format") == "csv" and range_error is None:
            return tenant_usage_csv(period, self.tenant.pk, self.tenant.slug)
        days = reports.usage_by_day(period, self.tenant)
        # Whole lists (one query each, bounded by the tenant's deployments and keys), paginated in memory: the
        # charts show the overall top and no COUNT(*) query rescans the range.
        deployments = labelled(reports.usage_grouped(period, "deployment", self.tenant), "deployment")
        keys = labelled(reports.usage_grouped(period, "key", self.tenant), "key")
        by_deployment = paginate(request, deployments, per_page=25)
        by_key = paginate_param(request, keys, "kpage")
        totals = reports.totals_of(days)
        context = self.base_context(
            period=period,
            range_error=range_error,
            totals=totals,
            units=shown_units([totals]),
            deployments_page=by_deployment,
            deployment_rows=list(by_deployment),
            keys_page=by_key,
            key_rows=list(by_key),
            deployment_chart=top_chart("usage-deployments", "Tokens per deployment", deployments, "deployment"),
            key_chart=top_chart("usage-keys", "Tokens per API key", keys, "key"),
            range_query=_query(period),
            query=query_without_page(request),
            **daily_charts("usage", period, days),
        )
        return render_page_or_partial(request, "quotas/tenant_usage.html", "quotas/partials/usage_body.html", context)


def paginate_param(request: HttpRequest, rows: Any, param: str, per_page: int = 25) -> Page:
    """Paginate by another query parameter than ``page`` (two tables on one page)."""
    return Paginator(rows, per_page).get_page(request.GET.get(param))


def _query(period: reports.DateRange) -> str:
    return urlencode(period.as_query())


# ---------------------------------------------------------------- staff pages


class StaffView(LoginRequiredMixin, View):
    """Base of the staff pages: signed-out visitors go to sign in; signed-in non-staff get a 404."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        if not request.user.is_staff:
            raise Http404("no such page")
        return super().dispatch(request, *args, **kwargs)

    def base_context(self, **extra: Any) -> dict[str, Any]:
        return {"is_staff": True, **nav_context(self.request), **extra}

    @property
    def request_id(self) -> str:
        return str(getattr(self.request, "request_id", "") or "")


class StaffTenantsView(StaffView):
    """``/staff/``: every tenant with GPU quota vs allocation, usage this month and SLO attainment.

    Inferences and images this month get a column each when a tenant on the page has any.
    """

    def get(self, request: HttpRequest) -> HttpResponse:
        search = request.GET.get("q", "").strip()
        tenants = Tenant.objects.select_related("quota").order_by("slug")
        if search:
            tenants = tenants.filter(Q(slug__icontains=search) | Q(name__icontains=search))
        page = paginate(request, tenants)
        ids = [t.pk for t in page]
        gpus = reports.gpus_by_tenant(ids)
        usage = reports.month_usage_by_tenant(ids)
        slo = reports.slo_attainment_by_tenant(ids)
        rows = []
        for tenant in page:
            quota = getattr(tenant, "quota", None)
            rows.append(
                {
                    "tenant": tenant,
                    "gpus": reports.gpu_rows(quota.gpus if quota else {}, gpus.get(tenant.pk, {})),
                    "usage": usage.get(tenant.pk, dict.fromkeys(reports.FIGURES, 0)),
                    "budget": quota.monthly_token_budget if quota else None,
                    "slo": slo.get(tenant.pk),
                }
            )
        units = shown_units(row["usage"] for row in rows)
        context = self.base_context(page=page, rows=rows, units=units, q=search, query=query_without_page(request))
        return render_page_or_partial(request, "quotas/staff_tenants.html", "quotas/partials/staff_tenants_table.html",
                                      context)  # fmt: skip


class QuotaForm(forms.Form):
    """A tenant's quota; an empty rate limit or budget means unlimited. Rules are the model's (via the service)."""

    max_deployments = forms.IntegerField(max_value=INT_MAX)
    max_replicas = forms.IntegerField(
        max_value=INT_MAX, help_text="the deployments' max replicas together; running replicas stay within it too"
    )
    requests_per_minute = forms.IntegerField(required=False, max_value=INT_MAX, help_text="empty = unlimited")
    tokens_per_minute = forms.IntegerField(required=False, max_value=INT_MAX, help_text="empty = unlimited")
    max_concurrent_requests = forms.IntegerField(required=False, max_value=INT_MAX, help_text="empty = unlimited")
    monthly_token_budget = forms.IntegerField(required=False, max_value=BIGINT_MAX, help_text="empty = unlimited")
    batch_requests_per_minute = forms.IntegerField(
        required=False, max_value=INT_MAX, label="Batch requests per minute", help_text="empty = unlimited"
    )
    batch_tokens_per_minute = forms.IntegerField(
        required=False, max_value=INT_MAX, label="Batch tokens per minute", help_text="empty = unlimited"
    )
    cpu_cores = forms.IntegerField(max_value=INT_MAX, label="CPU cores (Kubernetes namespace)")
    memory_gib = forms.IntegerField(max_value=INT_MAX, label="Memory GiB (Kubernetes namespace)")
    max_open_batches = forms.IntegerField(max_value=INT_MAX, label="Open batches", help_text="batches not yet ended")
    max_batch_queued_lines = forms.IntegerField(
        max_value=INT_MAX, label="Queued batch lines", help_text="unanswered lines across open batches"
    )

    # Every quota field but the GPU map, which is one field per GPU type (added last, in __init__).
    SCALAR_FIELDS = tuple(name for name in QUOTA_FIELDS if name != "gpus")
    field_order = SCALAR_FIELDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for gpu_type in settings.FRONTDOOR_GPU_TYPES:
            self.fields[self.gpu_field(gpu_type)] = forms.IntegerField(
                required=False, max_value=INT_MAX, label=f"{gpu_type} GPUs", help_text="empty or 0 = none"
            )

    @staticmethod
    def gpu_field(gpu_type: str) -> str:
        return f"gpus_{gpu_type}"

    @classmethod
    def initial_from(cls, quota: Quota) -> dict[str, Any]:
        initial: dict[str, Any] = {name: getattr(quota, name) for name in cls.SCALAR_FIELDS}
        for gpu_type, count in quota.gpus.items():
            initial[cls.gpu_field(gpu_type)] = count
        return initial

    def changes(self) -> dict[str, Any]:
        """The quota fields as the service takes them (``gpus`` as one map, zero counts left out)."""
        data = {name: self.cleaned_data[name] for name in self.SCALAR_FIELDS}
        data["gpus"] = {
            gpu_type: count
            for gpu_type in settings.FRONTDOOR_GPU_TYPES
            if (count := self.cleaned_data.get(self.gpu_field(gpu_type))) not in (None, 0)
        }
        return data

    def field_for(self, field: str, message: str) -> str | None:
        """Where a validation message belongs on the form: its field, a GPU error on the GPU type it names."""
        if field == "gpus":
            named = [t for t in settings.FRONTDOOR_GPU_TYPES if f"'{t}'" in message]
            return self.gpu_field(named[0]) if named else None
        return field if field in self.fields else None


def tenant_and_quota(slug: str) -> tuple[Tenant, Quota]:
    """The tenant ``slug`` and its quota (404 for an unknown slug)."""
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        raise Http404("no such tenant")
    quota = Quota.objects.for_tenant(tenant).select_related("tenant").first()
    if quota is None:  # tenants made before quotas existed get the defaults on first sight (as the API does)
        quota, _ = Quota.unscoped_objects.get_or_create(tenant=tenant)
    return tenant, quota


def quota_preview(form: QuotaForm, quota: Quota) -> dict[str, Any]:
    """What saving the form would do: ``capped`` (the deployments the autoscaler scales down), or ``errors``.

    An unbound form previews the stored quota. A bound one is checked as the service checks it (the form, then the
    model's own validation), so a preview never promises what saving would refuse.
    """
    if not form.is_bound:
        return {"capped": deployments_capped_by(quota), "errors": []}
    if form.is_valid():
        proposed = Quota(tenant_id=quota.tenant_id, **form.changes())
        try:
            proposed.full_clean(exclude=["tenant"])
        except ValidationError as exc:
            show_refusal(form, Invalid.from_validation_error(exc), field_for=form.field_for)
        else:
            return {"capped": deployments_capped_by(proposed), "errors": []}
    return {"capped": [], "errors": error_lines(form)}


def error_lines(form: forms.Form) -> list[str]:
    """A form's errors as lines ("Max replicas: …"), for a summary away from the fields."""
    return [
        f"{form[name].label}: {message}" if name in form.fields else str(message)
        for name, messages in form.errors.items()
        for message in messages
    ]


def saved_notice(tenant: Tenant, capped: list[CappedDeployment]) -> str:
    """The message after a save, naming the deployments the autoscaler now scales down."""
    notice = f"Quota of {tenant.slug} saved."
    if capped:
        moves = ", ".join(
            f"{d.name} down to {d.capped} replica{pluralize(d.capped)} (from {d.current})" for d in capped
        )
        notice += f" Within seconds the autoscaler scales {moves}."
    return notice


def render_quota_editor(
    request: HttpRequest, tenant: Tenant, quota: Quota, form: QuotaForm, preview: dict[str, Any], **extra: Any
) -> HttpResponse:
    """The quota page (or its editor partial), 422 when the form carries errors."""
    held = reports.gpus_by_tenant([tenant.pk]).get(tenant.pk, {})
    context = {
        "is_staff": True,
        **nav_context(request),
        "target": tenant,
        "quota": quota,
        "form": form,
        "preview": preview,
        "gpus": reports.gpu_rows(quota.gpus, held),
        **extra,
    }
    status = 422 if form.is_bound and form.errors else 200
    return render_page_or_partial(request, "quotas/staff_quota.html", "quotas/partials/quota_form.html", context,
                                  status=status)  # fmt: skip


class StaffQuotaView(StaffView):
    """``/staff/tenants/<slug>/quota/``: edit a tenant's quota (the same service as ``PATCH .../quota/``).

    The editor shows, before saving, the running deployments the values would scale down (``StaffQuotaPreviewView``
    refreshes it as they change). A save answers htmx with the editor and a notice in place, anyone else with a
    redirect (the notice then comes with the next page).
    """

    def get(self, request: HttpRequest, slug: str) -> HttpResponse:
        tenant, quota = tenant_and_quota(slug)
        form = QuotaForm(initial=QuotaForm.initial_from(quota))
        return render_quota_editor(request, tenant, quota, form, quota_preview(form, quota))

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        tenant, quota = tenant_and_quota(slug)
        form = QuotaForm(request.POST)
        if form.is_valid():
            try:
                services.update_quota(
                    quota,
                    changes=form.changes(),
                    actor=console_principal(request, tenant),
                    request_id=self.request_id,
                )
            except DomainError as exc:
                show_refusal(form, exc, field_for=form.field_for)
            else:
                capped = deployments_capped_by(quota)
                notice = saved_notice(tenant, capped)
                if not getattr(request, "htmx", False):
                    messages.success(request, notice)
                    return redirect("staff-quota", slug=tenant.slug)
                fresh = QuotaForm(initial=QuotaForm.initial_from(quota))
                preview = {"capped": capped, "errors": []}
                return render_quota_editor(request, tenant, quota, fresh, preview, saved_notice=notice)
        quota.refresh_from_db()  # the service may have set fields on it before validation refused them
        return render_quota_editor(request, tenant, quota, form, {"capped": [], "errors": error_lines(form)})


class StaffQuotaPreviewView(StaffView):
    """``POST /staff/tenants/<slug>/quota/preview/``: what the posted values would do; saves nothing.

    htmx gets the preview alone (refreshed as the editor's fields change, 200 even for values that cannot be
    saved: the preview says why); a browser without JavaScript gets the whole editor with the preview in it.
    """

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        tenant, quota = tenant_and_quota(slug)
        form = QuotaForm(request.POST)
        preview = quota_preview(form, quota)
        if getattr(request, "htmx", False):
            return render(request, "quotas/partials/quota_preview_body.html", {"target": tenant, "preview": preview})
        return render_quota_editor(request, tenant, quota, form, preview)


class StaffUsageView(StaffView):
    """``/staff/usage/``: usage of every tenant over a date range, per day and per tenant, with a CSV download.

    Inferences and images get a figure and a column each when the range has any.
    """

    def get(self, request: HttpRequest) -> HttpResponseBase:
        period, range_error = report_range(request)
        if request.GET.get("format") == "csv" and range_error is None:
            return staff_usage_csv(period)
        days = reports.usage_by_day(period)
        # One row per tenant with usage, paginated in memory: no COUNT(*) query rescans the range.
        tenants = labelled(reports.usage_grouped(period, "tenant"), "tenant")
        by_tenant = paginate(request, tenants)
        totals = reports.totals_of(days)
        context = self.base_context(
            period=period,
            range_error=range_error,
            totals=totals,
            units=shown_units([totals]),
            tenants_page=by_tenant,
            tenant_rows=list(by_tenant),
            tenant_chart=top_chart("staff-tenants", "Tokens per tenant", tenants, "tenant"),
            range_query=_query(period),
            query=query_without_page(request),
            **daily_charts("staff-usage", period, days),
        )
        return render_page_or_partial(
            request, "quotas/staff_usage.html", "quotas/partials/staff_usage_body.html", context
        )


class StaffCapacityView(StaffView):
    """``/staff/capacity/``: GPUs granted, allocated and in use by type against the cluster's configured capacity.

    The chart shows every figure of the table but the free GPUs; with every figure zero there is no chart (the table
    says so), never an empty chart that reads as "no usage".
    """

    def get(self, request: HttpRequest) -> HttpResponse:
        rows = reports.capacity_rows()
        series = [
            charts.Series("capacity", [row["capacity"] or 0 for row in rows]),
            charts.Series("granted by quotas", [row["granted"] for row in rows]),
            charts.Series("allocated (max)", [row["allocated"] for row in rows]),
            charts.Series("in use (desired)", [row["in_use"] for row in rows]),
        ]
        chart = None
        if any(any(one.values) for one in series):
            chart = charts.column_chart(
                "capacity",
                "GPUs by type",
                "Cluster capacity, GPUs granted by quotas, GPUs allocated (replicas at max) and GPUs in use "
                "(desired replicas) by GPU type.",
                [row["gpu_type"] for row in rows],
                series,
                "GPUs",
            )
        configured = bool(reports.cluster_gpu_capacity())
        context = self.base_context(rows=rows, chart=chart, configured=configured)
        return render_page_or_partial(request, "quotas/staff_capacity.html", "quotas/partials/capacity_table.html",
                                      context)  # fmt: skip
