"""The agent's control loop: read desired state, converge the replica processes to it, report what it sees.

Level-triggered: every tick recomputes the wanted replica set (deployment × revision × slot) from the whole
desired hash, so a lost notice or a crash in the middle of a tick is repaired by the next one. A replica that is no
longer wanted drains before it stops (``drain.py``): it leaves the reported endpoints at once, and its process goes
only when no gateway can route to it any more.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from controlplane.contracts import localagent as protocol
from controlplane.contracts.revision_status import RevisionStatus
from localagent import launch, procs, sandbox
from localagent.capacity import GpuSlots
from localagent.config import AgentConfig
from localagent.drain import Drainer
from localagent.health import QUEUE_RUNTIMES, HealthChecker
from localagent.staging import BuiltinStage
from localagent.state import ReplicaRecord, load_ports, load_records, replica_key, save_records

log = logging.getLogger(__name__)

# A replica healthy this long has its restart backoff forgotten.
BACKOFF_RESET_AFTER_S = 30.0


@dataclass
class Replica:
    """A running replica process, started by this agent (``proc`` set) or adopted from a previous one."""

    record: ReplicaRecord
    proc: subprocess.Popen[bytes] | None
    started_at: float  # monotonic
    host: str = "127.0.0.1"
    healthy: bool = False
    healthy_since: float | None = None
    failed_checks: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.record.port}"


@dataclass
class SlotHistory:
    """Crash memory of one replica slot, for exponential restart backoff."""

    failures: int = 0
    not_before: float = 0.0  # monotonic
    last_error: str = ""


@dataclass
class RevisionNotes:
    """Why a revision has fewer ready replicas than desired, gathered during a tick."""

    waiting_for_capacity: str | None = None
    problems: list[str] = field(default_factory=list)


class Supervisor:
    def __init__(self, config: AgentConfig, client: redis.Redis) -> None:
        self.config = config
        self.redis = client
        self.replicas: dict[str, Replica] = {}
        self.history: dict[str, SlotHistory] = {}
        self.desired: dict[int, protocol.DesiredDeployment] = {}
        self._raw_desired: dict[int, str] = {}
        self.gpus = GpuSlots(config.gpu_slots)
        self.health = HealthChecker()
        self.drainer = Drainer(config, client)
        self.snapshot: dict[str, Any] = {"replicas": [], "deployments": {}}
        self._notes: dict[int, RevisionNotes] = {}
        self._drain_health: dict[str, bool] = {}  # this tick's health of the draining replicas, by check key
        self._refused: set[tuple[str, str]] = set()  # (key, spec hash) whose refusal was logged
        self._dirty = False
        # Each slot keeps its port across crashes and agent restarts, so published endpoints stay valid.
        self.ports: dict[str, int] = load_ports(config.state_dir)
        # Raises ImproperlyConfiguredEnv for a run-as user this agent cannot or must not use.
        self.run_as = sandbox.resolve_run_as(config.run_as)
        root = sandbox.sandbox_root(config.state_dir, config.stage_dir, self.run_as)
        self.replica_dirs = sandbox.ReplicaDirs(root, config.state_dir, self.run_as)
        self.builtin = BuiltinStage(lambda: root, self.run_as)

    # ---- desired state -------------------------------------------------------------------------------------
    def load_desired(self) -> None:
        """Read the whole desired hash; malformed entries are logged and skipped (never crash the loop)."""
        raw = self.redis.hgetall(protocol.desired_key(self.config.prefix))
        desired: dict[int, protocol.DesiredDeployment] = {}
        raw_by_id: dict[int, str] = {}
        for field_name, value in raw.items():
            text = value.decode() if isinstance(value, bytes) else str(value)
            try:
                deployment = protocol.parse_desired(text)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("skipping malformed desired state for %r: %s", field_name, exc)
                continue
            desired[deployment.id] = deployment
            raw_by_id[deployment.id] = text
        self.desired = desired
        self._raw_desired = raw_by_id

    def wanted(self) -> dict[str, tuple[protocol.DesiredDeployment, protocol.DesiredRevision, int]]:
        """Every replica that should run, keyed like its record, in a stable placement order."""
        out: dict[str, tuple[protocol.DesiredDeployment, protocol.DesiredRevision, int]] = {}
        for dep_id in sorted(self.desired):
            deployment = self.desired[dep_id]
            for revision in sorted(deployment.revisions, key=lambda r: r.id):
                for slot in range(revision.replicas):
                    out[replica_key(dep_id, revision.id, slot)] = (deployment, revision, slot)
        return out

    # ---- adoption after a restart --------------------------------------------------------------------------
    def adopt_or_clean(self) -> None:
        """Adopt recorded replicas that still run, are wanted and answer health checks; stop every other one."""
        wanted = self.wanted()
        records = load_records(self.config.state_dir)
        to_stop: list[procs.ProcessIdentity] = []
        adopted_pids: set[int] = set()
        for record in records:
            if not procs.is_same_process(record.identity):
                continue  # gone, or the pid now belongs to someone else: never signal it
            want = wanted.get(record.key)
            same_spec = want is not None and want[1].spec_hash == record.spec_hash
            # A replica that is no longer wanted may still be in the gateways' snapshot (the previous agent may have
            # been draining it): it drains rather than stop under their requests. Either way it must answer.
            healthy = self._serving(record)
            if not healthy or not self._claim_gpus(record):
                to_stop.append(record.identity)
                continue
            now = time.monotonic()
            replica = Replica(record, None, started_at=now, healthy=True, healthy_since=now, host=self.config.host)
            adopted_pids.add(record.pid)
            if same_spec and record.key not in self.replicas:
                self.replicas[record.key] = replica
                self.ports[record.key] = record.port
                log.info("adopted replica %s (pid %s, port %s)", record.key, record.pid, record.port)
            else:
                self.drainer.add(replica)
        # Replicas started by an agent that died before recording them carry our marker: stop those too.
        for ident, marker in procs.find_marked_processes(launch.marker_prefix(self.config)):
            if ident.pid not in adopted_pids and ident not in to_stop:
                log.info("stopping unrecorded replica process %s (%s)", ident.pid, marker)
                to_stop.append(ident)
        if to_stop:
            log.info("stopping %d replica process(es) left by a previous agent", len(to_stop))
            procs.stop_processes(to_stop, self.config.stop_grace_s)
        self._dirty = True
        self._save()

    def _serving(self, record: ReplicaRecord) -> bool:
        path = self.config.health_path(record.runtime)
        return self.health.check_all({record.key: (self.config.host, record.port, path)})[record.key]

    def _claim_gpus(self, record: ReplicaRecord) -> bool:
        return all(self.gpus.claim(gpu_type, ids) for gpu_type, ids in record.gpus.items())

    # ---- one tick ------------------------------------------------------------------------------------------
    def tick(self) -> None:
        self.load_desired()
        self._notes = {}
        self._reap_exited()
        self._check_health()
        self._converge()
        self.drainer.step(self._drain_health, self.health.in_flight, self._refresh_identity)
        self._save()
        self._report()

    def _fail_slot(self, key: str, error: str) -> None:
        hist = self.history.setdefault(key, SlotHistory())
        hist.failures += 1
        delay = min(self.config.backoff_cap_s, self.config.backoff_base_s * 2 ** (hist.failures - 1))
        hist.not_before = time.monotonic() + delay
        hist.last_error = f"{error}; restarting in {delay:.0f}s (log: {launch.log_path(self.config, key)})"
        log.warning("replica %s %s", key, hist.last_error)

    def _forget(self, key: str) -> None:
        self._release(self.replicas.pop(key))

    def _release(self, replica: Replica) -> None:
        for gpu_type, ids in replica.record.gpus.items():
            self.gpus.release(gpu_type, ids)
        self._dirty = True

    def _reap_exited(self) -> None:
        for replica in self.drainer.reap():
            log.info("drained replica %s (pid %s) has exited", replica.record.key, replica.record.pid)
            self._release(replica)
        for key, replica in list(self.replicas.items()):
            if replica.proc is not None:
                code = replica.proc.poll()
                if code is None:
                    self._refresh_identity(replica)
                    continue
                error = f"exited with code {code}"
            elif procs.is_same_process(replica.record.identity):
                continue
            else:
                error = "exited"
            self._forget(key)
            self._fail_slot(key, error)

    def _refresh_identity(self, replica: Replica) -> None:
        """Follow a launcher's exec: ``env X=1 server ...`` or a script keeps its pid and start time but changes its
        command line once it execs the server. Only for our own unreaped children, whose pid cannot be reused."""
        record = replica.record
        current = procs.identify(record.pid)
        if current is None or record.start_time not in (-1, current.start_time):
            return
        if current.cmdline != tuple(record.cmdline) or current.start_time != record.start_time:
            record.cmdline, record.start_time = list(current.cmdline), current.start_time
            self._dirty = True

    def _check_health(self) -> None:
        targets = {
            key: (self.config.host, r.record.port, self.config.health_path(r.record.runtime))
            for key, r in self.replicas.items()
        }
        # Runtimes with vLLM's gauges also get /metrics read, for the autoscaler's queue figure (published below).
        queued = {key for key, r in self.replicas.items() if r.record.runtime in QUEUE_RUNTIMES}
        # Draining replicas are checked in the same round, for their in-flight count; they are never restarted.
        draining = self.drainer.health_targets()
        checked = targets | draining
        results = self.health.check_all(checked, queued | self.drainer.gauged()) if checked else {}
        if not checked:
            self.health.waiting, self.health.in_flight = {}, {}
        self._drain_health = {key: results.pop(key) for key in draining}
        now = time.monotonic()
        to_restart: list[tuple[str, str]] = []
        for key, ok in results.items():
            replica = self.replicas[key]
            if ok:
                if not replica.healthy:
                    replica.healthy_since = now
                replica.healthy, replica.failed_checks = True, 0
                if now - (replica.healthy_since or now) >= BACKOFF_RESET_AFTER_S:
                    self.history.pop(key, None)
                continue
            replica.healthy = False
            replica.failed_checks += 1
            if replica.healthy_since is None and now - replica.started_at > self.config.startup_timeout_s:
                to_restart.append((key, f"not healthy {self.config.startup_timeout_s:.0f}s after start"))
            elif replica.healthy_since is not None and replica.failed_checks >= self.config.unhealthy_restart_after:
                to_restart.append((key, f"failed {replica.failed_checks} health checks in a row"))
        if to_restart:
            self._stop([key for key, _ in to_restart])
            for key, error in to_restart:
                self._fail_slot(key, error)

    def _stop(self, keys: list[str]) -> None:
        replicas = [self.replicas[k] for k in keys]
        for replica in replicas:
            if replica.proc is not None and replica.proc.poll() is None:
                self._refresh_identity(replica)
        children = {r.record.pid: r.proc for r in replicas if r.proc is not None}
        procs.stop_processes([r.record.identity for r in replicas], self.config.stop_grace_s, children)
        for key in keys:
            self._forget(key)

    def _converge(self) -> None:
        wanted = self.wanted()
        extra = [
            key
            for key, r in self.replicas.items()
            if key not in wanted or wanted[key][1].spec_hash != r.record.spec_hash
        ]
        # A replica that may be in the gateways' snapshot (it has answered a health check) drains; one that never
        # served is stopped at once, so its GPU slots are free for what replaces it.
        never_served = [key for key in extra if self.replicas[key].healthy_since is None]
        if never_served:
            log.info("stopping %d replica(s) no longer desired: %s", len(never_served), ", ".join(sorted(never_served)))
            self._stop(never_served)
        for key in sorted(set(extra) - set(never_served)):
            self.drainer.add(self.replicas.pop(key))
            self._dirty = True
        for key in set(self.history) - set(wanted):
            del self.history[key]
        for key in set(self.ports) - set(wanted) - set(self.replicas):
            del self.ports[key]
            self._dirty = True
        draining = self.drainer.replicas()
        self.replica_dirs.remove_except(set(wanted) | set(self.replicas) | {r.record.key for r in draining})
        now = time.monotonic()
        for key, (deployment, revision, slot) in wanted.items():
            if key in self.replicas:
                continue
            back = self.drainer.take_back(key, revision.spec_hash)
            if back is not None:
                self.replicas[key] = back
                self.ports[key] = back.record.port
                self._dirty = True
                continue
            notes = self._notes.setdefault(revision.id, RevisionNotes())
            hist = self.history.get(key)
            if hist is not None and hist.not_before > now:
                notes.problems.append(f"replica {key} {hist.last_error}")
                continue
            self._start(deployment, revision, slot, key, notes)

    def _start(
        self,
        deployment: protocol.DesiredDeployment,
        revision: protocol.DesiredRevision,
        slot: int,
        key: str,
        notes: RevisionNotes,
    ) -> None:
        used_ports = {r.record.port for r in [*self.replicas.values(), *self.drainer.replicas()]}
        port = self.ports.get(key, 0)
        if not port or port in used_ports or not procs.port_is_free(self.config.host, port):
            port = procs.free_port(self.config.host, used_ports | set(self.ports.values()))
        builtin, why = self.builtin.get() if revision.runtime == "builtin" else (None, "")
        try:
            argv = launch.build_argv(self.config, revision, port, builtin, unavailable=why)
        except launch.RefusedRevision as exc:
            if (key, revision.spec_hash) not in self._refused:
                self._refused.add((key, revision.spec_hash))
                log.warning("not starting replica %s: %s", key, exc)
            notes.waiting_for_capacity = str(exc)
            return
        except launch.UnsupportedRuntime as exc:
            if why == BuiltinStage.PENDING:
                notes.problems.append(why)  # a moment's wait, not a reason the revision cannot run
            else:
                notes.waiting_for_capacity = str(exc)
            return
        gpu_ids: list[int] = []
        if revision.gpu_count:
            allocated = self.gpus.allocate(revision.gpu_type, revision.gpu_count)
            if allocated is None:
                notes.waiting_for_capacity = self.gpus.shortage_message(revision.gpu_type, revision.gpu_count)
                return
            gpu_ids = allocated
        try:
            replica_dir = self.replica_dirs.prepare(key)
            env = launch.build_env(
                self.config,
                revision,
                key,
                gpu_ids,
                run_as=self.run_as,
                replica_dir=replica_dir,
                builtin=builtin,
                owner=deployment,
            )
            proc, ident = procs.spawn(
                argv, env, launch.log_path(self.config, key), cwd=replica_dir.path, user=self.run_as.popen_kwargs()
            )
        except (OSError, sandbox.SandboxError) as exc:
            if gpu_ids:
                self.gpus.release(revision.gpu_type, gpu_ids)
            self._fail_slot(key, f"could not start as user {self.run_as.name}: {exc}")
            notes.problems.append(f"replica {key} {self.history[key].last_error}")
            return
        record = ReplicaRecord(
            key=key,
            deployment_id=deployment.id,
            revision_id=revision.id,
            slot=slot,
            spec_hash=revision.spec_hash,
            runtime=revision.runtime,
            port=port,
            pid=ident.pid,
            start_time=ident.start_time,
            cmdline=list(ident.cmdline),
            gpus={revision.gpu_type: gpu_ids} if gpu_ids else {},
        )
        self.replicas[key] = Replica(record=record, proc=proc, started_at=time.monotonic(), host=self.config.host)
        self.ports[key] = port
        self._dirty = True
        # Record it at once: an agent killed right after the spawn must still find this process on restart.
        self._save()
        log.info("started replica %s (pid %s, port %s): %s", key, ident.pid, port, " ".join(argv))

    def _save(self) -> None:
        if self._dirty:
            records = [r.record for r in [*self.replicas.values(), *self.drainer.replicas()]]
            save_records(self.config.state_dir, records, self.ports)
            self._dirty = False

    # ---- status ------------------------------------------------------------------------------------------
    def observe(self) -> dict[int, protocol.ObservedDeployment]:
        by_deployment: dict[int, list[Replica]] = {}
        for replica in [*self.replicas.values(), *self.drainer.replicas()]:
            by_deployment.setdefault(replica.record.deployment_id, []).append(replica)
        observed: dict[int, protocol.ObservedDeployment] = {}
        for dep_id in sorted(set(self.desired) | set(by_deployment)):
            running = by_deployment.get(dep_id, [])
            deployment = self.desired.get(dep_id)
            revisions: dict[int, RevisionStatus] = {}
            for revision in deployment.revisions if deployment else ():
                revisions[revision.id] = self._observe_revision(revision.id, revision.replicas, running)
            for replica in running:  # revisions being stopped still show until their processes are gone
                rid = replica.record.revision_id
                if rid not in revisions:
                    revisions[rid] = self._observe_revision(rid, 0, running)
            exists = bool(running) or (deployment is not None and not deployment.deleted)
            observed[dep_id] = protocol.ObservedDeployment(exists=exists, processes=len(running), revisions=revisions)
        return observed

    def _observe_revision(self, revision_id: int, desired: int, running: list[Replica]) -> RevisionStatus:
        # Draining replicas are never ready: the gateways are to stop routing to them (they count as processes).
        serving = {id(r) for r in self.replicas.values()}
        mine = sorted(
            (r for r in running if id(r) in serving and r.record.revision_id == revision_id),
            key=lambda r: r.record.slot,
        )
        ready = [r for r in mine if r.healthy]
        notes = self._notes.get(revision_id, RevisionNotes())
        parts = [f"{len(ready)}/{desired} ready"]
        starting = len(mine) - len(ready)
        if starting:
            parts.append(f"{starting} starting")
        parts.extend(self.drainer.describe(revision_id))
        parts.extend(notes.problems)
        if notes.waiting_for_capacity:
            parts.append(notes.waiting_for_capacity)
        return RevisionStatus(
            revision_id=revision_id,
            desired_replicas=desired,
            ready_replicas=len(ready),
            endpoints=[r.endpoint for r in ready],
            waiting_for_capacity=notes.waiting_for_capacity,
            message="; ".join(parts),
        )

    def _queues(self, observed: dict[int, protocol.ObservedDeployment]) -> dict[int, int | None]:
        """Requests waiting in each deployment's ready replicas' own queues (None: no replica reports it)."""
        queues: dict[int, int | None] = dict.fromkeys(observed)
        for key, waiting in self.health.waiting.items():
            replica = self.replicas.get(key)
            if replica is not None and replica.healthy:
                dep_id = replica.record.deployment_id
                queues[dep_id] = (queues.get(dep_id) or 0) + waiting
        return queues

    def _report(self) -> None:
        """Write every deployment's status plus the agent heartbeat; drop tombstones whose processes are gone."""
        now = time.time()
        observed = self.observe()
        prefix = self.config.prefix
        pipe = self.redis.pipeline(transaction=False)
        for dep_id, obs in observed.items():
            pipe.set(protocol.status_key(prefix, dep_id), obs.to_json(now, os.getpid()), ex=protocol.STATUS_TTL_S)
        for dep_id, waiting in self._queues(observed).items():
            if waiting is None:  # no replica of it reports the gauge: no figure rather than a stale one
                pipe.delete(protocol.queue_key(prefix, dep_id))
            else:
                pipe.set(protocol.queue_key(prefix, dep_id), waiting, ex=protocol.QUEUE_TTL_S)
        pipe.set(
            protocol.agent_key(prefix),
            f'{{"ts": {now}, "pid": {os.getpid()}, "control_port": {self.config.http_port}}}',
            ex=protocol.STATUS_TTL_S,
        )
        pipe.execute()
        for dep_id, deployment in self.desired.items():
            if deployment.deleted and not observed[dep_id].exists:
                self.redis.eval(
                    protocol.COMPARE_AND_DELETE, 1, protocol.desired_key(prefix), str(dep_id), self._raw_desired[dep_id]
                )
        self.snapshot = {
            "ts": now,
            "replicas": [
                {**r.record.__dict__, "healthy": r.healthy, "adopted": r.proc is None, "endpoint": r.endpoint}
                for r in sorted(self.replicas.values(), key=lambda r: r.record.key)
            ],
            "draining": self.drainer.status(),
            "deployments": {
                str(dep_id): {
                    "exists": obs.exists,
                    "revisions": {str(rid): rev.to_wire() for rid, rev in obs.revisions.items()},
                }
                for dep_id, obs in observed.items()
            },
        }

    # ---- shutdown ------------------------------------------------------------------------------------------
    def shutdown(self, stop_children: bool) -> None:
        """Stop every replica (default) or leave them recorded for the next agent to adopt."""
        if stop_children and self.replicas:
            log.info("stopping %d replica(s)", len(self.replicas))
            self._stop(list(self.replicas))
        if stop_children:
            self.drainer.stop_all()
            self.replica_dirs.remove_all()
        self._dirty = True
        self._save()
        self.health.close()
        if stop_children:
            try:
                pipe = self.redis.pipeline(transaction=False)
                for dep_id in self.desired:
                    pipe.delete(protocol.status_key(self.config.prefix, dep_id))
                pipe.delete(protocol.agent_key(self.config.prefix))
                pipe.execute()
            except redis.RedisError as exc:
                log.warning("could not clear status on shutdown: %s", exc)
