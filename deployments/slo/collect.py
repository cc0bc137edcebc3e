"""SLO samples from the gateway's per-second load figures (docs/contracts.md "Load figures").

Every 10 s ``collect_slo`` turns the load hashes ``<prefix>:load:<deployment>:<revision>:<second>`` of each
complete 10 s interval since the last collection into ``SloSample`` rows: one per revision and one for the whole
deployment (``revision`` null). Intervals are upserted on (deployment, revision, resolution, interval start), so a
tick that runs twice, or re-reads an interval, writes the same row. Every 5 minutes of 10 s rows are merged into one
5 min row (histograms added, percentiles recomputed). Retention: 10 s rows for a day, 5 min rows for 30 days.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db.models import Q

from controlplane.contracts.redis_names import deployment_concurrency_key, load_key, revision_inflight_key
from controlplane.redis import get_redis, redis_key, redis_prefix
from deployments.models import ModelDeployment, Revision, SloSample

logger = logging.getLogger(__name__)

INTERVAL_S = 10
DOWNSAMPLE_S = 300
# An interval is read once every gateway has flushed it (they flush once a second).
SETTLE_S = 3
# After an outage the collector catches up at most this far back (the load hashes live 15 minutes).
MAX_CATCH_UP_S = 600
KEEP_10S = timedelta(days=1)
KEEP_5M = timedelta(days=30)
BUCKET_BOUNDS_MS: tuple[float, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, math.inf)
SUM_FIELDS = ("requests", "errors", "latency_ms_sum", "ttft_ms_sum", "ttft_count")


def bucket_name(bound: float) -> str:
    return "le_inf" if math.isinf(bound) else f"le_{int(bound)}"


BUCKET_NAMES = tuple(bucket_name(b) for b in BUCKET_BOUNDS_MS)
# Time to first token (streams), same bounds: ``ttft_le_5 … ttft_le_inf`` (docs/contracts.md "Load figures").
TTFT_BUCKET_NAMES = tuple(f"ttft_{name}" for name in BUCKET_NAMES)


def percentile_from_buckets(buckets: Mapping[str, int], q: float, prefix: str = "") -> float | None:
    """The ``q`` quantile (0..1) of a cumulative histogram, linearly interpolated inside its bucket.

    ``prefix`` picks the histogram: ``""`` for latency (``le_*``), ``"ttft_"`` for time to first token
    (``ttft_le_*``). Values in the open-ended bucket are reported as the last finite bound (Prometheus does the same).
    """
    total = int(buckets.get(prefix + "le_inf", 0))
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0
    for bound, name in zip(BUCKET_BOUNDS_MS, BUCKET_NAMES, strict=True):
        count = int(buckets.get(prefix + name, lower_count))
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = (lower_bound if math.isinf(bound) else bound), max(count, lower_count)
    return lower_bound


def fraction_slower_than(buckets: Mapping[str, int], threshold_ms: float) -> float:
    """Share of requests slower than ``threshold_ms`` (interpolated inside the bucket holding the threshold)."""
    total = int(buckets.get("le_inf", 0))
    if total <= 0:
        return 0.0
    lower_bound, lower_count = 0.0, 0
    for bound, name in zip(BUCKET_BOUNDS_MS, BUCKET_NAMES, strict=True):
        count = int(buckets.get(name, lower_count))
        if threshold_ms <= bound:
            if math.isinf(bound):
                at_or_below: float = lower_count  # nothing known past the last bound: count the bucket as slow
            else:
                at_or_below = lower_count + (count - lower_count) * (threshold_ms - lower_bound) / (bound - lower_bound)
            return max(0.0, (total - at_or_below) / total)
        lower_bound, lower_count = bound, count
    return 0.0


@dataclass
class Figures:
    """Load figures summed over some seconds (and possibly several revisions)."""

    sums: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SUM_FIELDS, 0))
    buckets: dict[str, int] = field(default_factory=dict)

    def add(self, raw: Mapping[str, int | str]) -> None:
        for name in SUM_FIELDS:
            self.sums[name] += int(raw.get(name, 0) or 0)
        for name in (*BUCKET_NAMES, *TTFT_BUCKET_NAMES):
            if name in raw:
                self.buckets[name] = self.buckets.get(name, 0) + int(raw[name] or 0)

    def merge(self, other: Figures) -> None:
        self.add({**other.sums, **other.buckets})

    @property
    def requests(self) -> int:
        return self.sums["requests"]

    def sample_fields(self) -> dict[str, object]:
        """The SloSample columns these figures determine (not in-flight or replicas)."""
        buckets = _complete(self.buckets, self.requests)
        ttft = _complete(self.buckets, self.sums["ttft_count"], prefix="ttft_")
        return {
            **self.sums,
            "buckets": {**buckets, **ttft},  # latency ``le_*`` and TTFT ``ttft_le_*`` in one JSON column
            "p50_ms": percentile_from_buckets(buckets, 0.50),
            "p95_ms": percentile_from_buckets(buckets, 0.95),
            "p99_ms": percentile_from_buckets(buckets, 0.99),
            "ttft_p95_ms": percentile_from_buckets(ttft, 0.95, prefix="ttft_"),
        }


def _complete(buckets: Mapping[str, int], total: int, prefix: str = "") -> dict[str, int]:
    """Fill missing cumulative buckets (a bucket absent from a hash counts what the bucket below it counts).

    ``total`` is what the open-ended bucket must count at least: requests for latency, ``ttft_count`` for TTFT.
    Load figures older than the TTFT buckets carry only the sum and count; they then yield no TTFT p95.
    """
    if not total:
        return {}
    if prefix and not any(prefix + name in buckets for name in BUCKET_NAMES):
        return {}
    result: dict[str, int] = {}
    running = 0
    for name in BUCKET_NAMES:
        running = max(running, int(buckets.get(prefix + name, running)))
        result[prefix + name] = running
    result[prefix + "le_inf"] = max(result[prefix + "le_inf"], total)
    return result


def _interval_floor(ts: float, size: int = INTERVAL_S) -> int:
    return int(ts // size * size)


def _as_datetime(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _cursor_key() -> str:
    return redis_key("slo", "cursor")


def _deployments_to_sample() -> list[ModelDeployment]:
    """Running deployments (and their revisions that run or take traffic): the ones that can have figures."""
    wanted = Revision.unscoped_objects.filter(Q(weight__gt=0) | Q(desired_replicas__gt=0) | Q(ready_replicas__gt=0))
    from django.db.models import Prefetch

    return list(
        ModelDeployment.objects.unscoped()
        .filter(desired_state=ModelDeployment.DesiredState.RUNNING)
        .prefetch_related(Prefetch("revisions", queryset=wanted, to_attr="sampled_revisions"))
        .order_by("pk")
    )


def read_figures(
    pairs: Sequence[tuple[int, int]], start: int, end: int
) -> dict[tuple[int, int, int], Figures]:
    """Sum the load hashes of each (deployment, revision) per 10 s interval in [start, end)."""
    client = get_redis()
    pipe = client.pipeline(transaction=False)
    order: list[tuple[int, int, int]] = []
    prefix = redis_prefix()
    for dep, rev in pairs:
        for second in range(start, end):
            pipe.hgetall(load_key(prefix, dep, rev, second))
            order.append((dep, rev, _interval_floor(second)))
    result: dict[tuple[int, int, int], Figures] = {}
    for key, raw in zip(order, pipe.execute(), strict=True):
        if raw:
            result.setdefault(key, Figures()).add(raw)
    return result


def in_flight(deployment_ids: Iterable[int], now: float) -> dict[int, int]:
    """Live concurrency leases per deployment (the limiter's ZSET, scored by expiry in epoch ms)."""
    ids = list(deployment_ids)
    pipe = get_redis().pipeline(transaction=False)
    now_ms = int(now * 1000)
    prefix = redis_prefix()
    for dep in ids:
        pipe.zcount(deployment_concurrency_key(prefix, dep), now_ms, "+inf")
    return {dep: int(count) for dep, count in zip(ids, pipe.execute(), strict=True)}


def revision_in_flight(pairs: Sequence[tuple[int, int]], now: float) -> dict[tuple[int, int], int]:
    """Live per-revision leases the gateway publishes (``<prefix>:inflight:<dep>:<rev>``, scored by expiry in s)."""
    pipe = get_redis().pipeline(transaction=False)
    prefix = redis_prefix()
    for dep, rev in pairs:
        pipe.zcount(revision_inflight_key(prefix, dep, rev), now, "+inf")
    return {pair: int(count) for pair, count in zip(pairs, pipe.execute(), strict=True)}


_UPSERT_FIELDS = ["requests", "errors", "latency_ms_sum", "ttft_ms_sum", "ttft_count", "buckets", "p50_ms", "p95_ms",
                  "p99_ms", "ttft_p95_ms"]


def collect(now: float | None = None) -> int:
    """Write the 10 s samples of every complete interval since the last run; returns the rows upserted."""
    now = time.time() if now is None else now
    end = _interval_floor(now - SETTLE_S)
    client = get_redis()
    cursor_raw = client.get(_cursor_key())
    start = int(cursor_raw) if cursor_raw else end - INTERVAL_S
    start = max(start, end - MAX_CATCH_UP_S)
    if start >= end:
        return 0
    deployments = _deployments_to_sample()
    pairs = [(d.pk, r.pk) for d in deployments for r in d.sampled_revisions]  # type: ignore[attr-defined]
    figures = read_figures(pairs, start, end) if pairs else {}
    live = in_flight([d.pk for d in deployments], now)
    live_rev = revision_in_flight(pairs, now) if pairs else {}
    latest = end - INTERVAL_S  # in-flight and replica counts are readings of now: they go on the newest row only
    rows: list[SloSample] = []
    for deployment in deployments:
        revisions: list[Revision] = deployment.sampled_revisions  # type: ignore[attr-defined]
        for interval in range(start, end, INTERVAL_S):
            total = Figures()
            for revision in revisions:
                fig = figures.get((deployment.pk, revision.pk, interval))
                inflight_rev = live_rev.get((deployment.pk, revision.pk), 0) if interval == latest else 0
                replicas = (revision.ready_replicas, revision.desired_replicas) if interval == latest else (0, 0)
                if fig is not None:
                    total.merge(fig)
                if fig is None and not inflight_rev and not any(replicas):
                    continue
                rows.append(_sample(deployment, revision, interval, fig or Figures(), inflight_rev, replicas))
            dep_inflight = live.get(deployment.pk, 0) if interval == latest else 0
            dep_replicas = (deployment.ready_replicas, deployment.desired_replicas) if interval == latest else (0, 0)
            if total.requests or dep_inflight or any(dep_replicas):
                rows.append(_sample(deployment, None, interval, total, dep_inflight, dep_replicas))
    if rows:
        SloSample.unscoped_objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["deployment", "revision", "resolution", "interval_start"],
            update_fields=_UPSERT_FIELDS,
        )
    client.set(_cursor_key(), end, ex=7 * 86400)
    return len(rows)


