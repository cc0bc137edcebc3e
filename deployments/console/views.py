"""Console pages for deployments: overview, list, create, detail (status, revisions, traffic, scale, events,
manifests, SLO charts) and delete. Every change goes through ``deployments.services`` (the functions the REST API
calls); errors they raise are shown on the form field they concern, with the input kept.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from controlplane.console import (
    TenantConsoleView,
    console_refusal,
    paginate,
    query_without_page,
    render_page_or_partial,
)
from controlplane.domain_errors import DomainError, RolloutConflict
from deployments import rollout as rollouts
from deployments import services
from deployments.backends import manifests
from deployments.console.figures import live_figures, quota_bars, rollout_progress
from deployments.console.forms import (
    ROLLOUT_ACTIONS,
    CanaryForm,
    DeploymentForm,
    NewRevisionForm,
    RolloutStartForm,
    ScaleForm,
    show_service_errors,
)
from deployments.models import DeploymentEvent, ModelDeployment, Protocol, Revision, Rollout, Runtime
from deployments.reconcile.engine import desired_spec
from tenants.models import Role

# Statuses during which the detail page's status partial refreshes itself.
MOVING_STATUSES = frozenset(
    {ModelDeployment.Status.PENDING, ModelDeployment.Status.PROGRESSING, ModelDeployment.Status.DELETING}
)


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


# The built-in server's v2 model scores (user, item) pairs; another v2 model's inputs are its own (its metadata,
# ``GET /v2/models/<name>``, lists them), so its example shows the shape of a request only.
_BUILTIN_V2_INPUTS = [
    {"name": "user_id", "shape": [2], "datatype": "INT64", "data": [1, 2]},
    {"name": "item_id", "shape": [2], "datatype": "INT64", "data": [10, 20]},
]
_GENERIC_V2_INPUTS = [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1.0]}]


def call_example(deployment: ModelDeployment) -> dict[str, Any]:
    """What the detail page's example calls: the gateway, and the route and body of the deployment's protocol."""
    gateway = settings.FRONTDOOR_GATEWAY_URL.rstrip("/")
    if deployment.protocol == Protocol.V2:
        inputs = _BUILTIN_V2_INPUTS if deployment.runtime == Runtime.BUILTIN else _GENERIC_V2_INPUTS
        return {
            "url": f"{gateway}/v2/models/{deployment.name}/infer",
            "body": json.dumps({"inputs": inputs}),
            "inputs_are_the_models": deployment.runtime != Runtime.BUILTIN,
        }
    chat = {"model": deployment.name, "messages": [{"role": "user", "content": "Hello!"}]}
    example: dict[str, Any] = {"url": f"{gateway}/v1/chat/completions", "body": json.dumps(chat)}
    if deployment.image_generation:
        image = {"model": deployment.name, "prompt": "a lighthouse at dusk", "size": "256x256"}
        example["images_url"] = f"{gateway}/v1/images/generations"
        example["images_body"] = json.dumps({**image, "response_format": "b64_json"})
    return example


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
        return self._render(DeploymentForm(tenant=self.tenant))

    def post(self, request: HttpRequest, tenant: str) -> HttpResponse:
        form = DeploymentForm(request.POST, tenant=self.tenant)
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


def refused_status(exc: DomainError) -> int:
    """A refused form's status: 409 when a rollout holds the traffic, else 422 (the input was refused)."""
    return 409 if isinstance(exc, RolloutConflict) else 422


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
                runtime=deployment.runtime,
            ),
            sizing_rows=sizing_rows(deployment),
            example=call_example(deployment),
            **rollout_context,
            **extra,
        )

    def rollout_context(self, form: RolloutStartForm | None) -> dict[str, Any]:
        """The rollout panel's context: the newest rollout (the running one if any: only one runs at a time, and it
        is the newest), the running one or None with where it stands (``rollout_progress``), the start form and the
        buttons."""
        latest = (
            Rollout.objects.for_tenant(self.tenant)
            .filter(deployment=self.deployment)
            .select_related("revision", "stable_revision")
            .order_by("-started_at", "-id")
            .first()
        )
        running = latest if latest is not None and latest.status == Rollout.Status.RUNNING else None
        return {
            "latest_rollout": latest,
            "rollout": running,
            "progress": rollout_progress(running) if running is not None else None,
            "rollout_form": form or RolloutStartForm(prefix="rollout"),
            "rollout_actions": ROLLOUT_ACTIONS,
        }

    def refuse_while_rolling_out(self) -> None:
        """Refuse a manual traffic change (``RolloutConflict``) while a rollout sets the traffic itself.

        A check, not a lock: a rollout that starts between it and the change sets its own weights at its first step.
        """
        running = rollouts.running_rollout(self.deployment)
        if running is not None:
            raise RolloutConflict(
                f"A rollout of {running.revision.name} is running and sets the traffic itself: "
                "promote, pause or roll it back in the rollout panel first."
            )

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
        status = 422
        if form.is_valid():
            weight = form.cleaned_data["canary_weight"]
            if len(revisions) < 2:
                form.add_error(
                    "canary_weight", "There is only one revision: change the model or image to make a canary."
                )
            else:
                newest, stable = revisions[0], next((r for r in revisions[1:] if r.weight > 0), revisions[1])
                try:
                    self.refuse_while_rolling_out()
                    services.set_traffic(
                        deployment,
                        {newest.number: weight, stable.number: 100 - weight},
                        actor=self.principal,
                        request_id=self.request_id,
                    )
                except DomainError as exc:
                    show_service_errors(form, exc)
                    status = refused_status(exc)
                else:
                    messages.success(request, f"Traffic: {newest.name} {weight}%, {stable.name} {100 - weight}%.")
                    return redirect("console-deployment", tenant=self.tenant.slug, name=name)
        return self.render_detail(status=status, canary_form=form)


