"""A matrix-factorisation recommendation scorer, trained at start on synthetic implicit feedback (numpy, no GPU).

The feedback has structure a model can learn: every item belongs to one of a few genres, every user favours one or
two of them, and popular items are clicked more. Logistic matrix factorisation with item biases is fitted by
full-batch gradient descent with a fixed seed, so every process trains the same model in a fraction of a second.
``score(user, item) = sigmoid(user_factors[user] · item_factors[item] + item_bias[item])`` ranks items for a user:
higher means likelier to be clicked (training balances clicks against non-clicks, so it is a ranking score, not a
probability calibrated to the click rate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

USERS = 1000
ITEMS = 500
FACTORS = 16
GENRES = 8
SEED = 20240601

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Feedback:
    """Who interacted with what (``interactions[user, item]`` is 1.0 or 0.0), and the taste that generated it."""

    interactions: FloatArray  # (USERS, ITEMS)
    item_genres: IntArray  # (ITEMS,)
    user_genres: npt.NDArray[np.bool_]  # (USERS, GENRES): the genres each user favours


def synthetic_feedback(seed: int = SEED) -> Feedback:
    """Clicks drawn from genre affinity plus item popularity: about 4% of the matrix, mostly in favoured genres."""
    rng = np.random.default_rng(seed)
    item_genres = rng.integers(0, GENRES, size=ITEMS)
    user_genres = np.zeros((USERS, GENRES), dtype=bool)
    user_genres[np.arange(USERS), rng.integers(0, GENRES, size=USERS)] = True
    second = rng.random(USERS) < 0.5
    user_genres[np.flatnonzero(second), rng.integers(0, GENRES, size=int(second.sum()))] = True
    popularity = rng.normal(0.0, 0.7, size=ITEMS)
    affinity = user_genres[:, item_genres]  # (USERS, ITEMS): the item is in one of the user's genres
    logits = -4.6 + 3.0 * affinity + popularity[None, :]
    clicked = rng.random((USERS, ITEMS)) < 1.0 / (1.0 + np.exp(-logits))
    return Feedback(clicked.astype(np.float32), item_genres, user_genres)


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float32)


class Ranker:
    """Scores (user, item) pairs with the trained factors; ids are checked by the caller (``valid_ids``)."""

    def __init__(self, user_factors: FloatArray, item_factors: FloatArray, item_bias: FloatArray) -> None:
        self.user_factors = user_factors
        self.item_factors = item_factors
        self.item_bias = item_bias

    @property
    def users(self) -> int:
        return int(self.user_factors.shape[0])

    @property
    def items(self) -> int:
        return int(self.item_factors.shape[0])

    def score(self, user_ids: IntArray, item_ids: IntArray) -> FloatArray:
        """One probability per pair, as float32; ``user_ids`` and ``item_ids`` have the same length."""
        dots = np.einsum("nf,nf->n", self.user_factors[user_ids], self.item_factors[item_ids])
        return _sigmoid(dots + self.item_bias[item_ids])


def train_ranker(feedback: Feedback, *, seed: int = SEED, steps: int = 60, learning_rate: float = 0.5) -> Ranker:
    """Logistic MF by full-batch gradient descent with momentum on every cell, clicks weighted up.

    Clicks are rare, so each click weighs as much as all of its user's non-clicks together would at the base
    rate; without that the factors learn mostly "nobody clicks". L2 keeps the factors small and the model smooth.
    """
    rng = np.random.default_rng(seed)
    clicks = feedback.interactions
    users, items = clicks.shape
    user_factors = rng.normal(0.0, 0.1, size=(users, FACTORS)).astype(np.float32)
    item_factors = rng.normal(0.0, 0.1, size=(items, FACTORS)).astype(np.float32)
    density = max(float(clicks.mean()), 1e-6)
    item_bias = np.full(items, np.log(density / (1.0 - density)), dtype=np.float32)
    weights = np.where(clicks > 0, np.float32(0.5 / density), np.float32(0.5 / (1.0 - density))).astype(np.float32)
    weights /= weights.sum()
    l2 = np.float32(1e-4)
    velocity = [np.zeros_like(user_factors), np.zeros_like(item_factors), np.zeros_like(item_bias)]
    scale = np.float32(learning_rate * users)  # the loss is a mean over cells: rescale so steps are not tiny
    for _ in range(steps):
        predicted = _sigmoid(user_factors @ item_factors.T + item_bias[None, :])
        residual = weights * (predicted - clicks)
        gradients = [
            residual @ item_factors + l2 * user_factors,
            residual.T @ user_factors + l2 * item_factors,
            residual.sum(axis=0),
        ]
        for parameter, speed, gradient in zip(
            (user_factors, item_factors, item_bias), velocity, gradients, strict=True
        ):
            speed *= np.float32(0.9)
            speed -= scale * gradient.astype(np.float32)
            parameter += speed
    return Ranker(user_factors, item_factors, item_bias)


def build_ranker(seed: int = SEED) -> Ranker:
    """The served model: the same factors in every process started with the same seed."""
    return train_ranker(synthetic_feedback(seed), seed=seed)
