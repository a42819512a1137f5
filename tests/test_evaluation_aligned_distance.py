"""Aligned local distance against a plain per-pair dynamic programme."""

import numpy as np
import pytest

from evaluation import aligned_local_distance
from evaluation.aligned_distance import aligned_distance_pairwise, prepare_stripes


def reference_aligned_distance(stripes_a, stripes_b):
    """One pair, written as the definition reads: element matrix, then a loop DP."""
    num_stripes = stripes_a.shape[0]
    elements = np.zeros((num_stripes, num_stripes))
    for i in range(num_stripes):
        for j in range(num_stripes):
            distance = np.sqrt(np.sum((stripes_a[i] - stripes_b[j]) ** 2))
            elements[i, j] = (np.exp(distance) - 1.0) / (np.exp(distance) + 1.0)
    costs = np.zeros_like(elements)
    for i in range(num_stripes):
        for j in range(num_stripes):
            if i == 0 and j == 0:
                costs[i, j] = elements[i, j]
            elif i == 0:
                costs[i, j] = costs[i, j - 1] + elements[i, j]
            elif j == 0:
                costs[i, j] = costs[i - 1, j] + elements[i, j]
            else:
                costs[i, j] = min(costs[i - 1, j], costs[i, j - 1]) + elements[i, j]
    return costs[-1, -1]


def reference_matrix(x, y):
    return np.array([[reference_aligned_distance(a, b) for b in y] for a in x])


@pytest.mark.parametrize("num_stripes", [1, 2, 8])
def test_matches_per_pair_reference_float64(num_stripes):
    rng = np.random.default_rng(num_stripes)
    x = rng.random((7, num_stripes, 5)) * 0.7
    y = rng.random((11, num_stripes, 5)) * 0.7
    result = aligned_local_distance(x, y)
    assert result.shape == (7, 11)
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, reference_matrix(x, y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("block_elements", [1, 64, 1 << 23])
def test_float32_and_any_block_size_match_reference(block_elements):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 8, 16)).astype(np.float32)
    y = rng.standard_normal((13, 8, 16)).astype(np.float32)
    result = aligned_local_distance(x, y, block_elements=block_elements)
    assert result.dtype == np.float32
    np.testing.assert_allclose(
        result, reference_matrix(x.astype(np.float64), y.astype(np.float64)), rtol=2e-5
    )


def test_one_stripe_is_the_squashed_euclidean_distance():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 1, 10))
    y = rng.standard_normal((4, 1, 10))
    euclidean = np.linalg.norm(x[:, None, 0, :] - y[None, :, 0, :], axis=-1)
    expected = (np.exp(euclidean) - 1.0) / (np.exp(euclidean) + 1.0)
    np.testing.assert_allclose(aligned_local_distance(x, y), expected, rtol=1e-12)


def test_hand_computed_path():
    # Stripes are scalars: elements tanh(|a_i - b_j| / 2) with a = (0, 4), b = (4, 0).
    # Element matrix [[t4, 0], [0, t4]]: the path right-then-down or down-then-right both cost
    # t4 + 0 + t4, since the path always visits both corners.
    x = np.array([[[0.0], [4.0]]])
    y = np.array([[[4.0], [0.0]]])
    t4 = np.tanh(2.0)
    assert aligned_local_distance(x, y)[0, 0] == pytest.approx(2 * t4 + 0.0)
    # a = (0, 0, 9), b = (0, 9, 9): the path along the equal stripes costs tanh(4.5) only.
    x = np.array([[[0.0], [0.0], [9.0]]])
    y = np.array([[[0.0], [9.0], [9.0]]])
    assert aligned_local_distance(x, y)[0, 0] == pytest.approx(np.tanh(4.5))


def test_symmetric_and_self_distance_follows_the_path_rule():
    # A right/down path must leave the zero diagonal H - 1 times, so an image is not at
    # distance 0 from itself unless its stripes coincide.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((10, 4, 8))
    result = aligned_local_distance(x, x)
    np.testing.assert_allclose(result, result.T, rtol=1e-12)
    np.testing.assert_allclose(np.diag(result), reference_matrix(x, x).diagonal(), rtol=1e-10)
    uniform = np.repeat(x[:, :1], 4, axis=1)
    np.testing.assert_allclose(np.diag(aligned_local_distance(uniform, uniform)), 0.0, atol=1e-6)


def test_inputs_are_not_normalised():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 8))
    y = rng.standard_normal((5, 4, 8))
    assert not np.allclose(aligned_local_distance(x, y), aligned_local_distance(2 * x, 2 * y))


def test_pairwise_on_prepared_rows_equals_public_function():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    y = rng.standard_normal((8, 3, 4)).astype(np.float32)
    prepared = aligned_distance_pairwise(prepare_stripes(x), prepare_stripes(y), 50)
    np.testing.assert_array_equal(prepared, aligned_local_distance(x, y, block_elements=50))


def test_empty_inputs_give_empty_matrix():
    assert aligned_local_distance(np.zeros((0, 4, 3)), np.zeros((5, 4, 3))).shape == (0, 5)


@pytest.mark.parametrize(
    "x_shape, y_shape, message",
    [
        ((3, 4), (3, 4, 2), "3-D"),
        ((3, 4, 2), (3, 5, 2), "same number of stripes"),
        ((3, 4, 2), (3, 4, 3), "same number of stripes"),
        ((3, 0, 2), (3, 0, 2), "no stripes"),
    ],
)
def test_bad_shapes_are_named(x_shape, y_shape, message):
    with pytest.raises(ValueError, match=message):
        aligned_local_distance(np.ones(x_shape), np.ones(y_shape))


def test_nan_and_bad_block_size_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        aligned_local_distance(np.full((1, 2, 2), np.nan), np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="block_elements"):
        aligned_local_distance(np.ones((1, 2, 2)), np.ones((1, 2, 2)), block_elements=0)


def test_float32_near_identical_stripes_keep_relative_accuracy():
    # Without recomputation, cancellation in ||a||^2 + ||b||^2 - 2<a, b> leaves about 1e-3 of
    # error per zero element in float32; the self distances would be off by about 1e-2.
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((6, 8, 128)) + 3.0).astype(np.float32)
    result = aligned_local_distance(x, x)
    expected = reference_matrix(x.astype(np.float64), x.astype(np.float64))
    np.testing.assert_allclose(result, expected, rtol=2e-5)
