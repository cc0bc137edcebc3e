"""The matrix-factorisation ranker: deterministic training, known scores, and rankings that follow the feedback."""

from __future__ import annotations

import time

import numpy as np
import pytest

from modelserver.ranker import FACTORS, ITEMS, USERS, Ranker, build_ranker, synthetic_feedback

# Scores of the served model (seed 20240601) for fixed (user, item) pairs, written down once from a run.
GOLDEN = [
    ((0, 5), 0.200415),
    ((1, 6), 0.306913),
    ((2, 7), 0.366439),
    ((999, 499), 0.588040),
    ((42, 0), 0.783114),
]


@pytest.fixture(scope="module")
def ranker() -> Ranker:
    return build_ranker()


def _all_scores(ranker: Ranker) -> np.ndarray:
    users, items = np.meshgrid(np.arange(USERS), np.arange(ITEMS), indexing="ij")
    return ranker.score(users.ravel(), items.ravel()).reshape(USERS, ITEMS)


def _auc(higher: np.ndarray, lower: np.ndarray) -> float:
    """The chance that a random member of ``higher`` outscores a random member of ``lower`` (ties count half)."""
    rng = np.random.default_rng(7)
    a, b = rng.choice(higher, 20_000), rng.choice(lower, 20_000)
    return float((a > b).mean() + 0.5 * (a == b).mean())


def test_it_has_the_documented_dimensions(ranker: Ranker) -> None:
    assert ranker.user_factors.shape == (USERS, FACTORS) == (1000, 16)
    assert ranker.item_factors.shape == (ITEMS, FACTORS) == (500, 16)
    assert ranker.item_bias.shape == (ITEMS,)


def test_it_gives_the_golden_scores(ranker: Ranker) -> None:
    pairs = np.array([pair for pair, _ in GOLDEN], dtype=np.int64)
    scores = ranker.score(pairs[:, 0], pairs[:, 1])
    assert scores.dtype == np.float32
    assert scores.tolist() == pytest.approx([score for _, score in GOLDEN], abs=1e-3)


def test_it_is_the_sigmoid_of_the_dot_product_plus_the_item_bias(ranker: Ranker) -> None:
    user, item = 42, 0
    logit = float(ranker.user_factors[user] @ ranker.item_factors[item] + ranker.item_bias[item])
    assert ranker.score(np.array([user]), np.array([item]))[0] == pytest.approx(1 / (1 + np.exp(-logit)), rel=1e-5)


def test_it_trains_the_same_model_every_time(ranker: Ranker) -> None:
    again = build_ranker()
    assert np.array_equal(again.user_factors, ranker.user_factors)
    assert np.array_equal(again.item_bias, ranker.item_bias)


def test_it_trains_quickly() -> None:
    started = time.perf_counter()
    build_ranker()
    assert time.perf_counter() - started < 3.0  # about 0.15 s on two idle cores; generous for a loaded machine


def test_it_scores_a_users_interactions_above_random_other_items(ranker: Ranker) -> None:
    clicks = synthetic_feedback().interactions > 0
    scores = _all_scores(ranker)
    assert _auc(scores[clicks], scores[~clicks]) > 0.85
    per_user = [scores[u, clicks[u]].mean() > scores[u, ~clicks[u]].mean() for u in range(USERS) if clicks[u].any()]
    assert np.mean(per_user) > 0.95


def test_it_learns_the_taste_behind_the_clicks_not_just_the_clicks(ranker: Ranker) -> None:
    # Items a user never clicked are ranked higher in the genres that user favours: structure the model inferred.
    feedback = synthetic_feedback()
    unseen = feedback.interactions == 0
    favoured = feedback.user_genres[:, feedback.item_genres]
    scores = _all_scores(ranker)
    assert _auc(scores[unseen & favoured], scores[unseen & ~favoured]) > 0.8


def test_it_ranks_better_than_popularity_alone(ranker: Ranker) -> None:
    clicks = synthetic_feedback().interactions > 0
    popularity = np.broadcast_to(clicks.mean(axis=0), clicks.shape)
    scores = _all_scores(ranker)
    assert _auc(scores[clicks], scores[~clicks]) > _auc(popularity[clicks], popularity[~clicks]) + 0.1
