"""Gateway benchmark: the model server direct, through Frontdoor, and through LiteLLM proxy, in one run.

``python bench/gateway.py [--duration 10] [--connections 32] [--skip-litellm] [--scenario chat|v2] [--json]``

``--scenario v2`` measures the Open Inference Protocol instead: the built-in server's v2 scorer direct and through
Frontdoor (``POST /v2/models/<name>/infer``, a batch of ``V2_BATCH`` pairs, every limit on); LiteLLM has no v2.

Starts on 127.0.0.1: the model server (simulator, no delay), the Frontdoor gateway (one worker, with auth,
Redis limits, usage events, metrics and its access log all on) and LiteLLM proxy (a pinned version in its own
virtualenv under var/bench/, no database, one worker), both pointing at that model server. It drives each
target with the same load (wrk with bench/wrk_post.lua, or an async aiohttp client when wrk is missing) and
prints requests/s, p50 and p99 for each, the latency each proxy adds at low load (one connection), and the
Frontdoor/LiteLLM throughput ratio. docs/performance.md records the figures and how to read them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/gateway.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from bench.common import (
    ROOT,
    VAR_BENCH,
    Child,
    Children,
    LoadResult,
    ProcessCpu,
    free_port,
    http_request,
    run_aiohttp,
    run_wrk,
    wait_http,
)
from controlplane.contracts.keyformat import generate_key, hash_secret
from controlplane.contracts.snapshot import DeploymentDoc, KeyDoc, Limits, TenantDoc, deployment_key, publish_document

LITELLM_VERSION = "1.106.12"  # newest that resolves from the registries here (later ones need missing extras)
LITELLM_VENV = VAR_BENCH / "litellm-venv"
LITELLM_MASTER_KEY = "sk-bench-master-key"
UPSTREAM_MODEL = "frontdoor/sim-chat"
DEPLOYMENT = "bench-chat"
V2_UPSTREAM_MODEL = "frontdoor/ranker"
V2_DEPLOYMENT = "bench-ranker"
V2_BATCH = 8  # user/item pairs scored per v2 request
HIGH = 10**12  # limits high enough that nothing is refused, yet every limit is real and checked in Redis


@dataclass
class Target:
    """One thing to load: where to POST, which ``model`` to name, which Authorization header to send.

    ``v2``: the model is called on the Open Inference Protocol (``/v2/models/<model>/infer``), not chat.
    """

    name: str
    url: str
    model: str
    authorization: str
    child: Child
    v2: bool = False

    @property
    def path(self) -> str:
        return f"/v2/models/{self.model}/infer" if self.v2 else "/v1/chat/completions"

    def body(self, max_tokens: int) -> str:
        if self.v2:
            pairs = list(range(V2_BATCH))
            return json.dumps(
                {
                    "inputs": [
                        {"name": "user_id", "shape": [V2_BATCH], "datatype": "INT64", "data": pairs},
                        {"name": "item_id", "shape": [V2_BATCH], "datatype": "INT64", "data": pairs[::-1]},
                    ]
                }
            )
        return json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": "Say hello to the benchmark, briefly."}],
                "max_tokens": max_tokens,
            }
        )


# --- setting up the three servers -------------------------------------------------------------------------


def start_modelserver(children: Children, v2: bool = False) -> Child:
    port = free_port()
    mode = ["--protocol", "v2", "--model-name", V2_UPSTREAM_MODEL] if v2 else []
    child = children.start(
        "modelserver", [sys.executable, "-m", "modelserver", "--host", "127.0.0.1", "--port", str(port), *mode], port
    )
    wait_http(child.url + "/health", child)
    return child


def start_gateway(children: Children, redis_url: str, prefix: str, pepper: str) -> Child:
    port = free_port()
    env = {"REDIS_URL": redis_url, "FRONTDOOR_REDIS_PREFIX": prefix, "FRONTDOOR_KEY_PEPPER": pepper}
    argv = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    child = children.start("gateway", argv, port, env)
    wait_http(child.url + "/healthz", child)
    return child


def publish_snapshot(
    client: redis.Redis, prefix: str, pepper: str, upstream_url: str, v2: bool = False
) -> tuple[str, int]:
    """Publish a config snapshot (``controlplane.contracts.snapshot``) with one tenant, one key and ``bench-chat``
    (``bench-ranker``, speaking v2, with ``v2``), with the control plane's own store script.

    Returns the full API key and the snapshot version. Limits are numbers, not null, so the limiter runs its
    requests/min, tokens/min, concurrency and budget checks on every request, as in production.
    """
    full_key, parsed = generate_key("test")
    tenant = "bench"
    limits: Limits = {"requests_per_minute": HIGH, "tokens_per_minute": HIGH, "max_concurrent_requests": 100_000}
    key: KeyDoc = {
        "id": 1,
        "env": parsed.env,  # the gateway refuses a key presented with another environment than its own
        "hash": hash_secret(parsed.secret, pepper),
        "tenant": tenant,
        "scopes": ["inference"],
        "expires_at": None,
        "revoked": False,
        "limits": limits,
    }
    tenant_doc: TenantDoc = {"id": 1, "status": "active", "limits": {**limits, "monthly_token_budget": HIGH}}
    name, model = (V2_DEPLOYMENT, V2_UPSTREAM_MODEL) if v2 else (DEPLOYMENT, UPSTREAM_MODEL)
    deployment: DeploymentDoc = {
        "id": 1,
        "tenant": tenant,
        "name": name,
        "model": model,
        "runtime": "external",
        "state": "running",
        "min_replicas": 1,
        "max_replicas": 1,
        "max_concurrent_requests": 100_000,
        "timeout_s": 30,
        "created": int(time.time()),
        "revisions": [{"id": 1, "name": "r1", "weight": 100, "endpoints": [upstream_url]}],
    }
    if v2:
        deployment["protocol"] = "v2"
    version = publish_document(
        client,
        prefix,
        keys={parsed.key_id: key},
        tenants={tenant: tenant_doc},
        deployments={deployment_key(tenant, name): deployment},
        # The mock upstream is a tenant-given (external) endpoint on loopback, so every request goes through the
        # address policy; an operator-allowed loopback network is what lets it through.
        network={"allowed_networks": ["127.0.0.0/8"], "platform_services": []},
    )
    return full_key, version


def wait_for_snapshot(gateway: Child, version: int, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        status, body = http_request(gateway.url + "/healthz")
        if status == 200 and json.loads(body)["snapshot_version"] >= version:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the gateway did not load snapshot {version} within {deadline_s:.0f} s")


def clear_prefix(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])


def ensure_litellm(version: str) -> Path:
    """The ``litellm`` executable of var/bench/litellm-venv, installing the pinned version first if missing."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists() and _installed_litellm_version() == version:
        return exe
    # On stderr, like pip's own output: with --json, stdout carries only the JSON document.
    print(
        f"installing litellm[proxy]=={version} into {LITELLM_VENV.relative_to(ROOT)} (first run only) ...",
        file=sys.stderr,
    )
    if not (LITELLM_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, stdout=sys.stderr)
    subprocess.run(
        [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", f"litellm[proxy]=={version}"],
        check=True,
        stdout=sys.stderr,
    )
    return exe


def _installed_litellm_version() -> str | None:
    result = subprocess.run(
        [str(LITELLM_VENV / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def start_litellm(children: Children, exe: Path, upstream_url: str, log_dir: Path) -> Child:
    """LiteLLM proxy with one model pointing at the model server, a master key, no database, one worker."""
    config = {
        "model_list": [
            {
                "model_name": DEPLOYMENT,
                "litellm_params": {
                    "model": f"openai/{UPSTREAM_MODEL}",
                    "api_base": f"{upstream_url}/v1",
                    "api_key": "sk-upstream-unused",
                },
            }
        ],
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
        "litellm_settings": {"telemetry": False, "set_verbose": False},
    }
    config_path = log_dir / "litellm-config.yaml"
    config_path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
    port = free_port()
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no cost-map download at start-up
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_ADMIN_UI": "True",
        "NO_DOCS": "True",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    argv = [str(exe), "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    child = children.start("litellm", argv, port, env, unset=("DATABASE_URL",))  # no database, on purpose
    wait_http(child.url + "/health/liveliness", child, deadline_s=120)
    return child


def check_answers(target: Target, max_tokens: int) -> None:
    """One request before the load: it must be a 200 answer, or the figures would be about errors."""
    headers = {"Content-Type": "application/json"}
    if target.authorization:
        headers["Authorization"] = target.authorization
    url = target.url + target.path
    status, body = http_request(url, "POST", target.body(max_tokens).encode(), headers, timeout_s=30)
    if status != 200:
        raise RuntimeError(f"{target.name}: {status} {body[:500]!r}")
    payload = json.loads(body)
    if not payload.get("outputs" if target.v2 else "choices"):
        raise RuntimeError(f"{target.name}: no answer in {payload!r}")


# --- running the load ---------------------------------------------------------------------------------------


@dataclass
class Measurement:
    target: str
    phase: str  # "throughput" or "low-load"
    connections: int
    result: LoadResult
    server_cpu_pct: float  # the target's own processes (the proxy, or the model server for "direct")
    upstream_cpu_pct: float  # the model server, when the target is a proxy
    redis_cpu_pct: float

    @property
    def server_cpu_ms_per_request(self) -> float:
        """CPU time the target's own processes spent per request: its cost, whatever else ran on the machine."""
        return self.server_cpu_pct / 100 / self.result.rps * 1000 if self.result.rps > 0 else 0.0


def drive(target: Target, upstream: Child, redis_pid: int | None, args: argparse.Namespace, phase: str) -> Measurement:
    connections, threads = (args.connections, args.threads) if phase == "throughput" else (1, 1)
    duration = args.duration if phase == "throughput" else args.low_duration
    body = target.body(args.max_tokens)
    url = target.url + target.path

    def load(seconds: float) -> LoadResult:
        if args.client == "wrk":
            return run_wrk(url, body, target.authorization, seconds, threads, connections)
        return run_aiohttp(url, body, target.authorization, seconds, connections)

    if args.warmup > 0:
        load(args.warmup)
    meters = [ProcessCpu(target.child.proc.pid, group=True), ProcessCpu(upstream.proc.pid, group=True)]
    redis_meter = ProcessCpu(redis_pid) if redis_pid else None
    result = load(duration)
    server, upstream_cpu = (m.percent() for m in meters)
    redis_cpu = redis_meter.percent() if redis_meter else 0.0
    if target.child is upstream:
        upstream_cpu = 0.0
    return Measurement(target.name, phase, connections, result, server, upstream_cpu, redis_cpu)


# --- reporting -------------------------------------------------------------------------------------------


def summarize(measurements: list[Measurement]) -> dict[str, Any]:
    def pick(target: str, phase: str) -> LoadResult | None:
        for m in measurements:
            if m.target == target and m.phase == phase:
                return m.result
        return None

    summary: dict[str, Any] = {}
    direct_low = pick("direct", "low-load")
    for name in ("frontdoor", "litellm"):
        low = pick(name, "low-load")
        if low and direct_low:
            summary[f"{name}_added_p50_ms"] = round(low.p50_ms - direct_low.p50_ms, 3)
            summary[f"{name}_added_p99_ms"] = round(low.p99_ms - direct_low.p99_ms, 3)
    frontdoor, litellm, direct = (pick(n, "throughput") for n in ("frontdoor", "litellm", "direct"))
    if frontdoor and litellm and litellm.rps > 0:
        summary["frontdoor_over_litellm_rps"] = round(frontdoor.rps / litellm.rps, 1)
    if frontdoor and direct and direct.rps > 0:
        summary["frontdoor_over_direct_rps"] = round(frontdoor.rps / direct.rps, 3)
    cpu = {m.target: m.server_cpu_ms_per_request for m in measurements if m.phase == "throughput"}
    for name in ("direct", "frontdoor", "litellm"):
        if name in cpu:
            summary[f"{name}_cpu_ms_per_request"] = round(cpu[name], 3)
    if cpu.get("frontdoor") and cpu.get("litellm"):
        summary["litellm_over_frontdoor_cpu_per_request"] = round(cpu["litellm"] / cpu["frontdoor"], 1)
    return summary


def print_report(measurements: list[Measurement], summary: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    print(
        f"{'target':<10} {'phase':<10} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'server CPU':>10} {'CPU ms/req':>10} {'upstream CPU':>12} {'redis CPU':>9}"
    )
    for m in measurements:
        r = m.result
        print(
            f"{m.target:<10} {m.phase:<10} {m.connections:>5} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.errors:>7} {m.server_cpu_pct:>9.0f}% {m.server_cpu_ms_per_request:>10.3f} "
            f"{m.upstream_cpu_pct:>11.0f}% {m.redis_cpu_pct:>8.0f}%"
        )
    print()
    if "frontdoor_added_p50_ms" in summary:
        print(
            f"added latency at low load (1 connection), p50: Frontdoor {summary['frontdoor_added_p50_ms']:+.3f} ms"
            f" (target ≤ 1 ms), p99: {summary['frontdoor_added_p99_ms']:+.3f} ms"
        )
    if "litellm_added_p50_ms" in summary:
        print(
            f"added latency at low load (1 connection), p50: LiteLLM   {summary['litellm_added_p50_ms']:+.3f} ms,"
            f" p99: {summary['litellm_added_p99_ms']:+.3f} ms"
        )
    if "frontdoor_over_litellm_rps" in summary:
        print(f"requests/s Frontdoor / LiteLLM: {summary['frontdoor_over_litellm_rps']:.1f}× (target ≥ 30×)")
    if "frontdoor_over_direct_rps" in summary:
        print(f"requests/s Frontdoor / direct:  {summary['frontdoor_over_direct_rps']:.2f}×")
    if "litellm_over_frontdoor_cpu_per_request" in summary:
        print(
            f"CPU per request (throughput runs): Frontdoor {summary['frontdoor_cpu_ms_per_request']:.3f} ms, "
            f"LiteLLM {summary['litellm_cpu_ms_per_request']:.3f} ms "
            f"(LiteLLM / Frontdoor {summary['litellm_over_frontdoor_cpu_per_request']:.1f}×)"
        )
    print(f"(client {args.client}; {os.cpu_count()} CPUs shared by the load generator, the servers and Redis)")


# --- main ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/gateway.py", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each throughput run")
    parser.add_argument("--low-duration", type=float, default=5.0, help="seconds of each low-load run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load before each run")
    parser.add_argument("--connections", type=int, default=32, help="connections for the throughput runs")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads for the throughput runs")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens in each request")
    parser.add_argument("--client", choices=("wrk", "aiohttp"), help="load generator (default: wrk when installed)")
    parser.add_argument("--skip-litellm", action="store_true", help="do not install, start or measure LiteLLM")
    parser.add_argument(
        "--scenario", choices=("chat", "v2"), default="chat", help="chat completions, or v2 infer (no LiteLLM)"
    )
    parser.add_argument("--litellm-version", default=LITELLM_VERSION)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document instead")
    parser.add_argument("--json-file", type=Path, help="also write the JSON document to this file")
    args = parser.parse_args(argv)
    if args.scenario == "v2":
        args.skip_litellm = True  # LiteLLM speaks no Open Inference Protocol: nothing to compare it on
    if args.client is None:
        args.client = "wrk" if shutil.which("wrk") else "aiohttp"
        if args.client == "aiohttp":
            print("wrk not found (Debian: apt-get install -y wrk); using the slower aiohttp client", file=sys.stderr)
    elif args.client == "wrk" and not shutil.which("wrk"):
        parser.error("wrk not found: install it with `apt-get install -y wrk`, or use --client aiohttp")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"{os.environ.get('FRONTDOOR_REDIS_PREFIX', 'fd')}-gwbench-{uuid.uuid4().hex[:6]}"
    pepper = secrets.token_hex(16)
    client = redis.Redis.from_url(redis_url)
    redis_pid = _redis_pid(client)
    log_dir = VAR_BENCH / "logs" / time.strftime("gateway-%Y%m%d-%H%M%S")
    litellm_exe = None if args.skip_litellm else ensure_litellm(args.litellm_version)
    measurements: list[Measurement] = []
    try:
        with Children(log_dir) as children:
            say("starting the model server, the gateway" + ("" if args.skip_litellm else " and LiteLLM") + " ...")
            v2 = args.scenario == "v2"
            upstream = start_modelserver(children, v2)
            gateway = start_gateway(children, redis_url, prefix, pepper)
            full_key, version = publish_snapshot(client, prefix, pepper, upstream.url, v2)
            wait_for_snapshot(gateway, version)
            targets = [
                Target("direct", upstream.url, V2_UPSTREAM_MODEL if v2 else UPSTREAM_MODEL, "", upstream, v2),
                Target(
                    "frontdoor", gateway.url, V2_DEPLOYMENT if v2 else DEPLOYMENT, f"Bearer {full_key}", gateway, v2
                ),
            ]
            if litellm_exe is not None:
                litellm = start_litellm(children, litellm_exe, upstream.url, log_dir)
                targets.append(Target("litellm", litellm.url, DEPLOYMENT, f"Bearer {LITELLM_MASTER_KEY}", litellm))
            for target in targets:
                check_answers(target, args.max_tokens)
            for phase in ("throughput", "low-load"):
                for target in targets:
                    say(f"{phase}: {target.name} ...")
                    measurements.append(drive(target, upstream, redis_pid, args, phase))
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        with contextlib.suppress(redis.RedisError):
            clear_prefix(client, prefix)
        client.close()
    summary = summarize(measurements)
    document = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "client": args.client,
        "scenario": args.scenario,
        "litellm_version": None if args.skip_litellm else args.litellm_version,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"},
        "runs": [
            {
                **asdict(m),
                "server_cpu_ms_per_request": m.server_cpu_ms_per_request,
                "result": {**asdict(m.result), "rps": m.result.rps},
            }
            for m in measurements
        ],
        "summary": summary,
        "logs": str(log_dir.relative_to(ROOT)),
    }
    if args.json_file:
        args.json_file.write_text(json.dumps(document, indent=2) + "\n")
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print_report(measurements, summary, args)
        print(f"server logs: {log_dir.relative_to(ROOT)}")
    return 0


def _redis_pid(client: redis.Redis) -> int | None:
    """Redis's own pid when it runs on this machine (for its CPU share); None when it cannot be read."""
    try:
        pid = int(client.info("server")["process_id"])
    except (redis.RedisError, KeyError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}/stat").exists() else None


if __name__ == "__main__":
    sys.exit(main())
