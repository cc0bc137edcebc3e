"""One side of ``bench/publish.py``: its own database and Redis prefix, populated, then build and store, the gateway's
load, the REST lists and the mass change measured; the figures written as JSON to ``--out``.

``python <checkout>/bench/publish_side.py --side before --tree <tree> --run-id N --out side.json --tenants N
--deployments N --keys N --changes N --writers N``

``bench/publish.py`` runs this file of its own checkout for both sides, so both are measured by the same code, while
everything measured (``controlplane``, ``deployments``, ``gateway``, ``tenants``, and the helpers of ``bench.common``)
is imported from ``--tree``: the parent sets ``PYTHONPATH=<tree>`` and ``PYTHONSAFEPATH=1`` (so this file's directory
is not put first on ``sys.path``: ``bench/gateway.py`` would shadow the ``gateway`` package), ``enter_tree()`` takes
this checkout's root and ``bench/`` off the path, and after ``django.setup()`` the side refuses to run if any of those
packages came from elsewhere. That is why this file imports nothing from this checkout's ``bench`` package (the
``bench.common`` it imports is the tree's) and why the names both processes need (``side_names``, ``drop_side``) live
here, imported by ``bench/publish.py``.

The database is created and migrated here and dropped at the end, with every Redis key under the side's prefix (also
its Celery queue and Celery key prefix); the parent drops them again in case this process died.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import importlib.util
import json
import logging
import os
import statistics
import sys
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES = os.environ.get("FRONTDOOR_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
SIDES = ("before", "after")
REVOKE_GIVE_UP_S = 30.0
REST_REQUESTS = 200


def side_names(side: str, run_id: int) -> tuple[str, str]:
    """The Redis prefix (also the Celery queue) and the database of one side of the run ``run_id``."""
    return f"fdbench-publish-{side}-{run_id}", f"bench_publish_{side}_{run_id}"


def redis_patterns(prefix: str) -> list[str]:
    """Every key a side can write: Frontdoor's under ``<prefix>:``, Celery's under its key prefix ``<prefix>:``."""
    return [f"{prefix}:*"]


def drop_side(prefix: str, database: str) -> None:
    """Drop a side's database and delete its Redis keys (idempotent: the parent repeats what the child did)."""
    import psycopg
    import redis
    from psycopg import sql

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for pattern in redis_patterns(prefix):
            batch = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(batch), 500):
                client.delete(*batch[start : start + 500])
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/publish_side.py", description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=SIDES, required=True)
    parser.add_argument("--tree", type=Path, required=True, help="the checkout whose code this side measures")
    parser.add_argument("--run-id", type=int, required=True, help="names the database and the Redis prefix")
    parser.add_argument("--out", type=Path, required=True, help="where the figures go (JSON)")
    for scale in ("--tenants", "--deployments", "--keys", "--changes", "--writers"):
        parser.add_argument(scale, type=int, required=True)
    return run_side(parser.parse_args(argv))


def enter_tree(tree: Path) -> None:
    """Import this side's packages from ``tree`` alone: it goes first, this checkout's root and bench/ go."""
    own = {"", str(Path(__file__).resolve().parent)} | ({str(ROOT)} if tree != ROOT else set())
    sys.path[:] = [str(tree), *(p for p in sys.path if p not in own and p != str(tree))]
    os.chdir(tree)


def log(side: str, message: str) -> None:
    print(f"[{side}] {message}", flush=True)


