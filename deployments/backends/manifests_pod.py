"""The pod of a revision's replicas: how each runtime starts, loads, answers its probes, drains and is contained.

- Loading: weights go to the tenant's model cache volume at ``/models`` (``HF_HOME``, vLLM's ``--download-dir``,
  TGI's ``HUGGINGFACE_HUB_CACHE``, Triton's model repository), so a restart does not download them again and they do
  not fill the node's disk; ``/dev/shm`` is a memory emptyDir sized by the deployment, since tensor parallelism
  exchanges tensors through it; the startup probe's window is the deployment's ``startup_timeout_s``.
- Serving: readiness gates traffic; liveness restarts a wedged engine within about a minute.
- Draining: ``preStop`` (``drain_hook.py``) waits while the endpoint leaves the Service and the gateways' snapshots,
  then until the server's in-flight gauges read zero (at most the request timeout); SIGTERM then finds it idle. The
  grace period covers that wait, the request timeout and the server's own shutdown.
- Containment: seccomp ``RuntimeDefault``, no privilege escalation, no capabilities, no service account token, and
  a non-root user where the runtime's image supports one (``RuntimeProfile.run_as_user``).
- Sizing: CPU, memory, shared memory and ephemeral storage from ``deployments.sizing.sizing_for``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.contracts.protocols import builtin_mode_args
from deployments.backends.base import DeploymentSpec, RevisionSpec, TenantSpec
from deployments.backends.drain_hook import drain_command
from deployments.backends.manifests_common import (
    GPU_RESOURCE,
    MODEL_CACHE_CLAIM,
    MODEL_PORT,
    MODEL_SERVICE_ACCOUNT,
    SECRETS_NAME,
    TRITON_METRICS_PORT,
    KubeSettings,
)
from deployments.sizing import Sizing, sizing_for

MODEL_CACHE_MOUNT = "/models"
HF_HOME = f"{MODEL_CACHE_MOUNT}/huggingface"
HF_HUB_CACHE = f"{HF_HOME}/hub"
# Longer than the gateways take to load a snapshot without the endpoint (2 s) and than kube-proxy and the
# EndpointSlice controller take to stop sending new connections to a terminating pod.
PRESTOP_SLEEP_S = 5
# After the drain: the server's own shutdown (closing the engine, freeing the GPUs) before SIGKILL.
SHUTDOWN_MARGIN_S = 15
STARTUP_PERIOD_S = 10
PROBE_TIMEOUT_S = 5
# Liveness: 6 misses 10 s apart restart an engine that stopped answering in about a minute.
LIVENESS_PERIOD_S = 10
LIVENESS_FAILURES = 6
NON_ROOT_UID = 1000


@dataclass(frozen=True)
class RuntimeProfile:
    """How a runtime is started in a container, where its health endpoints are, and which user it can run as.

    ``run_as_user`` is None for images that run as root and write to root's home (vLLM's and TGI's official images):
    forcing another user there breaks them, so those pods stay at the ``baseline`` Pod Security level.
    """

    image: str
    ready_path: str
    live_path: str
    command: tuple[str, ...] = ()
    run_as_user: int | None = None
    metrics_port: int = MODEL_PORT
    hf_env: Mapping[str, str] | None = None


RUNTIMES: dict[str, RuntimeProfile] = {
    "vllm": RuntimeProfile("vllm/vllm-openai:v0.6.3", "/health", "/health", hf_env={"HF_HOME": HF_HOME}),
    "tgi": RuntimeProfile(
        "ghcr.io/huggingface/text-generation-inference:2.4.0",
        "/health",
        "/health",
        hf_env={"HF_HOME": HF_HOME, "HUGGINGFACE_HUB_CACHE": HF_HUB_CACHE},
    ),
    # NVIDIA's Triton images carry the non-root user triton-server (uid 1000).
    "triton": RuntimeProfile(
        "nvcr.io/nvidia/tritonserver:24.10-py3",
        "/v2/health/ready",
        "/v2/health/live",
        ("tritonserver",),
        run_as_user=NON_ROOT_UID,
        metrics_port=TRITON_METRICS_PORT,
    ),
    "builtin": RuntimeProfile(
        "ghcr.io/frontdoor/modelserver:0.1.0",
        "/health",
        "/health",
        ("python", "-m", "modelserver"),
        run_as_user=NON_ROOT_UID,
        hf_env={"HF_HOME": HF_HOME},
    ),
}


def runtime_of(rspec: Mapping[str, Any]) -> str:
    runtime = str(rspec.get("runtime", "builtin"))
    return runtime if runtime in RUNTIMES else "builtin"


def gpus_of(rspec: Mapping[str, Any]) -> int:
    """GPUs per replica: a count without a GPU type asks for none."""
    return int(rspec.get("gpu_count") or 0) if rspec.get("gpu_type") else 0


def revision_sizing(rspec: Mapping[str, Any]) -> Sizing:
    return sizing_for(runtime_of(rspec), gpus_of(rspec), rspec)


def termination_grace_s(spec: DeploymentSpec) -> int:
    """Long enough for the preStop hook (the propagation wait, then draining for at most the longest request the
    deployment allows) and the server's shutdown."""
    return PRESTOP_SLEEP_S + spec.request_timeout_s + SHUTDOWN_MARGIN_S


