"""Five deployments a platform team runs, as backend specs: the manifests' tests render each of them.

- ``llama_70b``: vLLM serving a 70B model with tensor parallelism over 4 H100s per replica, 2 replicas;
- ``tgi_l4_scaled_to_zero``: TGI on one L4, scaled to zero replicas;
- ``triton_recsys_cpu``: Triton serving a recommendation model from the model cache on CPU, sized by hand;
- ``canary``: vLLM with a new revision taking 20 % of the traffic;
- ``builtin_hpa``: the built-in server under autoscaler class ``hpa``.

``python -m tests.deployments.examples`` prints the 70B example's objects as YAML: docs/kubernetes.md shows that
output, and a test checks the two still agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deployments.backends import manifests
from deployments.backends.base import DeploymentSpec, RevisionSpec, SecretValue, TenantSpec

# The tenant's secrets: a Hugging Face token its gated models need, rotated twice, and a login to NVIDIA's registry.
HF_TOKEN_VALUE = "hf_exampleTokenValueThatMustNotLeak0123"
REGISTRY_PASSWORD = "nvapi-examplePasswordThatMustNotLeak"
SECRETS = (
    SecretValue(name="hf-token", kind="generic", version=3, value=HF_TOKEN_VALUE),
    SecretValue(
        name="ngc",
        kind="registry",
        version=1,
        value=REGISTRY_PASSWORD,
        registry_server="nvcr.io",
        registry_username="$oauthtoken",
    ),
)
TENANT = TenantSpec(
    slug="acme",
    gpus={"nvidia-h100": 16, "nvidia-l4": 4},
    max_replicas=20,
    cpu_cores=256,
    memory_gib=2048,
    secrets=SECRETS,
)
# What the documentation shows: a named storage class and a download proxy's CIDR, the rest as defaults.
DOC_KUBE = manifests.KubeSettings(model_cache_class="shared-rwx", egress_cidrs=("10.20.30.0/24",))


def _revision(number: int, replicas: int, weight: int = 100, **spec: Any) -> RevisionSpec:
    full = {"image": "", "args": [], "env": {}, "gpu_type": "", "gpu_count": 0, **spec}
    return RevisionSpec(id=900 + number, number=number, spec=full, replicas=replicas, weight=weight)


def _deployment(name: str, *revisions: RevisionSpec, **fields: Any) -> DeploymentSpec:
    defaults: dict[str, Any] = {
        "autoscaler_class": "kpa",
        "min_replicas": 1,
        "max_replicas": 4,
        "target_concurrency": 8,
        "request_timeout_s": 120,
    }
    return DeploymentSpec(id=len(name), tenant=TENANT, name=name, revisions=revisions, **{**defaults, **fields})


def llama_70b() -> DeploymentSpec:
    revision = _revision(
        1,
        replicas=2,
        runtime="vllm",
        model="meta-llama/Llama-3.1-70B-Instruct",
        args=["--max-model-len", "32768", "--gpu-memory-utilization", "0.92"],
        env={"VLLM_LOGGING_LEVEL": "INFO"},
        secret_env={"HF_TOKEN": "hf-token"},
        gpu_type="nvidia-h100",
        gpu_count=4,
    )
    return _deployment("llama-70b", revision, min_replicas=2, max_replicas=4, request_timeout_s=600)


def tgi_l4_scaled_to_zero() -> DeploymentSpec:
    revision = _revision(
        1,
        replicas=0,
        runtime="tgi",
        model="mistralai/Mistral-7B-Instruct-v0.3",
        secret_env={"HF_TOKEN": "hf-token"},
        gpu_type="nvidia-l4",
        gpu_count=1,
    )
    return _deployment("mistral-l4", revision, min_replicas=0, max_replicas=2)


def triton_recsys_cpu() -> DeploymentSpec:
    revision = _revision(
        1,
        replicas=3,
        runtime="triton",
        model="recsys",
        cpu_cores=8,
        memory_gib=16,
        shm_gib=2,
        ephemeral_storage_gib=10,
        startup_timeout_s=300,
    )
    return _deployment("recsys", revision, min_replicas=3, max_replicas=6, request_timeout_s=30)


def canary() -> DeploymentSpec:
    common = {"runtime": "vllm", "gpu_type": "nvidia-h100", "gpu_count": 1}
    stable = _revision(1, replicas=4, weight=80, model="meta-llama/Llama-3.1-8B-Instruct", **common)
    candidate = _revision(
        2, replicas=1, weight=20, model="meta-llama/Llama-3.1-8B-Instruct", image="vllm/vllm-openai:v0.6.4", **common
    )
    return _deployment("chat", stable, candidate, min_replicas=5, max_replicas=5)


def builtin_hpa() -> DeploymentSpec:
    revision = _revision(1, replicas=2, runtime="builtin", model="sentence-transformers/all-MiniLM-L6-v2")
    return _deployment("embed", revision, autoscaler_class="hpa", min_replicas=2, max_replicas=8)


EXAMPLES: dict[str, Callable[[], DeploymentSpec]] = {
    "llama_70b": llama_70b,
    "tgi_l4_scaled_to_zero": tgi_l4_scaled_to_zero,
    "triton_recsys_cpu": triton_recsys_cpu,
    "canary": canary,
    "builtin_hpa": builtin_hpa,
}


def render(
    spec: DeploymentSpec, kube: manifests.KubeSettings = DOC_KUBE, *, reveal: bool = False
) -> list[dict[str, Any]]:
    """The tenant's objects and the deployment's, as the preview endpoint returns them (Secrets without their
    values), or as the backend applies them with ``reveal``."""
    tenant = manifests.tenant_objects(spec.tenant, kube)
    return (tenant if reveal else manifests.redacted(tenant)) + manifests.deployment_objects(spec, kube)


def llama_70b_yaml() -> str:
    return manifests.to_yaml(render(llama_70b()))


if __name__ == "__main__":
    print(llama_70b_yaml(), end="")
