"""The model container's preStop hook, as rendered for the five examples, and run for real against the built-in model
server: it waits out the propagation time, then until nothing is in flight, and never holds an idle or gone server."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from deployments.backends.load_metrics import load_of
from deployments.backends.manifests_pod import PRESTOP_SLEEP_S, SHUTDOWN_MARGIN_S, runtime_of
from tests.deployments import examples
from tests.support.modelserver import RunningServer, free_port, start_server, wait_until

ALL = sorted(examples.EXAMPLES)


def containers(name: str) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(revision spec, pod spec, model container) of each revision of the example."""
    spec = examples.EXAMPLES[name]()
    objects = {o["metadata"]["name"]: o for o in examples.render(spec) if o["kind"] == "Deployment"}
    found = []
    for revision in spec.revisions:
        pod = objects[f"{spec.name}-r{revision.number}"]["spec"]["template"]["spec"]
        found.append((revision.spec, pod, pod["containers"][0]))
    return found


@pytest.mark.parametrize("name", ALL)
def test_every_pod_drains_on_the_runtimes_own_gauges_within_its_grace_period(name: str) -> None:
    spec = examples.EXAMPLES[name]()
    for rspec, pod, container in containers(name):
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        load = load_of(runtime_of(rspec))
        port, gauges = load.port, load.gauges
        assert command[:2] == ["/bin/sh", "-c"]
        propagation, deadline, url, *names = command[5:]
        # Longer than the gateways take to load a snapshot without the endpoint (2 s).
        assert int(propagation) == PRESTOP_SLEEP_S >= 2
        assert int(deadline) == spec.request_timeout_s
        assert url == f"http://127.0.0.1:{port}/metrics"
        assert tuple(names) == gauges
        # The hook's longest wait, then the server's own shutdown, fit in the grace period.
        assert pod["terminationGracePeriodSeconds"] >= int(propagation) + int(deadline) + SHUTDOWN_MARGIN_S


def test_triton_finishes_what_executes_at_sigterm_for_as_long_as_a_request_may_run() -> None:
    ((_rspec, _pod, container),) = containers("triton_recsys_cpu")
    assert "--exit-timeout-secs=30" in container["args"]


def hook(server_port: int, *, path: str | None = None) -> subprocess.Popen[bytes]:
    """The 70B example's hook as rendered, pointed at ``server_port`` with no propagation wait."""
    ((_rspec, _pod, container),) = containers("llama_70b")
    command = list(container["lifecycle"]["preStop"]["exec"]["command"])
    command[5], command[7] = "0", f"http://127.0.0.1:{server_port}/metrics"
    env = {**os.environ, "PATH": path} if path is not None else None
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def slow_server() -> Any:
    server = start_server("--ttft-ms", "1500")
    yield server
    server.stop()


def test_the_hook_returns_only_once_the_request_in_flight_has_finished(slow_server: RunningServer) -> None:
    finished = threading.Event()

    def generate() -> None:
        slow_server.client().chat.completions.create(
            model="frontdoor/sim-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        finished.set()

    threading.Thread(target=generate, daemon=True).start()
    assert wait_until(lambda: slow_server.metric("vllm:num_requests_running") >= 1)

    drain = hook(slow_server.port)
    drain.wait(timeout=30)

    assert drain.returncode == 0, drain.stderr.read() if drain.stderr else ""
    assert finished.is_set(), "the hook returned while a request was still in flight"


def test_the_hook_does_not_hold_an_idle_server_or_one_that_is_gone(slow_server: RunningServer) -> None:
    idle = hook(slow_server.port)
    gone = hook(free_port())

    assert idle.wait(timeout=30) == 0
    assert gone.wait(timeout=30) == 0


def test_in_an_image_without_python_the_hook_still_waits_out_the_propagation(tmp_path: Path) -> None:
    # An image with a shell and ``sleep`` but no python3: a stand-in ``sleep`` records what it was asked to wait.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "slept"
    sleep = bin_dir / "sleep"
    sleep.write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    sleep.chmod(0o755)

    drain = hook(free_port(), path=str(bin_dir))

    assert drain.wait(timeout=30) == 0
    assert record.read_text().split() == ["0"]  # the propagation argument, which ``hook`` sets to 0