def quantity_gib(gib: float) -> str:
    """A memory or storage quantity: whole GiB as ``Gi``, anything else in whole ``Mi``."""
    return f"{int(gib)}Gi" if float(gib).is_integer() else f"{round(gib * 1024)}Mi"


def quantity_cpu(cores: float) -> str:
    return str(int(cores)) if float(cores).is_integer() else f"{round(cores * 1000)}m"


def _triton_repository(model: str) -> str:
    # A URL (s3://, gs://, as://) or an absolute path is the tenant's; a bare name is a folder of the model cache.
    return model if "://" in model or model.startswith("/") else f"{MODEL_CACHE_MOUNT}/{model}"


def container_args(runtime: str, rspec: Mapping[str, Any], request_timeout_s: int) -> list[str]:
    model = str(rspec.get("model", ""))
    gpus = int(rspec.get("gpu_count") or 0)
    extra = [str(arg) for arg in rspec.get("args") or []]
    port = str(MODEL_PORT)
    if runtime == "vllm":
        base = ["--model", model, "--host", "0.0.0.0", "--port", port]
        chose_dir = any(a == "--download-dir" or a.startswith("--download-dir=") for a in extra)
        download = [] if chose_dir else ["--download-dir", HF_HUB_CACHE]
        return [*base, *download, *(["--tensor-parallel-size", str(gpus)] if gpus > 1 else []), *extra]
    if runtime == "tgi":
        base = ["--model-id", model, "--hostname", "0.0.0.0", "--port", port]
        return [*base, *(["--num-shard", str(gpus)] if gpus > 1 else []), *extra]
    if runtime == "triton":
        return [
            f"--model-repository={_triton_repository(model)}",
            f"--http-port={port}",
            f"--metrics-port={TRITON_METRICS_PORT}",
            "--allow-grpc=false",
            # What still executes at SIGTERM may finish for as long as a request may run (Triton's default is 30 s).
            f"--exit-timeout-secs={request_timeout_s}",
            *extra,
        ]
    # The built-in server's own flags: it takes no abbreviations (``--model`` would stop it at start). Its mode only
    # when not OpenAI, its default.
    return ["--model-name", model, "--host", "0.0.0.0", "--port", port, *builtin_mode_args(rspec), *extra]


def container_env(profile: RuntimeProfile, rspec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The cache locations, then the deployment's own variables, which win on the same name, then the variables
    read from the tenant's secrets (by reference: no value is in the pod spec)."""
    env: dict[str, str] = dict(profile.hf_env or {})
    env.update({str(k): str(v) for k, v in (rspec.get("env") or {}).items()})
    secret_env = {str(k): str(v) for k, v in (rspec.get("secret_env") or {}).items()}
    entries: list[dict[str, Any]] = [
        {"name": name, "value": value} for name, value in sorted(env.items()) if name not in secret_env
    ]
    entries += [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRETS_NAME, "key": secret}}}
        for name, secret in sorted(secret_env.items())
    ]
    return entries


def secret_versions(tenant: TenantSpec, rspec: Mapping[str, Any]) -> str:
    """The versions of the secrets the revision reads, as ``name=version`` pairs: a rotation changes the pod
    template, so the Deployment rolls its pods onto the new value (env from a Secret is read at container start)."""
    names = sorted({str(v) for v in (rspec.get("secret_env") or {}).values()})
    return ",".join(f"{name}={secret.version if (secret := tenant.secret(name)) else 0}" for name in names)


