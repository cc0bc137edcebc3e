"""The kubelet: what a scheduled pod's status shows as its containers start, run, fail and restart.

Without an injected fault a pod is Running and Ready on the step after it was scheduled (``Ready``,
``ContainersReady``, ``Initialized``, ``PodScheduled`` and ``PodReadyToStartContainers`` True, each container
``running``, ``started`` and ``ready``, a pod IP from 10.244.0.0/16). Faults, per image or per pod:

- ``ErrImagePull``: the container waits with reason ``ErrImagePull``, then ``ImagePullBackOff`` (``Back-off
  pulling image "<image>"``); the pod stays Pending; pulls are retried after a back-off of 10 s, doubling to 300 s;
- ``CrashLoopBackOff``: the container exits 1 (``lastState.terminated``, reason ``Error``) and waits in
  ``CrashLoopBackOff`` (``back-off 10s restarting failed container=...``); each restart after the back-off
  counts in ``restartCount``;
- ``OOMKilled``: the same loop, ``lastState.terminated`` with reason ``OOMKilled`` and exit code 137;
- ``StartupProbeFailure``: the container runs but never becomes ready; once the startup probe's window
  (``initialDelaySeconds + periodSeconds * failureThreshold``) has passed on the clock, the kubelet records
  ``Startup probe failed: ...`` and ``Container <name> failed startup probe, will be restarted`` events and
  restarts it (``lastState.terminated`` exit code 137, ``restartCount`` up).

A fault taken away lets the container start at its next restart. A terminating pod is gone at the next step.
Everything waits on the store's clock, so a test moves time instead of sleeping.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakekube.controller import Controller

FAULTS = ("ErrImagePull", "CrashLoopBackOff", "OOMKilled", "StartupProbeFailure")
_MAX_BACKOFF_S = 300


@dataclass(frozen=True)
class PodFault:
    """A failure injected into containers (by image or by pod name); ``message`` replaces the default text."""

    kind: str
    message: str = ""

    def __post_init__(self) -> None:
        if self.kind not in FAULTS:
            raise ValueError(f"unknown pod fault {self.kind!r}; one of {', '.join(FAULTS)}")


def backoff_s(restarts: int) -> int:
    return int(min(_MAX_BACKOFF_S, 10 * 2 ** max(0, restarts - 1)))


def _condition(previous: list[dict[str, Any]], type_: str, status: str, now: str, **extra: str) -> dict[str, Any]:
    old = next((c for c in previous if c.get("type") == type_), None)
    since = old.get("lastTransitionTime", now) if old and old.get("status") == status else now
    return {"type": type_, "status": status, "lastTransitionTime": since, **extra}


def pod_conditions(previous: list[dict[str, Any]], ready: bool, unready: list[str], now: str) -> list[dict[str, Any]]:
    message = f"containers with unready status: [{' '.join(unready)}]"
    not_ready = {"reason": "ContainersNotReady", "message": message}
    return [
        _condition(previous, "PodReadyToStartContainers", "True", now),
        _condition(previous, "Initialized", "True", now),
        _condition(previous, "Ready", "True", now)
        if ready
        else _condition(previous, "Ready", "False", now, **not_ready),
        _condition(previous, "ContainersReady", "True", now)
        if ready
        else _condition(previous, "ContainersReady", "False", now, **not_ready),
        _condition(previous, "PodScheduled", "True", now),
    ]


def _probe_window(container: dict[str, Any]) -> int:
    probe = container.get("startupProbe") or {}
    if not probe:
        return 30
    period = int(probe.get("periodSeconds", 10))
    return int(probe.get("initialDelaySeconds", 0)) + period * int(probe.get("failureThreshold", 3))


def _probe_target(container: dict[str, Any], ip: str) -> str:
    http = (container.get("startupProbe") or {}).get("httpGet") or {}
    port = http.get("port", 80)
    if isinstance(port, str):
        port = next((p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port), port)
    return f'Get "http://{ip}:{port}{http.get("path", "/")}": dial tcp {ip}:{port}: connect: connection refused'


class Kubelet:
    """Steps every scheduled pod; ``ctl`` gives it the store, the faults, the clock's timers and events."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        # (namespace, pod name, container) -> the clock time of its next restart or pull, and its pull attempts.
        self.next_try: dict[tuple[str, str, str], float] = {}
        self.pulls: dict[tuple[str, str, str], int] = {}

    def forget(self, namespace: str, name: str) -> None:
        for key in [k for k in self.next_try if k[:2] == (namespace, name)]:
            self.next_try.pop(key, None)
        for key in [k for k in self.pulls if k[:2] == (namespace, name)]:
            self.pulls.pop(key, None)

    def sync(self, namespace: str, pod: dict[str, Any]) -> None:
        store = self.ctl.store
        meta, spec = pod["metadata"], pod.get("spec") or {}
        if "deletionTimestamp" in meta:
            # Terminating for one step (its endpoints show ``terminating``), then its containers have stopped.
            if self.ctl.terminated_before_this_step(namespace, meta["name"]):
                store._remove("pods", namespace, meta["name"])
                self.forget(namespace, meta["name"])
            else:
                self.ctl.dirty.add(namespace)
            return
        previous = pod.get("status") or {}
        now = store.timestamp()
        ip = previous.get("podIP") or self.ctl.allocate_pod_ip()
        old_statuses = {c.get("name"): c for c in previous.get("containerStatuses") or []}
        statuses, never_ran = [], False
        for container in spec.get("containers") or []:
            status, pending = self._container(namespace, pod, container, old_statuses.get(container["name"]) or {}, ip)
            statuses.append(status)
            never_ran = never_ran or pending
        unready = [s["name"] for s in statuses if not s["ready"]]
        node = store.objects.get(("nodes", "", spec.get("nodeName", "")))
        host_ip = self.ctl.node_ip(node) if node else ""
        status = {
            "phase": "Pending" if never_ran else "Running",
            "conditions": pod_conditions(previous.get("conditions") or [], not unready, unready, now),
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": previous.get("startTime", now),
            "qosClass": qos_class(spec),
            "containerStatuses": statuses,
        }
        store.write_status("pods", namespace, meta["name"], status)

    def _fault(self, namespace: str, pod: dict[str, Any], container: dict[str, Any]) -> PodFault | None:
        by_pod = self.ctl.pod_faults.get((namespace, pod["metadata"]["name"]))
        return by_pod or self.ctl.image_faults.get(str(container.get("image") or ""))

    def _retry_at(self, namespace: str, key: tuple[str, str, str], delay_s: float) -> None:
        self.next_try[key] = self.ctl.store.clock() + delay_s
        self.ctl.wake_at(namespace, self.next_try[key])

    def _container(
        self, namespace: str, pod: dict[str, Any], container: dict[str, Any], old: dict[str, Any], ip: str
    ) -> tuple[dict[str, Any], bool]:
        """The container's status now, and whether it has never run (the pod stays Pending then)."""
        ctl, store = self.ctl, self.ctl.store
        name, image = container["name"], str(container.get("image") or "")
        pod_name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        key = (namespace, pod_name, name)
        now = store.timestamp()
        fault = self._fault(namespace, pod, container)
        restarts = int(old.get("restartCount", 0))
        last_state = old.get("lastState") or {}
        state = old.get("state") or {}
        waiting = (state.get("waiting") or {}).get("reason", "")
        ran = "running" in state or bool(last_state) or restarts > 0
        due = store.clock() >= self.next_try.get(key, 0)
        digest = hashlib.sha256(image.encode()).hexdigest()
        container_id = "containerd://" + hashlib.sha256(f"{uid}/{name}/{restarts}".encode()).hexdigest()
        base = {"name": name, "image": image, "imageID": f"{image}@sha256:{digest}", "restartCount": restarts}
        if last_state:
            base["lastState"] = last_state

        def waiting_in(reason: str, message: str) -> dict[str, Any]:
            return {
                **base,
                "state": {"waiting": {"reason": reason, "message": message}},
                "ready": False,
                "started": False,
            }

        if waiting in ("ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff") and not due:
            if waiting == "ErrImagePull":  # a failed pull backs off at once
                ctl.event(pod, "Normal", "BackOff", f'Back-off pulling image "{image}"')
                return waiting_in("ImagePullBackOff", f'Back-off pulling image "{image}"'), True
            return {**base, "state": state, "ready": False, "started": False}, not ran
        if fault is not None and fault.kind == "ErrImagePull" and not ran:
            self.pulls[key] = self.pulls.get(key, 0) + 1
            self._retry_at(namespace, key, backoff_s(self.pulls[key]))
            message = fault.message or (
                f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": failed to resolve '
                f'reference "{image}": {image}: not found'
            )
            ctl.event(pod, "Normal", "Pulling", f'Pulling image "{image}"')
            ctl.event(pod, "Warning", "Failed", f'Failed to pull image "{image}": {message}')
            return waiting_in("ErrImagePull", message), True
        if fault is not None and fault.kind in ("CrashLoopBackOff", "OOMKilled"):
            restarts += 1  # it started, exited, and is restarted after a back-off
            exit_code, reason = (137, "OOMKilled") if fault.kind == "OOMKilled" else (1, "Error")
            started_at = (state.get("running") or {}).get("startedAt") or now
            terminated = {"exitCode": exit_code, "reason": reason, "startedAt": started_at, "finishedAt": now}
            terminated["containerID"] = container_id
            if fault.message:
                terminated["message"] = fault.message
            wait = backoff_s(restarts)
            self._retry_at(namespace, key, wait)
            where = f"{pod_name}_{namespace}({uid})"
            ctl.event(pod, "Warning", "BackOff", f"Back-off restarting failed container {name} in pod {where}")
            base.update(restartCount=restarts, lastState={"terminated": terminated})
            message = f"back-off {wait}s restarting failed container={name} pod={where}"
            return waiting_in("CrashLoopBackOff", message), False
        if fault is not None and fault.kind == "StartupProbeFailure":
            running = state.get("running")
            if running is None:
                ctl.event(pod, "Normal", "Started", f"Started container {name}")
                running = {"startedAt": now}
                self._retry_at(namespace, key, _probe_window(container))
            elif due:
                detail = fault.message or _probe_target(container, ip)
                ctl.event(pod, "Warning", "Unhealthy", f"Startup probe failed: {detail}")
                ctl.event(pod, "Normal", "Killing", f"Container {name} failed startup probe, will be restarted")
                terminated = {"exitCode": 137, "reason": "Error", "startedAt": running.get("startedAt", now)}
                terminated.update(finishedAt=now, containerID=container_id)
                base.update(restartCount=restarts + 1, lastState={"terminated": terminated})
                running = {"startedAt": now}
                self._retry_at(namespace, key, _probe_window(container))
            return {**base, "state": {"running": running}, "ready": False, "started": False}, False
        # Nothing injected: it runs (a crashed one once more, counted), and is ready.
        self.next_try.pop(key, None)
        running = state.get("running")
        if running is None or not old.get("ready"):
            if waiting == "CrashLoopBackOff":
                base["restartCount"] = restarts + 1
            if running is None:
                ctl.event(pod, "Normal", "Started", f"Started container {name}")
                running = {"startedAt": now}
        return {**base, "state": {"running": running}, "ready": True, "started": True}, False


def qos_class(spec: dict[str, Any]) -> str:
    containers = spec.get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(k)
        and (r.get("requests") or {}).get(k, (r.get("limits") or {}).get(k)) == (r.get("limits") or {}).get(k)
        for r in resources
        for k in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"
