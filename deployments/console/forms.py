"""The console's deployment forms, and where a service's refusal lands on them.

Each form checks what a browser can get wrong on its own; the rules of a deployment stay in the model and in
``deployments.services`` (the REST API's too), whose refusals ``show_service_errors`` puts on the field they concern.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from controlplane.console import show_refusal
from controlplane.domain_errors import DomainError, QuotaExceeded
from deployments.models import Protocol, Runtime, TenantSecret
from deployments.models.secret import SECRET_NAME_MAX_LENGTH, SECRET_NAME_VALIDATOR
from deployments.sizing import BOUNDS, SIZING_FIELDS, Sizing, default_sizing
from tenants.models import Tenant


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


def parse_secret_env(text: str) -> dict[str, str]:
    """``VAR=secret-name`` lines (blank ones skipped) as ``{"VAR": "secret-name"}``; ``ValidationError`` names each
    malformed line.

    A line is echoed by its variable only: someone who pastes a value where a secret's name belongs
    (``HF_TOKEN=hf_...``) must not see it written back in an error. Whether the variable may be set and whether the
    secret exists are the service's rules.
    """
    mapping: dict[str, str] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        variable, equals, name = (part.strip() for part in line.partition("="))
        if not equals or not variable or not name:
            problems.append(f"line {number}: write VAR=secret-name")
            continue
        try:
            SECRET_NAME_VALIDATOR(name)
        except ValidationError:
            problems.append(
                f"line {number}: {variable} is not set to a secret's name ({SECRET_NAME_VALIDATOR.message})"
            )
            continue
        if variable in mapping:
            problems.append(f"line {number}: {variable} is set twice")
            continue
        mapping[variable] = name
    if problems:
        raise ValidationError(problems)
    return mapping


def _secret_env_field() -> forms.CharField:
    return forms.CharField(
        required=False,
        max_length=8000,
        label="Secret environment",
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false", "autocomplete": "off"}),
        help_text="one VAR=secret-name a line: replicas get VAR set to the secret's value; not for runtime 'external'",
    )


def _upstream_key_field(tenant: Tenant | None) -> forms.Field:
    """The upstream key's input: a choice of the tenant's generic secrets when the tenant is known, else a name."""
    label = "Upstream key secret"
    help_text = "runtime 'external' only: a secret the gateway sends upstream as Authorization: Bearer; empty = none"
    if tenant is None:
        return forms.CharField(required=False, max_length=SECRET_NAME_MAX_LENGTH, label=label, help_text=help_text)
    names = (
        TenantSecret.objects.for_tenant(tenant)
        .filter(kind=TenantSecret.Kind.GENERIC)
        .order_by("name")
        .values_list("name", flat=True)
    )
    choices = [("", "none"), *((name, name) for name in names)]
    return forms.ChoiceField(choices=choices, required=False, label=label, help_text=help_text)


class DeploymentForm(forms.Form):
    """Input for a new deployment; rules beyond field types are the service's (shown back on the fields)."""

    name = forms.CharField(max_length=40, help_text="lowercase letters, digits and '-'; clients send it as `model`")
    runtime = forms.ChoiceField(choices=Runtime.choices, initial=Runtime.BUILTIN)
    # Blank: the runtime's default, as when the REST API is not told one.
    protocol = forms.ChoiceField(
        choices=[("", "the runtime's default"), *Protocol.choices],
        required=False,
        help_text="what clients call: OpenAI (/v1/chat/completions, embeddings …) or v2 (/v2/models/{name}/infer);"
        " triton speaks v2 only, vllm and tgi OpenAI only",
    )
    image_generation = forms.BooleanField(
        required=False,
        label="Serves image generation",
        help_text="the gateway routes /v1/images/generations here; protocol OpenAI, runtime builtin or external only",
    )
    model = forms.CharField(max_length=200, help_text="model id the replicas serve, e.g. frontdoor/sim-chat")
    image = forms.CharField(max_length=300, required=False, help_text="empty = the runtime's default image")
    secret_env = _secret_env_field()
    endpoints = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="runtime 'external' only: one URL a line"
    )
    upstream_key_secret = _upstream_key_field(None)
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

    def __init__(self, *args: Any, tenant: Tenant | None = None, **kwargs: Any) -> None:
        """``tenant``, when given, makes the upstream key a choice of its generic secrets."""
        super().__init__(*args, **kwargs)
        if tenant is not None:
            self.fields["upstream_key_secret"] = _upstream_key_field(tenant)
        # The placeholders show the defaults for the runtime and GPU count submitted (the initial ones at first).
        runtime = str(self.data.get("runtime") or Runtime.BUILTIN)
        try:
            gpus = min(max(int(self.data.get("gpu_count") or 0), 0), 16)
        except ValueError:
            gpus = 0
        show_sizing_defaults(self, default_sizing(runtime, gpus))

    def clean_secret_env(self) -> dict[str, str]:
        return parse_secret_env(self.cleaned_data.get("secret_env") or "")

    def service_data(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["endpoints"] = [line.strip() for line in data.get("endpoints", "").splitlines() if line.strip()]
        data["gpu_type"] = data.get("gpu_type") or ""
        data["upstream_key_secret"] = data.get("upstream_key_secret") or ""
        if not data.get("protocol"):
            data.pop("protocol", None)  # the service gives the runtime's default
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


def show_service_errors(form: forms.Form, exc: DomainError) -> None:
    """Put a service's refusal on the right form field (or the form): a quota refusal on the quota it names."""
    if isinstance(exc, QuotaExceeded):
        form.add_error(quota_field(exc), exc.message)
    else:
        show_refusal(form, exc)