def resources(rspec: Mapping[str, Any], sizing: Sizing) -> dict[str, Any]:
    """Requests and limits from the sizing.

    Memory and ephemeral storage are limited at their request: past it the pod is OOM-killed or evicted alone,
    instead of pressuring the node and its neighbours' GPUs. CPU is requested but not limited: a CFS quota throttles
    the engine's scheduling loop and tokenizer in bursts, which stalls the GPUs it feeds, and the request already
    reserves the cores and counts against the namespace quota.
    """
    memory = quantity_gib(sizing.memory_gib)
    storage = quantity_gib(sizing.ephemeral_storage_gib)
    requests = {"cpu": quantity_cpu(sizing.cpu_cores), "memory": memory, "ephemeral-storage": storage}
    limits = {"memory": memory, "ephemeral-storage": storage}
    gpus = gpus_of(rspec)
    if gpus:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(gpus)
    return {"requests": requests, "limits": limits}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": PROBE_TIMEOUT_S,
        "failureThreshold": failures,
    }


def probes(profile: RuntimeProfile, sizing: Sizing) -> dict[str, Any]:
    """Startup holds the other probes off for the deployment's startup timeout (a cold load of large weights);
    readiness then gates traffic, liveness restarts an engine that stopped answering."""
    startup_failures = max(1, math.ceil(sizing.startup_timeout_s / STARTUP_PERIOD_S))
    return {
        "startupProbe": _probe(profile.ready_path, STARTUP_PERIOD_S, startup_failures),
        "readinessProbe": _probe(profile.ready_path, 5, 3),
        "livenessProbe": _probe(profile.live_path, LIVENESS_PERIOD_S, LIVENESS_FAILURES),
    }


def pod_security_context(profile: RuntimeProfile) -> dict[str, Any]:
    context: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if profile.run_as_user is not None:
        context.update(
            runAsNonRoot=True,
            runAsUser=profile.run_as_user,
            runAsGroup=profile.run_as_user,
            fsGroup=profile.run_as_user,
            # Without this the kubelet would chown the whole model cache (terabytes) on every mount.
            fsGroupChangePolicy="OnRootMismatch",
        )
    return context


def container_security_context() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def model_container(spec: DeploymentSpec, revision: RevisionSpec, kube: KubeSettings) -> dict[str, Any]:
    rspec = revision.spec
    runtime = runtime_of(rspec)
    profile = RUNTIMES[runtime]
    sizing = revision_sizing(rspec)
    default_image = kube.builtin_image if runtime == "builtin" else profile.image
    ports = [{"name": "http", "containerPort": MODEL_PORT, "protocol": "TCP"}]
    if profile.metrics_port != MODEL_PORT:
        ports.append({"name": "metrics", "containerPort": profile.metrics_port, "protocol": "TCP"})
    container: dict[str, Any] = {
        "name": "model",
        "image": str(rspec.get("image") or default_image),
        "args": container_args(runtime, rspec, spec.request_timeout_s),
        "ports": ports,
        "env": container_env(profile, rspec),
        "resources": resources(rspec, sizing),
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 - the pod's own memory volume
            {"name": "model-cache", "mountPath": MODEL_CACHE_MOUNT},
        ],
        **probes(profile, sizing),
        "lifecycle": {
            "preStop": {"exec": {"command": drain_command(runtime, PRESTOP_SLEEP_S, spec.request_timeout_s)}}
        },
        "securityContext": container_security_context(),
    }
    if profile.command:
        container["command"] = list(profile.command)
    return container


def pod_spec(spec: DeploymentSpec, revision: RevisionSpec, kube: KubeSettings) -> dict[str, Any]:
    """The pod template's spec for one revision."""
    rspec = revision.spec
    profile = RUNTIMES[runtime_of(rspec)]
    sizing = revision_sizing(rspec)
    pod: dict[str, Any] = {
        "serviceAccountName": MODEL_SERVICE_ACCOUNT,
        # Model servers never call the Kubernetes API; a tenant's image gets no credentials to it.
        "automountServiceAccountToken": False,
        # No environment variables per Service of the namespace: they leak names and collide with runtime settings
        # (a Service named ``vllm`` would set ``VLLM_PORT``).
        "enableServiceLinks": False,
        "securityContext": pod_security_context(profile),
        "terminationGracePeriodSeconds": termination_grace_s(spec),
        "containers": [model_container(spec, revision, kube)],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": quantity_gib(sizing.shm_gib)}},
            {"name": "model-cache", "persistentVolumeClaim": {"claimName": MODEL_CACHE_CLAIM}},
        ],
    }
    gpu_type = str(rspec.get("gpu_type") or "")
    if gpus_of(rspec) > 0:
        placement = kube.gpu_placement.get(gpu_type, {})
        if placement.get("nodeSelector"):
            pod["nodeSelector"] = dict(placement["nodeSelector"])
        if placement.get("tolerations"):
            pod["tolerations"] = [dict(t) for t in placement["tolerations"]]
    return pod