def run_side(args: argparse.Namespace) -> int:
    tree: Path = args.tree.resolve()
    enter_tree(tree)
    prefix, database = side_names(args.side, args.run_id)
    os.environ.update(
        DATABASE_URL=f"{POSTGRES}/{database}",
        REDIS_URL=REDIS_URL,
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        FRONTDOOR_REDIS_PREFIX=prefix,
        FRONTDOOR_CELERY_QUEUE=prefix,
        FRONTDOOR_SNAPSHOT_QUEUE=f"{prefix}.snapshot",
        # A separator after the prefix, so that "<prefix>:*" covers Celery's keys and no other run's.
        FRONTDOOR_CELERY_KEY_PREFIX=f"{prefix}:",
        FRONTDOOR_SNAPSHOT_PUBLISH="queue",  # read by a revision with the queued publisher only
        DEBUG="false",  # as in production: no query log growing through thousands of commits
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(tree),
        PYTHONSAFEPATH="1",
    )
    import psycopg
    from psycopg import sql

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        import django

        django.setup()
        from django.db import connections

        import bench.common
        import controlplane
        import deployments
        import gateway
        import tenants

        for package in (controlplane, deployments, gateway, tenants, bench.common):
            where = str(Path(package.__file__ or "?").resolve())
            if not where.startswith(str(tree) + os.sep):
                raise SystemExit(f"{package.__name__} was imported from {where}, not from {tree}")
        where = str(Path(controlplane.__file__ or "?").resolve())
        # Every writer thread holds a connection of the pool through the change, besides this thread and the revoker.
        pool = connections["default"].settings_dict.get("OPTIONS", {}).get("pool")
        if isinstance(pool, dict):
            pool["max_size"] = max(int(pool.get("max_size", 8)), args.writers + 4)
        warnings.filterwarnings("ignore", message="No directory at")  # static files: the REST lists serve none
        # One line per publish would bury the progress lines: thousands of them in the mass change.
        logging.getLogger("frontdoor.quotas.publish").setLevel(logging.WARNING)
        log(args.side, f"controlplane from {where}")
        result = Side(args, prefix).run()
        args.out.write_text(json.dumps(result, indent=2))
        return 0
    finally:
        from django.db import connections

        connections.close_all()
        drop_side(prefix, database)