def _sample(
    deployment: ModelDeployment,
    revision: Revision | None,
    interval: int,
    figures: Figures,
    inflight_now: int,
    replicas: tuple[int, int],
) -> SloSample:
    return SloSample(
        tenant_id=deployment.tenant_id,
        deployment=deployment,
        revision=revision,
        resolution=SloSample.Resolution.TEN_SECONDS,
        interval_start=_as_datetime(interval),
        in_flight=inflight_now,
        replicas_ready=replicas[0],
        replicas_desired=replicas[1],
        **figures.sample_fields(),  # type: ignore[arg-type]
    )


def figures_of(samples: Iterable[SloSample]) -> Figures:
    """Merge stored samples back into summed figures (for windows, downsampling, comparisons)."""
    total = Figures()
    for sample in samples:
        total.add({
            "requests": sample.requests, "errors": sample.errors, "latency_ms_sum": sample.latency_ms_sum,
            "ttft_ms_sum": sample.ttft_ms_sum, "ttft_count": sample.ttft_count, **(sample.buckets or {}),
        })
    return total


def downsample(now: float | None = None) -> int:
    """Merge complete 5 min spans of 10 s rows into 5 min rows (upserted); the span in progress waits."""
    now = time.time() if now is None else now
    end = _as_datetime(_interval_floor(now - SETTLE_S - INTERVAL_S, DOWNSAMPLE_S))
    start = end - timedelta(seconds=MAX_CATCH_UP_S + DOWNSAMPLE_S)
    groups: dict[tuple[int, int | None, int], list[SloSample]] = {}
    source = SloSample.unscoped_objects.filter(
        resolution=SloSample.Resolution.TEN_SECONDS, interval_start__gte=start, interval_start__lt=end
    ).order_by("interval_start")
    for sample in source:
        span = _interval_floor(sample.interval_start.timestamp(), DOWNSAMPLE_S)
        groups.setdefault((sample.deployment_id, sample.revision_id, span), []).append(sample)
    rows = []
    for (dep, rev, span), samples in groups.items():
        last = samples[-1]
        rows.append(SloSample(
            tenant_id=last.tenant_id,
            deployment_id=dep,
            revision_id=rev,
            resolution=SloSample.Resolution.FIVE_MINUTES,
            interval_start=_as_datetime(span),
            in_flight=max(s.in_flight for s in samples),
            replicas_ready=last.replicas_ready,
            replicas_desired=last.replicas_desired,
            **figures_of(samples).sample_fields(),  # type: ignore[arg-type]
        ))
    if rows:
        SloSample.unscoped_objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["deployment", "revision", "resolution", "interval_start"],
            update_fields=[*_UPSERT_FIELDS, "in_flight", "replicas_ready", "replicas_desired"],
        )
    return len(rows)


def prune(now: datetime | None = None) -> int:
    """Delete rows past their retention (10 s rows after a day, 5 min rows after 30 days)."""
    now = now or datetime.now(tz=UTC)
    deleted, _ = SloSample.unscoped_objects.filter(
        Q(resolution=SloSample.Resolution.TEN_SECONDS, interval_start__lt=now - KEEP_10S)
        | Q(resolution=SloSample.Resolution.FIVE_MINUTES, interval_start__lt=now - KEEP_5M)
    ).delete()
    return deleted


def window(deployment_id: int, revision_id: int | None, since: datetime, until: datetime | None = None) -> Figures:
    """Summed 10 s figures of one deployment (or one revision) since ``since``."""
    samples = SloSample.unscoped_objects.filter(
        deployment_id=deployment_id,
        resolution=SloSample.Resolution.TEN_SECONDS,
        interval_start__gte=since,
    )
    samples = samples.filter(revision__isnull=True) if revision_id is None else samples.filter(revision_id=revision_id)
    if until is not None:
        samples = samples.filter(interval_start__lt=until)
    return figures_of(samples.only(*SUM_FIELDS, "buckets"))
