"""Smoke tests of the large benchmark problems' generators (benchmarks/ are programs, not tests).

Only shapes and invariants at tiny scales, and the co-rated pair counter of
benchmarks/crossed_large.py against a dense brute force; no timings.
"""

import numpy as np
import pytest

from benchmarks.crossed_large import co_rated, neighbour_points, pair_counts
from benchmarks.problems import PROBLEMS, ml_latest_pairs, ml_latest_shape


def test_ml_latest_shape_small():
    problem = ml_latest_shape(0.002)
    assert PROBLEMS["ml_latest_shape"] is ml_latest_shape
    assert problem.n_levels() == {"user": 534, "item": 108}
    assert problem.n == 534 * 108 // 4  # at tiny scales a quarter of the user x item cells
    user = problem.data["user"].cat.codes.to_numpy()
    item = problem.data["item"].cat.codes.to_numpy()
    per_user = np.bincount(user)
    assert per_user.min() >= 5 and per_user.max() <= 108 // 2 + 25
    assert np.bincount(item).min() >= 1
    assert len(np.unique(user.astype(np.int64) * 108 + item)) == problem.n  # each pair once
    assert np.isfinite(problem.data["y"]).all()


def test_ml_latest_pairs_is_deterministic():
    first, second = ml_latest_pairs(0.002), ml_latest_pairs(0.002)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


@pytest.mark.parametrize("seed", [0, 1])
def test_pair_counts_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    users, items, n = 40, 30, 90
    keys = np.unique(rng.integers(0, users, n) * items + rng.integers(0, items, n))
    user, item = keys // items, keys % items
    counts = pair_counts(user, item, chunk_entries=7 * (item.max() + 1))  # several chunks
    Z_u = np.zeros((len(user), user.max() + 1))
    Z_u[np.arange(len(user)), user] = 1
    Z_i = np.zeros((len(item), item.max() + 1))
    Z_i[np.arange(len(item)), item] = 1
    gram = Z_i.T @ Z_u @ Z_u.T @ Z_i
    assert counts["pairs"] == np.count_nonzero(np.tril(gram, -1))
    assert counts["sum_n2"] == (Z_u.sum(axis=0) ** 2).sum()
    first, second = np.tril_indices(item.max() + 1, -1)
    np.testing.assert_array_equal(co_rated(user, item, first, second, chunk=50), gram[first, second] > 0)


def test_neighbour_points():
    points = neighbour_points([0.8, 0.5], 1e-3)
    assert [p["label"] for p in points][0] == "theta_hat"
    np.testing.assert_allclose([p["theta"] for p in points],
                               [[0.8, 0.5], [0.8 * 0.999, 0.5], [0.8 * 1.001, 0.5], [0.8, 0.5 * 0.999], [0.8, 0.5 * 1.001]])
