"""The pods of five realistic deployments: they validate, get shared memory, a model cache, probes that fit model
servers, a drain within their grace period, containment, and the resources their sizing asks for."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest

from deployments.backends import manifests
from deployments.backends.base import DeploymentSpec
from deployments.backends.manifests_pod import PRESTOP_SLEEP_S
from deployments.sizing import sizing_for
from tests.deployments import examples
from tests.fakekube.validation import manifest_problem

ALL = sorted(examples.EXAMPLES)
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)


def objects_of(name: str) -> tuple[DeploymentSpec, list[dict[str, Any]]]:
    """The example's objects as the backend applies them (its tenant's Secrets hold their values)."""
    spec = examples.EXAMPLES[name]()
    return spec, examples.render(spec, reveal=True)


def pods(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["spec"]["template"]["spec"] for o in objects if o["kind"] == "Deployment"]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    return found[0]


@pytest.mark.parametrize("name", ALL)
def test_it_renders_every_example_to_objects_the_strict_schemas_accept(name: str) -> None:
    _spec, objects = objects_of(name)
    problems = {f"{o['kind']}/{o['metadata']['name']}": manifest_problem(o) for o in objects}
    assert {key: problem for key, problem in problems.items() if problem} == {}
    assert pods(objects), "every example runs replicas"


def test_it_gives_a_tensor_parallel_pod_the_shared_memory_its_gpus_need() -> None:
    _spec, objects = objects_of("llama_70b")
    (pod,) = pods(objects)
    container = pod["containers"][0]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert container["args"][container["args"].index("--tensor-parallel-size") + 1] == "4"
    # Shared memory is RAM the container is charged for: the memory limit holds it.
    assert container["resources"]["limits"]["memory"] == "104Gi"


@pytest.mark.parametrize("name", ALL)
def test_it_sizes_every_pod_from_the_revision_spec(name: str) -> None:
    spec, objects = objects_of(name)
    by_name = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    for revision in spec.revisions:
        pod = by_name[manifests.revision_object_name(spec.name, revision.number)]["spec"]["template"]["spec"]
        rspec = revision.spec
        gpus = int(rspec["gpu_count"]) if rspec["gpu_type"] else 0
        sizing = sizing_for(rspec["runtime"], gpus, rspec)
        resources = pod["containers"][0]["resources"]
        assert resources["requests"]["memory"] == resources["limits"]["memory"] == manifests_quantity(sizing.memory_gib)
        assert resources["requests"]["ephemeral-storage"] == resources["limits"]["ephemeral-storage"]
        assert resources["requests"]["ephemeral-storage"] == manifests_quantity(sizing.ephemeral_storage_gib)
        assert float(resources["requests"]["cpu"]) == sizing.cpu_cores
        assert "cpu" not in resources["limits"]
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"]["sizeLimit"] == manifests_quantity(sizing.shm_gib)
        assert resources["limits"].get("nvidia.com/gpu") == (str(gpus) if gpus else None)


def manifests_quantity(gib: float) -> str:
    return f"{int(gib)}Gi" if float(gib).is_integer() else f"{round(gib * 1024)}Mi"


def test_it_follows_a_hand_sized_cpu_deployment() -> None:
    _spec, objects = objects_of("triton_recsys_cpu")
    (pod,) = pods(objects)
    resources = pod["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "8", "memory": "16Gi", "ephemeral-storage": "10Gi"}
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert pod["containers"][0]["startupProbe"]["failureThreshold"] * 10 >= 300


@pytest.mark.parametrize("name", ALL)
def test_it_mounts_the_tenant_model_cache_where_the_runtime_looks(name: str) -> None:
    _spec, objects = objects_of(name)
    claim = one(objects, "PersistentVolumeClaim", "frontdoor-model-cache")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == "shared-rwx"
    for pod in pods(objects):
        assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "frontdoor-model-cache"}} in pod[
            "volumes"
        ]
        container = pod["containers"][0]
        assert {"name": "model-cache", "mountPath": "/models"} in container["volumeMounts"]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        args = container["args"]
        runtime = container["image"]
        if "vllm" in runtime:
            assert env["HF_HOME"] == "/models/huggingface"
            assert args[args.index("--download-dir") + 1] == "/models/huggingface/hub"
        elif "text-generation-inference" in runtime:
            assert env["HF_HOME"] == "/models/huggingface"
            assert env["HUGGINGFACE_HUB_CACHE"] == "/models/huggingface/hub"
        elif "tritonserver" in runtime:
            assert "--model-repository=/models/recsys" in args
        else:
            assert env["HF_HOME"] == "/models/huggingface"


def test_it_keeps_a_download_dir_the_deployment_chose() -> None:
    spec = examples.llama_70b()
    revision = replace(spec.revisions[0], spec={**spec.revisions[0].spec, "args": ["--download-dir=/scratch/hub"]})
    objects = manifests.deployment_objects(replace(spec, revisions=(revision,)), examples.DOC_KUBE)
    (pod,) = pods(objects)
    args = pod["containers"][0]["args"]
    assert "--download-dir" not in args and args.count("--download-dir=/scratch/hub") == 1


PATHS = {
    "vllm": ("/health", "/health", "/health"),
    "text-generation-inference": ("/health", "/health", "/health"),
    "tritonserver": ("/v2/health/ready", "/v2/health/ready", "/v2/health/live"),
    "modelserver": ("/health", "/health", "/health"),
}


@pytest.mark.parametrize("name", ALL)
def test_it_probes_each_runtime_on_its_paths_with_a_startup_window_the_deployment_sets(name: str) -> None:
    spec, objects = objects_of(name)
    for pod, revision in zip(pods(objects), [r for r in spec.revisions if r.runs_replicas], strict=True):
        container = pod["containers"][0]
        startup, ready, live = (container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe"))
        expected = next(paths for image, paths in PATHS.items() if image in container["image"])
        assert (startup["httpGet"]["path"], ready["httpGet"]["path"], live["httpGet"]["path"]) == expected
        assert all(p["timeoutSeconds"] >= 5 for p in (startup, ready, live))
        rspec = revision.spec
        timeout = sizing_for(rspec["runtime"], int(rspec["gpu_count"]), rspec).startup_timeout_s
        assert startup["failureThreshold"] * startup["periodSeconds"] >= timeout
        # A wedged engine is restarted within about a minute (plus one probe's timeout).
        assert live["failureThreshold"] * live["periodSeconds"] <= 60


def test_it_gives_the_70b_model_the_time_its_long_requests_take() -> None:
    _spec, objects = objects_of("llama_70b")
    (pod,) = pods(objects)
    assert pod["terminationGracePeriodSeconds"] >= 600 + PRESTOP_SLEEP_S


@pytest.mark.parametrize("name", ALL)
def test_it_contains_every_pod(name: str) -> None:
    _spec, objects = objects_of(name)
    for pod in pods(objects):
        assert pod["serviceAccountName"] == "frontdoor-model"
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        container = pod["containers"][0]
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        image = container["image"]
        # Only images known to run as another user are made to; vLLM's and TGI's official images run as root.
        non_root = "tritonserver" in image or "modelserver" in image
        assert pod["securityContext"].get("runAsNonRoot", False) is non_root
        if non_root:
            assert pod["securityContext"]["runAsUser"] == 1000


@pytest.mark.parametrize("name", ALL)
def test_it_puts_no_secret_looking_literal_in_any_manifest(name: str) -> None:
    _spec, objects = objects_of(name)
    for pod in pods(objects):
        for container in pod["containers"]:
            literal = [e["name"] for e in container.get("env", []) if SECRET_NAME.search(e["name"]) and "value" in e]
            assert literal == []
    text = manifests.to_yaml([o for o in objects if o["kind"] != "Secret"])
    assert not re.search(r"hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9]{20,}", text)


def test_it_scales_the_tgi_example_to_zero_and_leaves_replicas_to_the_hpa_of_the_builtin_one() -> None:
    _spec, tgi = objects_of("tgi_l4_scaled_to_zero")
    assert one(tgi, "Deployment")["spec"]["replicas"] == 0
    assert pods(tgi)[0]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    _spec, hpa = objects_of("builtin_hpa")
    assert "replicas" not in one(hpa, "Deployment")["spec"]
    assert one(hpa, "HorizontalPodAutoscaler")["spec"]["maxReplicas"] == 8


def test_it_runs_the_canary_on_its_own_image_and_routes_nothing_around_the_gateway() -> None:
    _spec, objects = objects_of("canary")
    # The weights are the gateway's to apply (it routes by the snapshot), so no cluster route carries them.
    assert not [o for o in objects if o["kind"] == "HTTPRoute"]
    images = {
        o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"][0]["image"]
        for o in objects
        if o["kind"] == "Deployment"
    }
    assert images == {"chat-r1": "vllm/vllm-openai:v0.6.3", "chat-r2": "vllm/vllm-openai:v0.6.4"}


def test_it_lists_services_before_the_deployments_they_front() -> None:
    _spec, objects = objects_of("canary")
    kinds = [o["kind"] for o in objects if o["kind"] in ("Service", "Deployment")]
    assert kinds == ["Service", "Service", "Deployment", "Deployment"]


@pytest.mark.parametrize(
    ("runtime", "metric"),
    [
        ("vllm", "vllm_requests_inflight"),
        ("builtin", "vllm_requests_inflight"),
        ("tgi", "tgi_requests_inflight"),
        ("triton", "triton_requests_pending"),
    ],
)
def test_class_hpa_targets_the_in_flight_metric_the_runtime_exports(runtime: str, metric: str) -> None:
    spec = examples.builtin_hpa()
    revision = replace(spec.revisions[0], spec={**spec.revisions[0].spec, "runtime": runtime})
    objects = examples.render(replace(spec, revisions=(revision,)))
    hpa = one(objects, "HorizontalPodAutoscaler")
    (target,) = hpa["spec"]["metrics"]
    assert target["type"] == "Pods"
    assert target["pods"]["metric"]["name"] == metric
    assert target["pods"]["target"] == {"type": "AverageValue", "averageValue": str(spec.target_concurrency)}
    assert manifest_problem(hpa) is None
