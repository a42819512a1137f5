"""k-reciprocal re-ranking against a dense step-by-step transcription of the original."""

import numpy as np
import pytest

from evaluation.distances import compute_distance_matrix, get_distance_metric, prepare_features
from evaluation.re_ranking import (
    re_ranking,
    re_ranking_from_features,
    smallest_k_stable,
    symmetric_neighbours,
)
from evaluation.reference import reference_re_ranking


def _matrices(query_features, gallery_features, metric):
    return (
        compute_distance_matrix(query_features, gallery_features, metric),
        compute_distance_matrix(query_features, query_features, metric),
        compute_distance_matrix(gallery_features, gallery_features, metric),
    )


def _random_settings(num_cases, seed):
    rng = np.random.default_rng(seed)
    for case in range(num_cases):
        yield dict(
            num_query=1 if case % 5 == 0 else int(rng.integers(2, 20)),
            num_gallery=int(rng.integers(2, 70)),
            dim=int(rng.integers(2, 12)),
            k1=int(rng.integers(1, 26)),
            k2=int(rng.integers(1, 9)),
            lambda_value=float(rng.random()),
            metric=("cosine", "euclidean", "squared_euclidean")[case % 3],
            seed=case,
        )


@pytest.mark.parametrize("settings", list(_random_settings(24, seed=5)), ids=str)
def test_matches_dense_original_without_ties(settings):
    rng = np.random.default_rng(settings["seed"])
    query = rng.standard_normal((settings["num_query"], settings["dim"]))
    gallery = rng.standard_normal((settings["num_gallery"], settings["dim"]))
    matrices = _matrices(query, gallery, settings["metric"])
    parameters = dict(k1=settings["k1"], k2=settings["k2"], lambda_value=settings["lambda_value"])
    expected = reference_re_ranking(*matrices, **parameters)
    result = re_ranking(*matrices, **parameters)
    assert result.dtype == np.float32
    assert result.shape == (settings["num_query"], settings["num_gallery"])
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-4)
    from_features = re_ranking_from_features(
        query, gallery, metric=settings["metric"], block_size=7, **parameters
    )
    np.testing.assert_allclose(from_features, expected, rtol=0, atol=1e-4)


def test_default_parameters_on_clustered_features():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((12, 16))
    query = centres[rng.integers(0, 12, 30)] + 0.5 * rng.standard_normal((30, 16))
    gallery = centres[rng.integers(0, 12, 150)] + 0.5 * rng.standard_normal((150, 16))
    matrices = _matrices(query, gallery, "euclidean")
    expected = reference_re_ranking(*matrices)
    np.testing.assert_allclose(re_ranking(*matrices), expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(
        re_ranking_from_features(query, gallery, metric="euclidean"), expected, atol=1e-4
    )


def test_duplicate_features_use_stable_neighbour_order():
    # Exact ties: the reference transcription sorts stably, as documented for re_ranking.
    rng = np.random.default_rng(3)
    base = rng.standard_normal((10, 6))
    query = base[rng.integers(0, 10, 8)]
    gallery = base[rng.integers(0, 10, 40)]
    matrices = _matrices(query, gallery, "squared_euclidean")
    np.testing.assert_allclose(
        re_ranking(*matrices, k1=6, k2=3), reference_re_ranking(*matrices, k1=6, k2=3), atol=1e-4
    )


def test_asymmetric_matrices_follow_the_column_normalisation():
    rng = np.random.default_rng(11)
    q_g = rng.random((5, 20))
    q_q = rng.random((5, 5))
    g_g = rng.random((20, 20))
    np.testing.assert_allclose(
        re_ranking(q_g, q_q, g_g, k1=4, k2=2),
        reference_re_ranking(q_g, q_q, g_g, k1=4, k2=2),
        atol=1e-4,
    )


@pytest.mark.parametrize("sample_size", [8, 32, 1024])
@pytest.mark.parametrize("num_values", [3, 50, None])
def test_smallest_k_stable_matches_stable_argsort(sample_size, num_values):
    # Few distinct values force ties at the k-th place; small samples take the bounded path.
    rng = np.random.default_rng(sample_size)
    shape = (120, 400)
    block = (
        rng.random(shape) if num_values is None else rng.integers(0, num_values, shape)
    ).astype(np.float32)
    for k in (1, 3, 21, 100, 400):
        np.testing.assert_array_equal(
            smallest_k_stable(block, k, sample_size=sample_size),
            np.argsort(block, axis=1, kind="stable")[:, :k],
        )


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(k1=0), "k1"),
        (dict(k2=0), "k2"),
        (dict(lambda_value=1.5), "lambda_value"),
        (dict(q_q_dist=np.zeros((3, 4))), "q_q_dist"),
        (dict(g_g_dist=np.zeros((4, 5))), "g_g_dist"),
        (dict(q_g_dist=np.zeros((0, 5))), "q_g_dist"),
        (dict(q_g_dist=np.full((3, 5), np.nan)), "q_g_dist"),
    ],
)
def test_re_ranking_bad_input(arguments, message):
    rng = np.random.default_rng(0)
    inputs = dict(
        q_g_dist=rng.random((3, 5)), q_q_dist=rng.random((3, 3)), g_g_dist=rng.random((5, 5))
    )
    inputs.update(arguments)
    with pytest.raises(ValueError, match=message):
        re_ranking(**inputs)


def test_re_ranking_from_features_bad_input():
    with pytest.raises(ValueError, match="metric"):
        re_ranking_from_features(np.ones((2, 3)), np.ones((4, 3)), metric="hamming")
    with pytest.raises(ValueError, match="dimension"):
        re_ranking_from_features(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="distance 0"):
        re_ranking_from_features(np.ones((2, 3)), np.ones((4, 3)), metric="euclidean")


@pytest.mark.parametrize("tile_size", [1, 6, 50, 4096])
def test_symmetric_neighbours_match_full_sort(tile_size):
    rng = np.random.default_rng(tile_size)
    features = rng.standard_normal((45, 5))
    prepared = prepare_features(features, "euclidean")
    neighbours, maxima = symmetric_neighbours(
        prepared, get_distance_metric("euclidean").pairwise, 9, tile_size
    )
    full = compute_distance_matrix(features, features, "euclidean") ** 2
    np.testing.assert_allclose(maxima, full.max(axis=1), rtol=1e-5)
    expected = np.argsort(full / full.max(axis=1, keepdims=True), axis=1, kind="stable")[:, :9]
    np.testing.assert_array_equal(neighbours, expected)
