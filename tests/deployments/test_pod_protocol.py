"""A builtin revision's pod starts the built-in server with the server's own flags, in the mode of its protocol."""

from __future__ import annotations

from typing import Any

import pytest

from deployments.backends import manifests
from deployments.backends.base import DeploymentSpec, RevisionSpec, TenantSpec
from modelserver.config import config_from_args
from tests.fakekube.validation import manifest_problem


def model_container(spec: dict[str, Any]) -> dict[str, Any]:
    rspec = {"runtime": "builtin", "model": "frontdoor/ranker", "args": [], "env": {}, "gpu_type": "", "gpu_count": 0}
    revision = RevisionSpec(id=101, number=1, spec={**rspec, **spec}, replicas=1, weight=100)
    deployment = DeploymentSpec(
        id=7,
        tenant=TenantSpec(slug="acme", gpus={}, max_replicas=8, cpu_cores=64, memory_gib=512),
        name="ranker",
        autoscaler_class="kpa",
        min_replicas=1,
        max_replicas=1,
        target_concurrency=8,
        revisions=(revision,),
    )
    (obj,) = (
        o for o in manifests.deployment_objects(deployment, manifests.KubeSettings()) if o["kind"] == "Deployment"
    )
    assert manifest_problem(obj) is None
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "modelserver"]
    return dict(container)


def test_a_v2_revision_runs_the_builtin_server_in_v2_mode_with_flags_it_takes() -> None:
    args = model_container({"protocol": "v2", "args": ["--stall-ms", "5"]})["args"]

    assert args == [
        "--model-name",
        "frontdoor/ranker",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--protocol",
        "v2",
        "--stall-ms",
        "5",
    ]
    config = config_from_args(args, environ={})
    assert (config.protocol, config.model_name, config.port) == ("v2", "frontdoor/ranker", 8000)


@pytest.mark.parametrize("spec", [{}, {"protocol": "openai"}], ids=["a spec from before protocols", "openai"])
def test_an_openai_revision_runs_the_builtin_server_in_its_default_mode(spec: dict[str, Any]) -> None:
    args = model_container(spec)["args"]

    assert "--protocol" not in args
    # The server takes no abbreviations: ``--model`` would stop it at start.
    config = config_from_args(args, environ={})
    assert (config.protocol, config.model_name) == ("openai", "frontdoor/ranker")
