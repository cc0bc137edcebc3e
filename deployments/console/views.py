"""Console pages for deployments: overview, list, create, detail (status, revisions, traffic, scale, events,
manifests, SLO charts) and delete. Every change goes through ``deployments.services`` (the functions the REST API
calls); errors they raise are shown on the form field they concern, with the input kept.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q, QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from controlplane.console import (
    TenantConsoleView,
    console_refusal,
    paginate,
    query_without_page,
    render_page_or_partial,
    show_refusal,
)
from controlplane.domain_errors import DomainError, QuotaExceeded
from deployments import rollout as rollouts
from deployments import services
from deployments.backends import manifests
from deployments.console.figures import live_figures, quota_bars
from deployments.models import DeploymentEvent, ModelDeployment, Revision, Rollout, Runtime
from deployments.reconcile.engine import desired_spec
from deployments.sizing import BOUNDS, SIZING_FIELDS, Sizing, default_sizing
from tenants.models import Role

# Statuses during which the detail page's status partial refreshes itself.
MOVING_STATUSES = frozenset(
    {ModelDeployment.Status.PENDING, ModelDeployment.Status.PROGRESSING, ModelDeployment.Status.DELETING}
)


# ---------------------------------------------------------------- forms


def _gpu_choices() -> list[tuple[str, str]]:
    return [("", "none (CPU)")] + [(t, t) for t in settings.FRONTDOOR_GPU_TYPES]


def _sizing_input(name: str, label: str, integer: bool = False) -> forms.Field:
    """An optional sizing input; blank is the default, which its placeholder shows (``show_sizing_defaults``)."""
    least, most = BOUNDS[name]
    help_text = "blank: the default for the runtime and GPU count"
    if integer:
        return forms.IntegerField(
            required=False, min_value=int(least), max_value=int(most), label=label, help_text=help_text
        )
    return forms.FloatField(required=False, min_value=least, max_value=most, label=label, help_text=help_text)


def show_sizing_defaults(form: forms.Form, defaults: Sizing) -> None:
    for name in SIZING_FIELDS:
        form.fields[name].widget.attrs["placeholder"] = f"{getattr(defaults, name):g}"


class DeploymentForm(forms.Form):
    """Input for a new deployment; rules beyond field types are the service's (shown back on the fields)."""

    name = forms.CharField(max_length=40, help_text="lowercase letters, digits and '-'; clients send it as `model`")
    runtime = forms.ChoiceField(choices=Runtime.choices, initial=Runtime.BUILTIN)
    model = forms.CharField(max_length=200, help_text="model id the replicas serve, e.g. frontdoor/sim-chat")
    image = forms.CharField(max_length=300, required=False, help_text="empty = the runtime's default image")
    endpoints = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="runtime 'external' only: one URL a line"
    )
    gpu_type = forms.ChoiceField(choices=_gpu_choices, required=False)
    gpu_count = forms.IntegerField(min_value=0, max_value=16, initial=0, label="GPUs per replica")
    min_replicas = forms.IntegerField(min_value=0, max_value=1000, initial=1, help_text="0 = scale to zero when idle")
    max_replicas = forms.IntegerField(min_value=1, max_value=1000, initial=1)
    target_concurrency = forms.IntegerField(min_value=1, initial=8, help_text="in-flight requests per replica")
    timeout_s = forms.IntegerField(min_value=1, max_value=3600, initial=120, label="Timeout (s)")
    slo_p95_latency_ms = forms.IntegerField(min_value=1, required=False, label="SLO p95 latency (ms)")
    cpu_cores = _sizing_input("cpu_cores", "CPU cores per replica")
    memory_gib = _sizing_input("memory_gib", "Memory per replica (GiB, shared memory included)")
    shm_gib = _sizing_input("shm_gib", "Shared memory per replica (GiB)")
    ephemeral_storage_gib = _sizing_input("ephemeral_storage_gib", "Ephemeral storage per replica (GiB)")
    startup_timeout_s = _sizing_input("startup_timeout_s", "Startup window (s)", integer=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The placeholders show the defaults for the runtime and GPU count submitted (the initial ones at first).
        runtime = str(self.data.get("runtime") or Runtime.BUILTIN)
        try:
            gpus = min(max(int(self.data.get("gpu_count") or 0), 0), 16)
        except ValueError:
            gpus = 0
        show_sizing_defaults(self, default_sizing(runtime, gpus))

    def service_data(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["endpoints"] = [line.strip() for line in data.get("endpoints", "").splitlines() if line.strip()]
        data["gpu_type"] = data.get("gpu_type") or ""
        return data


class ScaleForm(forms.Form):
    min_replicas = forms.IntegerField(min_value=0, max_value=1000)
    max_replicas = forms.IntegerField(min_value=1, max_value=1000)


class CanaryForm(forms.Form):
    """Traffic to the newest revision, in percent; the previous serving revision keeps the rest."""

    canary_weight = forms.IntegerField(min_value=0, max_value=100, label="Newest revision's share (%)")


class NewRevisionForm(forms.Form):
    """A spec change makes a new revision; ``canary_weight`` sends it only part of the traffic at first."""

    model = forms.CharField(max_length=200)
    image = forms.CharField(max_length=300, required=False)
    cpu_cores = _sizing_input("cpu_cores", "CPU cores per replica")
    memory_gib = _sizing_input("memory_gib", "Memory per replica (GiB, shared memory included)")
    shm_gib = _sizing_input("shm_gib", "Shared memory per replica (GiB)")
    ephemeral_storage_gib = _sizing_input("ephemeral_storage_gib", "Ephemeral storage per replica (GiB)")
    startup_timeout_s = _sizing_input("startup_timeout_s", "Startup window (s)", integer=True)
    canary_weight = forms.IntegerField(min_value=0, max_value=100, initial=10, label="Canary share (%)")

    def __init__(self, *args: Any, defaults: Sizing, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        show_sizing_defaults(self, defaults)

    def service_data(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in ("model", "image", *SIZING_FIELDS)}


class RolloutStartForm(forms.Form):
    """A metric-gated rollout of the newest revision (``deployments.rollout.start_rollout`` checks the rest)."""

    steps = forms.CharField(
        max_length=100, initial="10, 25, 50, 100", help_text="traffic percentages for the new revision, ending at 100"
    )
    pause_s = forms.IntegerField(
        min_value=0, max_value=86_400, initial=30, label="Pause per step (s)", help_text="how long each step is watched"
    )

    def clean_steps(self) -> list[int]:
        try:
            return [int(part) for part in self.cleaned_data["steps"].replace(" ", "").split(",") if part]
        except ValueError as exc:
            raise ValidationError("whole numbers separated by commas, e.g. 10, 25, 50, 100") from exc


# The running rollout's buttons: (action, label); pause and resume show one at a time.
ROLLOUT_ACTIONS = (("promote", "Promote"), ("pause", "Pause"), ("resume", "Resume"), ("rollback", "Roll back"))


# Where a quota refusal belongs on the form: the quota its message names.
def quota_field(exc: QuotaExceeded) -> str | None:
    message = exc.message
    if "GPUs" in message:
        return "gpu_count"
    if "replicas:" in message:
        return "max_replicas"
    return None


def sizing_rows(deployment: ModelDeployment) -> list[tuple[str, str, bool]]:
    """The detail page's sizing facts: (label, value in effect, whether it is the default). None run no replicas."""
    if deployment.runtime == Runtime.EXTERNAL:
        return []
    sizing = deployment.sizing
    return [
        (label, f"{getattr(sizing, name):g}{unit}", getattr(deployment, name) is None)
        for name, label, unit in (
            ("cpu_cores", "CPU cores", ""),
            ("memory_gib", "Memory", " GiB"),
            ("shm_gib", "Shared memory", " GiB"),
            ("ephemeral_storage_gib", "Ephemeral storage", " GiB"),
            ("startup_timeout_s", "Startup window", " s"),
        )
    ]


def show_service_errors(form: forms.Form, exc: DomainError) -> None:
    """Put a service's refusal on the right form field (or the form): a quota refusal on the quota it names."""
    if isinstance(exc, QuotaExceeded):
        form.add_error(quota_field(exc), exc.message)
    else:
        show_refusal(form, exc)


# ---------------------------------------------------------------- pages


def filtered_deployments(view: TenantConsoleView, request: HttpRequest) -> QuerySet[ModelDeployment]:
    queryset = (
        ModelDeployment.objects.for_tenant(view.tenant)
        .only(
            "id",
            "tenant_id",
            "name",
            "runtime",
            "model",
            "status",
            "desired_state",
            "gpu_type",
            "gpu_count",
            "min_replicas",
            "max_replicas",
            "desired_replicas",
            "ready_replicas",
            "updated_at",
        )
        .annotate(
            # During a canary each weighted revision runs at least one replica, so ready counts compare to the plan.
            planned_replicas=Sum("revisions__desired_replicas", filter=Q(revisions__weight__gt=0)),
        )
    )
    if q := request.GET.get("q", "").strip():
        queryset = queryset.filter(Q(name__icontains=q) | Q(model__icontains=q))
    if status := request.GET.get("status"):
        queryset = queryset.filter(status=status)
    if runtime := request.GET.get("runtime"):
        queryset = queryset.filter(runtime=runtime)
    if gpu_type := request.GET.get("gpu_type"):
        queryset = queryset.filter(gpu_type=gpu_type)
    return queryset.order_by("name")


class OverviewView(TenantConsoleView):
    def get(self, request: HttpRequest, tenant: str) -> HttpResponse:
        page = paginate(request, filtered_deployments(self, request))
        figures = live_figures(self.tenant.pk, [d.pk for d in page])
        rows = [(d, figures[d.pk]) for d in page]
        counts = dict(
            ModelDeployment.objects.for_tenant(self.tenant).values_list("status").annotate(n=Count("id")).order_by()
        )
        context = self.base_context(
            page=page, rows=rows, bars=quota_bars(self.tenant), status_counts=counts, query=query_without_page(request)
        )
        return render_page_or_partial(
            request, "deployments/overview.html", "deployments/partials/overview_rows.html", context
        )


class DeploymentListView(TenantConsoleView):
    def get(self, request: HttpRequest, tenant: str) -> HttpResponse:
        page = paginate(request, filtered_deployments(self, request))
        context = self.base_context(
            page=page,
            query=query_without_page(request),
            filters={k: request.GET.get(k, "") for k in ("q", "status", "runtime", "gpu_type")},
            statuses=ModelDeployment.Status.choices,
            runtimes=Runtime.choices,
            gpu_types=settings.FRONTDOOR_GPU_TYPES,
        )
        return render_page_or_partial(request, "deployments/list.html", "deployments/partials/list_table.html", context)


class DeploymentCreateView(TenantConsoleView):
    read_role = Role.MEMBER
    write_role = Role.MEMBER

    def _render(self, form: DeploymentForm, status: int = 200) -> HttpResponse:
        context = self.base_context(form=form, bars=quota_bars(self.tenant))
        return render_page_or_partial(
            self.request, "deployments/create.html", "deployments/partials/create_form.html", context, status=status
        )

    def get(self, request: HttpRequest, tenant: str) -> HttpResponse:
        return self._render(DeploymentForm())

    def post(self, request: HttpRequest, tenant: str) -> HttpResponse:
        form = DeploymentForm(request.POST)
        if form.is_valid():
            try:
                deployment = services.create_deployment(
                    self.tenant, form.service_data(), actor=self.principal, request_id=self.request_id
                )
            except DomainError as exc:
                show_service_errors(form, exc)
            else:
                messages.success(request, f"Deployment {deployment.name} created; it becomes ready shortly.")
                return redirect("console-deployment", tenant=self.tenant.slug, name=deployment.name)
        return self._render(form, status=422)


class DeploymentMixin(TenantConsoleView):
    """Pages about one deployment (``/t/<tenant>/deployments/<name>/...``)."""

    deployment: ModelDeployment

    def get_deployment(self, name: str) -> ModelDeployment:
        deployment = ModelDeployment.objects.for_tenant(self.tenant).filter(name=name).first()
        if deployment is None:
            raise Http404("no such deployment")
        self.deployment = deployment
        return deployment

    def detail_context(self, **extra: Any) -> dict[str, Any]:
        deployment = self.deployment
        revisions = list(Revision.objects.for_tenant(self.tenant).filter(deployment=deployment).order_by("-number"))
        serving = [r for r in revisions if r.weight > 0]
        rollout_context = self.rollout_context(extra.pop("rollout_form", None))
        rollout = rollout_context["rollout"]
        moving = (
            deployment.status in MOVING_STATUSES
            or deployment.observed_generation < deployment.generation
            or rollout is not None
        )
        newest = revisions[0] if revisions else None
        return self.base_context(
            deployment=deployment,
            planned_replicas=sum(r.desired_replicas for r in serving) or deployment.desired_replicas,
            revisions=revisions,
            serving=serving,
            newest=newest,
            moving=moving,
            deleting=deployment.desired_state == ModelDeployment.DesiredState.DELETING,
            events=DeploymentEvent.objects.for_tenant(self.tenant).filter(deployment=deployment)[:20],
            scale_form=extra.pop("scale_form", None)
            or ScaleForm(initial={"min_replicas": deployment.min_replicas, "max_replicas": deployment.max_replicas}),
            canary_form=extra.pop("canary_form", None)
            or CanaryForm(initial={"canary_weight": newest.weight if newest else 100}),
            revision_form=extra.pop("revision_form", None)
            or NewRevisionForm(
                prefix="rev",
                initial={"model": deployment.model, "image": deployment.image, **deployment.sizing_values()},
                defaults=deployment.sizing_defaults,
            ),
            sizing_rows=sizing_rows(deployment),
            **rollout_context,
            **extra,
        )

    def rollout_context(self, form: RolloutStartForm | None) -> dict[str, Any]:
        """The rollout panel's context: the newest rollout (the running one if any: only one runs at a time, and it
        is the newest), the running one or None, the start form and the buttons."""
        latest = (
            Rollout.objects.for_tenant(self.tenant)
            .filter(deployment=self.deployment)
            .select_related("revision", "stable_revision")
            .order_by("-started_at", "-id")
            .first()
        )
        return {
            "latest_rollout": latest,
            "rollout": latest if latest is not None and latest.status == Rollout.Status.RUNNING else None,
            "rollout_form": form or RolloutStartForm(prefix="rollout"),
            "rollout_actions": ROLLOUT_ACTIONS,
        }

    def render_detail(self, status: int = 200, **extra: Any) -> HttpResponse:
        return render(self.request, "deployments/detail.html", self.detail_context(**extra), status=status)


class DeploymentDetailView(DeploymentMixin):
    """The detail page; htmx polls it for the status partial alone while a change is rolling out."""

    def get(self, request: HttpRequest, tenant: str, name: str) -> HttpResponse:
        self.get_deployment(name)
        return render_page_or_partial(
            request, "deployments/detail.html", "deployments/partials/status.html", self.detail_context()
        )


class DeploymentScaleView(DeploymentMixin):
    def post(self, request: HttpRequest, tenant: str, name: str) -> HttpResponse:
        deployment = self.get_deployment(name)
        form = ScaleForm(request.POST)
        if form.is_valid():
            try:
                services.scale_deployment(
                    deployment, **form.cleaned_data, actor=self.principal, request_id=self.request_id
                )
            except DomainError as exc:
                show_service_errors(form, exc)
            else:
                messages.success(request, "Replica bounds saved.")
                return redirect("console-deployment", tenant=self.tenant.slug, name=name)
        return self.render_detail(status=422, scale_form=form)


class DeploymentTrafficView(DeploymentMixin):
    """Move the canary weight: the newest revision gets ``canary_weight``, the previous serving one the rest."""

    def post(self, request: HttpRequest, tenant: str, name: str) -> HttpResponse:
        deployment = self.get_deployment(name)
        form = CanaryForm(request.POST)
        revisions = list(Revision.objects.for_tenant(self.tenant).filter(deployment=deployment).order_by("-number"))
        if form.is_valid():
            weight = form.cleaned_data["canary_weight"]
            if len(revisions) < 2:
                form.add_error(
                    "canary_weight", "there is only one revision; change the model or image to make a canary"
                )
            else:
                newest, stable = revisions[0], next((r for r in revisions[1:] if r.weight > 0), revisions[1])
                try:
                    services.set_traffic(
                        deployment,
                        {newest.number: weight, stable.number: 100 - weight},
                        actor=self.principal,
                        request_id=self.request_id,
                    )
                except DomainError as exc:
                    show_service_errors(form, exc)
                else:
                    messages.success(request, f"Traffic: {newest.name} {weight}%, {stable.name} {100 - weight}%.")
                    return redirect("console-deployment", tenant=self.tenant.slug, name=name)
        return self.render_detail(status=422, canary_form=form)


class DeploymentRevisionView(DeploymentMixin):
    """Change the model or image: a new revision, taking ``canary_weight`` percent of the traffic."""

    def post(self, request: HttpRequest, tenant: str, name: str) -> HttpResponse:
        deployment = self.get_deployment(name)
        form = NewRevisionForm(request.POST, prefix="rev", defaults=deployment.sizing_defaults)
        if form.is_valid():
            try:
                services.update_deployment(
                    deployment,
                    form.service_data(),
                    canary_weight=form.cleaned_data["canary_weight"],
                    actor=self.principal,
                    request_id=self.request_id,
                )
            except DomainError as exc:
                show_service_errors(form, exc)
            else:
                messages.success(request, "New revision created.")
                return redirect("console-deployment", tenant=self.tenant.slug, name=name)
        return self.render_detail(status=422, revision_form=form)


class DeploymentRolloutView(DeploymentMixin):
    """The rollout panel: GET is its partial (polled while a rollout runs); POST ``action=start`` starts a rollout of
    the newest revision, ``promote``/``pause``/``resume``/``rollback`` act on the running one. Both call
    ``deployments.rollout`` (the REST API's ``RolloutViewSet`` calls the same functions).

    htmx 2 does not swap 4xx answers, so an htmx request that is refused on its input gets the panel with the error
    at 200; a plain form post gets the page at 422/409, or a redirect on success."""

    def panel(self, form: RolloutStartForm | None = None, **extra: Any) -> HttpResponse:
        revisions = list(
            Revision.objects.for_tenant(self.tenant).filter(deployment=self.deployment).order_by("-number")
        )
        context = self.base_context(
            deployment=self.deployment,
            revisions=revisions,
            newest=revisions[0] if revisions else None,
            deleting=self.deployment.desired_state == ModelDeployment.DesiredState.DELETING,
            **self.rollout_context(form),
            **extra,
        )
        return render(self.request, "deployments/partials/rollout.html", context)

    def get(self, request: HttpRequest, tenant: str, name: str) -> HttpResponse:
        self.get_deployment(name)
        return self.panel() if getattr(request, "htmx", False) else self.render_detail()

    def post(self, request: HttpRequest, tenant: str, name: str) -> HttpResponse:
        deployment = self.get_deployment(name)
        action = request.POST.get("action", "")
        form = RolloutStartForm(request.POST, prefix="rollout") if action == "start" else None
        try:
            if form is not None:
                if not form.is_valid():
                    return self.refused(422, rollout_form=form)
                newest = (
                    Revision.objects.for_tenant(self.tenant).filter(deployment=deployment).order_by("-number").first()
                )
                rollouts.start_rollout(
                    deployment,
                    revision_number=newest.number if newest else 0,
                    steps=form.cleaned_data["steps"],
                    pause_s=form.cleaned_data["pause_s"],
                    actor=self.principal,
                    request_id=self.request_id,
                )
                done = f"Rollout of r{newest.number if newest else 0} started."
            elif action in dict(ROLLOUT_ACTIONS):
                rollouts.act(deployment, action, actor=self.principal, request_id=self.request_id)
                done = {
                    "promote": "Rollout promoted: the new revision takes all traffic.",
                    "pause": "Rollout paused.",
                    "resume": "Rollout resumed.",
                    "rollback": "Rollout rolled back: the stable revision takes all traffic.",
                }[action]
            else:
                return self.refused(422, rollout_error=f"unknown action {action!r}")
        except DomainError as exc:
            if form is not None:
                show_service_errors(form, exc)
                return self.refused(422, rollout_form=form)
            refusal = console_refusal(exc)
            return self.refused(refusal.status, rollout_error=refusal.message)
        if getattr(request, "htmx", False):
            return self.panel(rollout_done=done)
        messages.success(request, done)
        return redirect("console-deployment", tenant=self.tenant.slug, name=name)

    def refused(self, status: int, rollout_form: RolloutStartForm | None = None, **extra: Any) -> HttpResponse:
        if getattr(self.request, "htmx", False):
            return self.panel(rollout_form, **extra)
        return self.render_detail(status=status, rollout_form=rollout_form, **extra)


class DeploymentManifestsView(DeploymentMixin):
    """The Kubernetes objects the reconciler would apply now, as YAML (the REST preview's same functions)."""

    def get(self, request: HttpRequest, tenant: str, name: str) -> HttpResponse:
        deployment = self.get_deployment(name)
        revisions = list(Revision.objects.for_tenant(self.tenant).filter(deployment=deployment).order_by("number"))
        spec = desired_spec(deployment, revisions)
        kube = manifests.KubeSettings.from_env()
        yaml_text = manifests.to_yaml(
            manifests.tenant_objects(spec.tenant, kube) + manifests.deployment_objects(spec, kube)
        )
        context = self.base_context(deployment=deployment, yaml_text=yaml_text)
        return render_page_or_partial(
            request, "deployments/manifests.html", "deployments/partials/manifests.html", context
        )


class DeploymentDeleteView(DeploymentMixin):
    """GET asks for confirmation (typing the name); POST deletes through the service."""

    read_role = Role.MEMBER  # the confirmation page is the first half of a change

    def get(self, request: HttpRequest, tenant: str, name: str) -> HttpResponse:
        if not self.can(Role.MEMBER):  # a suspended tenant: the dispatch checks only the role on a GET
            raise PermissionDenied("this tenant is suspended; changes are refused")
        return render(request, "deployments/delete.html", self.base_context(deployment=self.get_deployment(name)))

    def post(self, request: HttpRequest, tenant: str, name: str) -> HttpResponse:
        deployment = self.get_deployment(name)
        if request.POST.get("confirm_name", "").strip() != deployment.name:
            context = self.base_context(deployment=deployment, error="Type the deployment's name to confirm.")
            return render(request, "deployments/delete.html", context, status=422)
        services.delete_deployment(deployment, actor=self.principal, request_id=self.request_id)
        messages.success(request, f"Deployment {deployment.name} is being deleted.")
        return redirect("console-deployments", tenant=self.tenant.slug)
