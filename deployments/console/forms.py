"""The console's deployment forms, and where a service's refusal lands on them.

Each form checks what a browser can get wrong on its own; the rules of a deployment stay in the model and in
``deployments.services`` (the REST API's too), whose refusals ``show_service_errors`` puts on the field they concern,
in the console's words (``human_message``).
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from controlplane.console import show_refusal
from controlplane.contracts.protocols import RUNTIME_PROTOCOLS
from controlplane.domain_errors import DomainError, Invalid, QuotaExceeded
from deployments.models import Protocol, Runtime, TenantSecret
from deployments.models.deployment import IMAGE_RUNTIMES
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
        if name in form.fields:
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


_REPLICA_RUNTIMES = frozenset(Runtime) - {Runtime.EXTERNAL}  # runtime 'external' runs no replicas here

# The runtimes each field of a new deployment applies to (a field left out applies to every runtime). The create
# form marks each input with its runtimes (``data-runtimes``) and its script hides the rest; without the script every
# field shows, and the service refuses a value that does not apply, as the REST API does.
RUNTIME_FIELDS: dict[str, frozenset[str]] = {
    "protocol": frozenset(runtime for runtime, spoken in RUNTIME_PROTOCOLS.items() if len(spoken) > 1),
    "image_generation": frozenset(IMAGE_RUNTIMES),
    "image": _REPLICA_RUNTIMES,
    "secret_env": _REPLICA_RUNTIMES,
    "endpoints": frozenset({Runtime.EXTERNAL}),
    "upstream_key_secret": frozenset({Runtime.EXTERNAL}),
    "gpu_type": _REPLICA_RUNTIMES,
    "gpu_count": _REPLICA_RUNTIMES,
    **dict.fromkeys(SIZING_FIELDS, _REPLICA_RUNTIMES),
}


def applies(name: str, runtime: str) -> bool:
    """Whether field ``name`` applies to a deployment of ``runtime``."""
    return runtime in RUNTIME_FIELDS.get(name, frozenset({runtime}))


class DeploymentForm(forms.Form):
    """Input for a new deployment; rules beyond field types are the service's (shown back on the fields).

    A field that does not apply to the submitted runtime may be left out (the create form's script disables it);
    left out or blank, it is not sent to the service, which uses its default.
    """

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
    gpu_type = forms.ChoiceField(choices=_gpu_choices, required=False, label="GPU type")
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
        runtime = str(self.data.get("runtime") or Runtime.BUILTIN)
        for name, runtimes in RUNTIME_FIELDS.items():
            self.fields[name].widget.attrs["data-runtimes"] = " ".join(sorted(runtimes))
            if not applies(name, runtime):
                self.fields[name].required = False
        # The placeholders show the defaults for the runtime and GPU count submitted (the initial ones at first).
        try:
            gpus = min(max(int(self.data.get("gpu_count") or 0), 0), 16)
        except ValueError:
            gpus = 0
        show_sizing_defaults(self, default_sizing(runtime, gpus))

    def clean_secret_env(self) -> dict[str, str]:
        return parse_secret_env(self.cleaned_data.get("secret_env") or "")

    def service_data(self) -> dict[str, Any]:
        runtime = self.cleaned_data["runtime"]
        data = {
            name: value
            for name, value in self.cleaned_data.items()
            if applies(name, runtime) or value not in (None, "", False, {})
        }
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
    """A spec change makes a new revision; ``canary_weight`` sends it only part of the traffic at first.

    ``runtime`` is the deployment's: the image and sizing inputs are left out where they do not apply (runtime
    'external' runs no replicas), and what such a deployment's form is sent for them is ignored.
    """

    model = forms.CharField(max_length=200)
    image = forms.CharField(max_length=300, required=False)
    cpu_cores = _sizing_input("cpu_cores", "CPU cores per replica")
    memory_gib = _sizing_input("memory_gib", "Memory per replica (GiB, shared memory included)")
    shm_gib = _sizing_input("shm_gib", "Shared memory per replica (GiB)")
    ephemeral_storage_gib = _sizing_input("ephemeral_storage_gib", "Ephemeral storage per replica (GiB)")
    startup_timeout_s = _sizing_input("startup_timeout_s", "Startup window (s)", integer=True)
    canary_weight = forms.IntegerField(min_value=0, max_value=100, initial=10, label="Canary share (%)")

    def __init__(self, *args: Any, defaults: Sizing, runtime: str = Runtime.BUILTIN, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("image", *SIZING_FIELDS):
            if not applies(name, runtime):
                del self.fields[name]
        show_sizing_defaults(self, defaults)

    def service_data(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in ("model", "image", *SIZING_FIELDS) if name in self.fields}


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
            raise ValidationError("Write whole numbers separated by commas, e.g. 10, 25, 50, 100.") from exc


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


# The refusals of the model and the services that speak in the REST API's field names ("min_replicas (3) exceeds
# max_replicas (2)"), as the console's forms say them. The API keeps its wording: its clients send those names. A
# message not matched here is shown as the service wrote it: those that already read well (quotas, secrets, rollout
# steps) are left as they are.
_HUMAN_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), text)
    for pattern, text in (
        (r"min_replicas \(\d+\) exceeds max_replicas \(\d+\)", "Min replicas can't be more than max replicas."),
        (r"gpu_type is required when gpu_count > 0", "Choose a GPU type: the replicas ask for GPUs."),
        (r"runtime '(\w+)' speaks (\w+), not '\w+'", "Runtime {0} speaks {1} only: choose it, or leave this blank."),
        (
            r"images are an OpenAI route .*; protocol '(\w+)' has none",
            "Images are an OpenAI route: a {0} deployment serves none.",
        ),
        (r"runtime '(\w+)' serves no images; .*", "Runtime {0} serves no images; only builtin and external do."),
        (
            r"shm_gib \(([\d.]+)\) must be less than memory_gib \(([\d.]+)\): .*",
            "Shared memory ({0} GiB) must be less than memory ({1} GiB): it counts against the replica's memory.",
        ),
        (r"(\w+) must be a number from (\S+) to (\S+)", "Must be a number from {1} to {2}."),
        (r"runtime 'external' needs at least one endpoint URL", "Add at least one endpoint URL."),
        (
            r"runtime 'external' runs no replicas here, so it takes no GPUs",
            "Runtime external runs no replicas here, so it takes no GPUs: set 0.",
        ),
        (
            r"runtime 'external' runs no replicas here, so it takes no sizing",
            "Runtime external runs no replicas here, so it takes no sizing: leave this blank.",
        ),
        (
            r"runtime 'external' runs no replicas here; its upstream key is upstream_key_secret",
            "Runtime external runs no replicas here, so it has no environment; its key is the upstream key secret.",
        ),
        (
            r"endpoints are only for runtime 'external'; runtime '(\w+)' runs replicas",
            "Endpoints are for runtime external only; runtime {0} runs its own replicas: leave this empty.",
        ),
        (r"a deployment named '(.+)' already exists in this tenant", "A deployment named {0} already exists here."),
    )
)


def human_message(message: str) -> str:
    """A service's or the model's field message in the console's words (unchanged when none is known)."""
    for pattern, text in _HUMAN_MESSAGES:
        if match := pattern.fullmatch(message):
            return text.format(*match.groups())
    return message


def _in_console_words(exc: Invalid) -> Invalid:
    return Invalid(
        {
            name: [human_message(str(m)) for m in messages] if isinstance(messages, list) else messages
            for name, messages in exc.fields.items()
        }
    )


def show_service_errors(form: forms.Form, exc: DomainError) -> None:
    """Put a service's refusal on the right form field (or the form), in the console's words: a quota refusal on the
    quota it names."""
    if isinstance(exc, QuotaExceeded):
        form.add_error(quota_field(exc), exc.message)
    elif isinstance(exc, Invalid):
        show_refusal(form, _in_console_words(exc))
    else:
        show_refusal(form, exc)
