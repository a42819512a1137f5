"""Distance matrices against their formulas."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from evaluation.distances import DISTANCE_METRICS, compute_distance_matrix


@pytest.fixture()
def features():
    rng = np.random.default_rng(0)
    return rng.standard_normal((37, 24)), rng.standard_normal((53, 24))


@pytest.mark.parametrize(
    "metric, scipy_metric",
    [("cosine", "cosine"), ("euclidean", "euclidean"), ("squared_euclidean", "sqeuclidean")],
)
@pytest.mark.parametrize("block_size", [1, 5, 1024])
def test_matches_formula(features, metric, scipy_metric, block_size):
    query, gallery = features
    result = compute_distance_matrix(query, gallery, metric=metric, block_size=block_size)
    assert result.dtype == np.float32
    assert result.shape == (37, 53)
    np.testing.assert_allclose(result, cdist(query, gallery, scipy_metric), atol=2e-5, rtol=1e-5)


def test_cosine_is_default_and_scale_invariant(features):
    query, gallery = features
    np.testing.assert_allclose(
        compute_distance_matrix(query, gallery),
        compute_distance_matrix(3.0 * query, 0.5 * gallery, "cosine"),
        atol=1e-6,
    )


def test_identical_features_are_at_distance_zero(features):
    query, _ = features
    for metric in DISTANCE_METRICS:
        distances = compute_distance_matrix(query, query, metric)
        assert np.all(distances >= 0)
        # The square root magnifies float32 cancellation of |a|^2 + |b|^2 - 2ab near zero.
        tolerance = 1e-2 if metric == "euclidean" else 1e-5
        np.testing.assert_allclose(np.diag(distances), 0.0, atol=tolerance)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(metric="manhattan"), "cosine"),
        (dict(block_size=0), "block_size"),
        (dict(query_features=np.ones(3)), "query_features"),
        (dict(gallery_features=np.ones((0, 4))), "gallery_features"),
        (dict(gallery_features=np.ones((2, 5))), "dimension"),
        (dict(query_features=np.full((2, 4), np.nan)), "query_features"),
    ],
)
def test_bad_input(arguments, message):
    inputs = dict(query_features=np.ones((2, 4)), gallery_features=np.ones((3, 4)))
    inputs.update(arguments)
    with pytest.raises(ValueError, match=message):
        compute_distance_matrix(**inputs)