# The helpers beside this file, loaded by path: ``bench`` on the path is the measured tree's package, and these are
# this checkout's (the type checker reads them as this checkout's modules).
def _sibling(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from bench.publish_fixture import Fixture, populate
    from bench.publish_probes import (
        BackgroundGateway,
        GatewayProcess,
        StallMeter,
        best_of,
        percentile_of,
        timed,
        timed_reload,
    )
else:
    _fixture, _probes = _sibling("publish_fixture"), _sibling("publish_probes")
    Fixture, populate = _fixture.Fixture, _fixture.populate
    BackgroundGateway, GatewayProcess = _probes.BackgroundGateway, _probes.GatewayProcess
    StallMeter, timed_reload = _probes.StallMeter, _probes.timed_reload
    best_of, percentile_of, timed = _probes.best_of, _probes.percentile_of, _probes.timed


class Side:
    """Everything one side measures, in its own process (Django set up against this side's database)."""

    def __init__(self, args: argparse.Namespace, prefix: str) -> None:
        from controlplane.contracts import snapshot as contract

        self.args, self.prefix, self.name = args, prefix, args.side
        self.sections = hasattr(contract, "read_index")  # else one whole document under config:snapshot
        if not self.sections and not hasattr(contract, "decode_document"):
            raise SystemExit("this revision stores neither sections nor one document: nothing to measure")
        self.figures: dict[str, Any] = {}
        self.notes: list[str] = []
        self.detail: dict[str, Any] = {}  # the runs behind the figures, for the JSON file
        self.fx: Fixture | None = None

    def run(self) -> dict[str, Any]:
        from django.conf import settings
        from django.core.management import call_command

        started = time.perf_counter()
        call_command("migrate", verbosity=0)
        settings.FRONTDOOR_PUBLISH_ON_COMMIT = False  # populating publishes nothing
        fixture = self.fx = populate(self.args)
        log(self.name, f"migrated and populated in {time.perf_counter() - started:.1f} s")
        self.measure_build(fixture)
        self.measure_load(fixture)
        self.measure_rest(fixture)
        settings.FRONTDOOR_PUBLISH_ON_COMMIT = True
        self.measure_change(fixture)
        return {"figures": self.figures, "notes": self.notes, "detail": self.detail, "sections": self.sections}

    # -- data --------------------------------------------------------------------------------------------------

    # -- 1. build and store ------------------------------------------------------------------------------------

    def measure_build(self, fx: Fixture) -> None:
        from controlplane.contracts import snapshot as contract
        from controlplane.snapshot import publisher

        if self.sections:

            def full() -> int:
                encoded = contract.encode_sections(publisher.build_sections(0).sections)
                return sum(len(doc) for doc in encoded.values())

            def one(tenant_id: int) -> Callable[[], int]:
                def build() -> int:
                    encoded = contract.encode_sections(publisher.build_sections(0, {tenant_id}).sections)
                    return sum(len(doc) for doc in encoded.values())

                return build

            self.figures["build_big_tenant_ms"] = best_of(3, one(fx.big_id))[0]
            self.figures["build_small_tenant_ms"] = best_of(3, one(fx.small_id))[0]
        else:

            def full() -> int:
                return len(contract.encode_document(publisher.build_snapshot(0)))

        self.figures["build_ms"], self.figures["stored_bytes"] = best_of(3, full)
        self.figures["publish_first_ms"] = timed(publisher.publish_config)[0]
        self.figures["publish_ms"] = best_of(3, publisher.publish_config)[0]
        log(self.name, f"build {self.figures['build_ms']:.0f} ms, {self.figures['stored_bytes']} bytes")

    # -- 2. the gateway's load ---------------------------------------------------------------------------------

    def channel(self) -> str:
        from controlplane.contracts.redis_names import CONFIG_NOTIFY, channel

        return channel(self.prefix, REDIS_URL, CONFIG_NOTIFY)

    def measure_load(self, fx: Fixture) -> None:
        import redis.asyncio as aioredis

        from gateway.snapshot import SnapshotStore

        def fresh(client: Any) -> Any:
            return SnapshotStore(client, self.prefix, self.channel())

        async def loads() -> tuple[list[tuple[float, float]], Any]:
            client = aioredis.Redis.from_url(REDIS_URL)
            await fresh(client).reload()  # not counted: the first load imports and warms what every later one uses
            runs = []
            for _ in range(3):
                store = fresh(client)
                runs.append(await timed_reload(store))
            return runs, store

        async def retained() -> int:
            client = aioredis.Redis.from_url(REDIS_URL)
            await client.ping()
            gc.collect()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                store = fresh(client)
                await store.reload()
                gc.collect()
                kept = tracemalloc.get_traced_memory()[0] - base
                assert store.loaded  # alive until measured
            finally:
                tracemalloc.stop()
            await client.aclose()  # type: ignore[attr-defined]
            return kept

        with asyncio.Runner() as runner:
            runs, store = runner.run(loads())
            self.detail["loads_ms_stall_ms"] = runs
            self.figures["load_ms"] = statistics.median(ms for ms, _ in runs)
            self.figures["load_stall_ms"] = max(stall for _, stall in runs)
            if self.sections:
                incremental = []
                for i in range(3):
                    self.change_small_tenant(fx, i)  # Django between loop runs: no loop is running here
                    incremental.append(runner.run(timed_reload(store)))
                self.detail["incremental_loads_ms_stall_ms"] = incremental
                self.figures["incremental_load_ms"] = statistics.median(ms for ms, _ in incremental)
                self.figures["incremental_stall_ms"] = max(stall for _, stall in incremental)
            self.figures["store_bytes"] = runner.run(retained())
        log(self.name, f"gateway load {self.figures['load_ms']:.0f} ms, stall {self.figures['load_stall_ms']:.0f} ms")

    def change_small_tenant(self, fx: Fixture, i: int) -> None:
        """A new value in one small-tenant deployment, published as that tenant's section alone."""
        from controlplane.redis import get_redis
        from controlplane.snapshot import publisher
        from deployments.models import ModelDeployment

        ModelDeployment.unscoped_objects.filter(pk=fx.small_deployment).update(max_concurrent_requests=100 + i)
        publisher.publish_sections(get_redis(), {fx.small_id})

    # -- 4. the REST lists -------------------------------------------------------------------------------------

    def measure_rest(self, fx: Fixture) -> None:
        from django.contrib.auth import get_user_model
        from django.test import Client
        from django.urls import reverse

        client = Client()
        client.force_login(get_user_model().objects.get(pk=fx.owner_id))
        paths = {
            "deployments": reverse("deployment-list", kwargs={"tenant": fx.big_slug}),
            "keys": reverse("apikey-list", kwargs={"tenant": fx.big_slug}),
            "revisions": reverse(
                "deployment-revision-list", kwargs={"tenant": fx.big_slug, "deployment_name": fx.revisions_of}
            ),
        }
        for name, path in paths.items():
            for _ in range(5):  # warm: the first request compiles templates, imports, opens the connection
                response = client.get(path)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {path} answered {response.status_code}: {response.content[:300]!r}")
            times = sorted(timed(partial(client.get, path))[0] for _ in range(REST_REQUESTS))
            self.figures[f"rest_{name}_p50_ms"] = percentile_of(times, 50)
            self.figures[f"rest_{name}_p95_ms"] = percentile_of(times, 95)
        self.notes.append(
            f"REST: {REST_REQUESTS} GETs each through django.test.Client, in-process (no network, no server), "
            "first page at the default page size, signed in as the big tenant's owner"
        )
        log(self.name, "REST lists measured")

    # -- 3. the mass change and the revocation -----------------------------------------------------------------

    def measure_change(self, fx: Fixture) -> None:
        import redis

        from controlplane.contracts.redis_names import config_seq_key, config_version_key

        client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        log_dir = ROOT / "var" / "bench" / "publish" / self.prefix
        log_dir.mkdir(parents=True, exist_ok=True)
        with (
            self.publisher_worker(client),
            BackgroundGateway(self.prefix, self.channel()) as gateway,
            GatewayProcess(Path(self.args.tree), log_dir / "gateway.log") as gateway_process,
        ):
            stored = int(client.get(config_version_key(self.prefix)) or 0)
            if gateway.wait_for(lambda snap: snap.version >= stored, 30) is None:
                raise RuntimeError("the background gateway did not load the stored snapshot")
            seq_before = int(client.get(config_seq_key(self.prefix)) or 0)
            stats_before = self.publisher_stats(client)
            self.mass_change(fx, gateway, gateway_process)
            self.wait_publisher_idle(client)
            self.figures["rebuilds"] = int(client.get(config_seq_key(self.prefix)) or 0) - seq_before
            if self.sections:
                stats = self.publisher_stats(client)
                self.figures["publisher_builds"] = stats.get("builds", 0) - stats_before.get("builds", 0)
                self.figures["publisher_sections"] = stats.get("sections", 0) - stats_before.get("sections", 0)
                self.figures["publisher_last_build_ms"] = stats.get("last_build_ms")
                self.notes.append(f"publisher counters (config:stats) at the end: {stats}")
        client.close()
        self.notes.append("rebuilds count every version allocated during the change, the revocation's included")

    @contextmanager
    def publisher_worker(self, client: Any) -> Iterator[None]:
        """With the queued publisher, its own worker as a child, consuming (one mark published) before the change."""
        if not self.sections:
            yield
            return
        from bench.common import Children  # the side's own copy (the helpers are the same in both revisions)
        from controlplane.contracts.redis_names import config_version_key
        from controlplane.contracts.snapshot import tenant_section
        from controlplane.snapshot.triggers import mark_now

        with Children(ROOT / "var" / "bench" / "publish" / self.prefix) as children:
            # env -C: the worker and the Celery it runs import from this side's tree, whatever directory we are in.
            argv = ["env", "-C", str(Path.cwd()), sys.executable, "-m", "controlplane.snapshot.worker", "-l", "WARNING"]
            worker = children.start("snapshot-worker", argv, port=0)
            version = int(client.get(config_version_key(self.prefix)) or 0)
            assert self.fx is not None
            mark_now([tenant_section(self.fx.small_id)])
            started = time.perf_counter()
            while int(client.get(config_version_key(self.prefix)) or 0) <= version:
                if worker.proc.poll() is not None or time.perf_counter() - started > 60:
                    raise RuntimeError(f"the publisher's worker did not publish a mark:\n{worker.log_tail()}")
                time.sleep(0.05)
            log(self.name, f"publisher worker consuming after {time.perf_counter() - started:.1f} s")
            yield
            if worker.proc.poll() is not None:
                raise RuntimeError(f"the publisher's worker exited during the change:\n{worker.log_tail()}")

    def publisher_stats(self, client: Any) -> dict[str, Any]:
        if not self.sections:
            return {}
        from controlplane.contracts.redis_names import config_stats_key

        raw = client.hgetall(config_stats_key(self.prefix))
        return {k: float(v) if "." in v else int(v) for k, v in raw.items()}

    def wait_publisher_idle(self, client: Any, timeout_s: float = 60.0) -> None:
        """Until no mark waits and no publisher holds the lock (a trailing build would move config:seq later)."""
        if not self.sections:
            return
        from controlplane.contracts import redis_names as names

        keys = [
            names.config_dirty_key(self.prefix),
            names.config_taken_key(self.prefix),
            names.config_publisher_lock_key(self.prefix),
        ]
        started = time.perf_counter()
        while client.exists(*keys) and time.perf_counter() - started < timeout_s:
            time.sleep(0.05)

    def mass_change(self, fx: Fixture, gateway: BackgroundGateway, gateway_process: GatewayProcess) -> None:
        from django.db import connection

        from deployments.models import ModelDeployment
        from tenants.models import ApiKey

        changes, writers = self.args.changes, self.args.writers
        objects = list(ModelDeployment.unscoped_objects.filter(pk__in=fx.big_deployments).order_by("pk"))
        if changes > len(objects):
            self.notes.append(f"{changes} changes cycle over the big tenant's {len(objects)} deployments")
        small = ApiKey.unscoped_objects.get(pk=fx.small_key_pk).tenant
        key, full_key = ApiKey.issue(tenant=small, name="probe", scopes=["inference"])
        if gateway_process.wait_status(full_key, 404, 120) is None:
            raise RuntimeError(f"the gateway process never accepted the probe key (see {gateway_process.log_path})")
        connection.close()  # each thread below opens its own
        lock, half, interrupted = threading.Lock(), threading.Event(), threading.Event()
        done, errors = [0], []
        revocation: dict[str, float | None] = {}

        def writer(w: int) -> None:
            try:
                for i in range(w, changes, writers):
                    if interrupted.is_set():
                        return
                    deployment = copy.copy(objects[i % len(objects)])
                    deployment.max_concurrent_requests = 1000 + i
                    deployment.save(update_fields=["max_concurrent_requests"])
                    with lock:
                        done[0] += 1
                        if done[0] == max(1, changes // 2):
                            half.set()
            except Exception as exc:
                errors.append(exc)
            finally:
                half.set()  # never leave the revoker waiting
                connection.close()

        def revoker() -> None:
            try:
                half.wait()
                if interrupted.is_set():
                    return
                started = time.perf_counter()
                key.revoke()
                revocation["call_ms"] = (time.perf_counter() - started) * 1000
                seen = gateway_process.wait_status(full_key, 401, REVOKE_GIVE_UP_S)
                revocation["delay_ms"] = seen * 1000 if seen is not None else None
            except Exception as exc:
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
        revoke_thread = threading.Thread(target=revoker)
        started = time.perf_counter()
        revoke_thread.start()
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:
            interrupted.set()  # Ctrl-C: the writers stop at their next commit, before the database is dropped
            half.set()
            for thread in (*threads, revoke_thread):
                thread.join()
            raise
        commits_s = time.perf_counter() - started
        if errors:
            raise RuntimeError(f"the mass change failed: {errors[0]!r}") from errors[0]
        final = {
            (slug, name): value
            for slug, name, value in ModelDeployment.unscoped_objects.filter(pk__in=fx.big_deployments).values_list(
                "tenant__slug", "name", "max_concurrent_requests"
            )
        }
        connection.close()

        def has_all(snap: Any) -> bool:
            deployments = snap.deployments
            return all(getattr(deployments.get(k), "max_concurrent", None) == v for k, v in final.items())

        visible = gateway.wait_for(has_all, 300, interval_s=0.01)
        revoke_thread.join()
        self.figures["change_count"] = self.args.changes
        self.figures["change_commits_s"] = commits_s
        self.figures["change_visible_s"] = commits_s + visible if visible is not None else "gave up (300 s)"
        self.figures["revoke_call_ms"] = revocation.get("call_ms")
        delay = revocation.get("delay_ms")
        self.figures["revoke_delay_ms"] = delay if delay is not None else f"gave up ({REVOKE_GIVE_UP_S:.0f} s)"
        seen = f"{delay:.0f} ms" if delay is not None else "never"
        log(self.name, f"{changes} changes committed in {commits_s:.1f} s; revocation at the gateway after {seen}")


if __name__ == "__main__":
    sys.exit(main())
