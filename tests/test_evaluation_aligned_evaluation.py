"""Six-row AlignedReID evaluation and tiled re-ranking against dense references."""

import numpy as np
import pytest

from evaluation import aligned_local_distance
from evaluation.aligned_distance import aligned_distance_pairwise, prepare_stripes
from evaluation.aligned_evaluation import (
    aligned_distance_row_pairs,
    evaluate_aligned_features,
    format_row_metrics,
    metrics_by_row,
    re_ranking_with_pairwise,
)
from evaluation.distances import compute_distance_matrix
from evaluation.metrics import evaluate_ranking
from evaluation.re_ranking import re_ranking


def make_data(seed=0, num_query=12, num_gallery=40, num_ids=6):
    rng = np.random.default_rng(seed)
    query_ids = rng.integers(0, num_ids, num_query)
    gallery_ids = np.concatenate(
        [np.arange(num_ids), rng.integers(0, num_ids, num_gallery - num_ids)]
    )
    centres = rng.standard_normal((num_ids, 3, 8))
    query_local = (centres[query_ids] + 0.5 * rng.standard_normal((num_query, 3, 8))).astype(
        np.float32
    )
    gallery_local = (centres[gallery_ids] + 0.5 * rng.standard_normal((num_gallery, 3, 8))).astype(
        np.float32
    )
    query_global = query_local.reshape(num_query, -1) + rng.standard_normal((num_query, 24))
    gallery_global = gallery_local.reshape(num_gallery, -1) + rng.standard_normal((num_gallery, 24))
    query_cams = rng.integers(0, 3, num_query)
    gallery_cams = (rng.integers(0, 3, num_gallery) + 1) % 3
    return dict(
        query_features=query_global.astype(np.float32),
        gallery_features=gallery_global.astype(np.float32),
        query_local_features=query_local,
        gallery_local_features=gallery_local,
        query_identity_IDs=query_ids,
        gallery_identity_IDs=gallery_ids,
        query_camera_IDs=query_cams,
        gallery_camera_IDs=gallery_cams,
    )


def test_row_pairs_equal_the_matrix_diagonal():
    data = make_data()
    x, y = data["query_local_features"], data["gallery_local_features"][:12]
    expected = np.diag(aligned_local_distance(x, y))
    np.testing.assert_allclose(
        aligned_distance_row_pairs(prepare_stripes(x), prepare_stripes(y)), expected, rtol=1e-5
    )


@pytest.mark.parametrize("tile_size", [5, 4096])
def test_tiled_local_re_ranking_equals_dense_re_ranking(tile_size):
    data = make_data(1)
    query, gallery = data["query_local_features"], data["gallery_local_features"]
    dense = re_ranking(
        aligned_local_distance(query, gallery),
        aligned_local_distance(query, query),
        aligned_local_distance(gallery, gallery),
    )
    tiled = re_ranking_with_pairwise(
        prepare_stripes(query),
        prepare_stripes(gallery),
        aligned_distance_pairwise,
        aligned_distance_row_pairs,
        tile_size=tile_size,
    )
    np.testing.assert_allclose(tiled, dense, atol=1e-4)


def test_six_rows_match_rankings_of_their_matrices():
    data = make_data(2)
    metrics = evaluate_aligned_features(**data, use_re_ranking=True)
    ranking_inputs = (
        data["query_identity_IDs"],
        data["gallery_identity_IDs"],
        data["query_camera_IDs"],
        data["gallery_camera_IDs"],
    )
    global_distances = compute_distance_matrix(data["query_features"], data["gallery_features"])
    local = lambda a, b: aligned_local_distance(data[a], data[b])  # noqa: E731
    local_distances = local("query_local_features", "gallery_local_features")
    combined = global_distances + local_distances
    query_query = compute_distance_matrix(data["query_features"], data["query_features"]) + local(
        "query_local_features", "query_local_features"
    )
    gallery_gallery = compute_distance_matrix(
        data["gallery_features"], data["gallery_features"]
    ) + local("gallery_local_features", "gallery_local_features")
    expected = {
        "global": global_distances,
        "local": local_distances,
        "global_local": combined,
        "local_re_ranking": re_ranking(
            local_distances,
            local("query_local_features", "query_local_features"),
            local("gallery_local_features", "gallery_local_features"),
        ),
        "global_local_re_ranking": re_ranking(combined, query_query, gallery_gallery),
    }
    rows = metrics_by_row(metrics)
    assert set(rows) == {
        "global",
        "global_re_ranking",
        "local",
        "local_re_ranking",
        "global_local",
        "global_local_re_ranking",
    }
    for name, distmat in expected.items():
        result = evaluate_ranking(distmat, *ranking_inputs, max_rank=20)
        assert rows[name]["mAP"] == pytest.approx(result.mAP, abs=1e-6), name
        assert rows[name]["rank1"] == pytest.approx(result.cmc[0], abs=1e-6), name
    # The global row keeps evaluate_features' unprefixed names.
    assert metrics["mAP"] == rows["global"]["mAP"]
    assert metrics["re_ranking_mAP"] == rows["global_re_ranking"]["mAP"]
    assert "global_local_re_ranking" in format_row_metrics(metrics, "title")


def test_normalised_stripes_change_only_the_local_rows():
    data = make_data(3)
    plain = evaluate_aligned_features(**data)
    normalised = evaluate_aligned_features(**data, normalize_local_features=True)
    assert plain["global_mAP"] == normalised["global_mAP"]
    unit = data["query_local_features"] / np.linalg.norm(
        data["query_local_features"], axis=-1, keepdims=True
    )
    gallery_unit = data["gallery_local_features"] / np.linalg.norm(
        data["gallery_local_features"], axis=-1, keepdims=True
    )
    result = evaluate_ranking(
        aligned_local_distance(unit, gallery_unit),
        data["query_identity_IDs"],
        data["gallery_identity_IDs"],
        data["query_camera_IDs"],
        data["gallery_camera_IDs"],
        max_rank=20,
    )
    assert normalised["local_mAP"] == pytest.approx(result.mAP, abs=1e-6)