class DeploymentRevisionView(DeploymentMixin):
    """Change the model or image: a new revision, taking ``canary_weight`` percent of the traffic."""

    def post(self, request: HttpRequest, tenant: str, name: str) -> HttpResponse:
        deployment = self.get_deployment(name)
        form = NewRevisionForm(
            request.POST, prefix="rev", defaults=deployment.sizing_defaults, runtime=deployment.runtime
        )
        status = 422
        if form.is_valid():
            try:
                self.refuse_while_rolling_out()
                services.update_deployment(
                    deployment,
                    form.service_data(),
                    canary_weight=form.cleaned_data["canary_weight"],
                    actor=self.principal,
                    request_id=self.request_id,
                )
            except DomainError as exc:
                show_service_errors(form, exc)
                status = refused_status(exc)
            else:
                messages.success(request, "New revision created.")
                return redirect("console-deployment", tenant=self.tenant.slug, name=name)
        return self.render_detail(status=status, revision_form=form)


class DeploymentRolloutView(DeploymentMixin):
    """The rollout panel: GET is its partial (polled while a rollout runs); POST ``action=start`` starts a rollout of
    the newest revision, ``promote``/``pause``/``resume``/``rollback`` act on the running one. Both call
    ``deployments.rollout`` (the REST API's ``RolloutViewSet`` calls the same functions).

    htmx 2 does not swap 4xx answers, so an htmx request that is refused on its input gets the panel with the error
    at 200; a plain form post gets the page at 422/409, or a redirect on success.

    The panel is the one place that steers traffic while a rollout runs, so its htmx answers carry the traffic forms
    out of band (locked while a rollout runs, unlocked once it ends), and, after an action that moved the traffic,
    the status card with the revisions and events (which then refresh themselves while the deployment moves)."""

    def panel(
        self, form: RolloutStartForm | None = None, *, steering: bool = True, moved: bool = False, **extra: Any
    ) -> HttpResponse:
        """The panel; ``steering``: with the traffic forms out of band (not when the start form was refused: the
        other forms may hold what the user typed); ``moved``: with the status, revisions and events too."""
        context = self.detail_context(rollout_form=form, **extra)
        return render(
            self.request,
            "deployments/partials/rollout.html",
            {**context, "steering_oob": steering, "status_oob": moved},
        )

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
                if newest is None or newest.weight >= 100:
                    form.add_error(None, nothing_to_roll_out(newest))
                    return self.refused(422, rollout_form=form)
                rollouts.start_rollout(
                    deployment,
                    revision_number=newest.number,
                    steps=form.cleaned_data["steps"],
                    pause_s=form.cleaned_data["pause_s"],
                    actor=self.principal,
                    request_id=self.request_id,
                )
                done = f"Rollout of {newest.name} started."
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
            return self.panel(moved=True, rollout_done=done)
        messages.success(request, done)
        return redirect("console-deployment", tenant=self.tenant.slug, name=name)

    def refused(self, status: int, rollout_form: RolloutStartForm | None = None, **extra: Any) -> HttpResponse:
        if getattr(self.request, "htmx", False):
            return self.panel(rollout_form, steering=rollout_form is None, **extra)
        return self.render_detail(status=status, rollout_form=rollout_form, **extra)


def nothing_to_roll_out(newest: Revision | None) -> str:
    """Why the newest revision cannot be rolled out: it already takes all the traffic (or there is none)."""
    if newest is None:
        return "There is no revision to roll out."
    return (
        f"{newest.name} already takes all traffic, so there is nothing to roll out: "
        "create a new revision (change the model or image) first."
    )


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
