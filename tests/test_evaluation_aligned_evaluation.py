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


# AlignedReID's own test (aligned_reid/dataset/TestSet.py eval() with utils/distance.py,
# utils/re_ranking.py and utils/metric.py), transcribed in plain NumPy, independent of ours.
def alignedreid_normalize(features):
    norms = np.linalg.norm(features, ord=2, axis=-1, keepdims=True)
    return features / (norms + np.finfo(np.float32).eps)


def alignedreid_euclidean(array1, array2):
    square1 = np.sum(np.square(array1), axis=1)[:, np.newaxis]
    square2 = np.sum(np.square(array2), axis=1)[np.newaxis, :]
    squared = -2 * np.matmul(array1, array2.T) + square1 + square2
    squared[squared < 0] = 0
    return np.sqrt(squared)


def alignedreid_local_dist(x, y):
    num_x, num_stripes, dim = x.shape
    num_y = y.shape[0]
    distances = alignedreid_euclidean(x.reshape(-1, dim), y.reshape(-1, dim))
    distances = (np.exp(distances) - 1.0) / (np.exp(distances) + 1.0)
    cells = distances.reshape(num_x, num_stripes, num_y, num_stripes).transpose(1, 3, 0, 2)
    path = np.zeros_like(cells)
    for i in range(num_stripes):
        for j in range(num_stripes):
            if i == 0 and j == 0:
                path[i, j] = cells[i, j]
            elif i == 0:
                path[i, j] = path[i, j - 1] + cells[i, j]
            elif j == 0:
                path[i, j] = path[i - 1, j] + cells[i, j]
            else:
                path[i, j] = np.minimum(path[i - 1, j], path[i, j - 1]) + cells[i, j]
    return path[-1, -1]


def alignedreid_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    original_dist = np.concatenate(
        [
            np.concatenate([q_q_dist, q_g_dist], axis=1),
            np.concatenate([q_g_dist.T, g_g_dist], axis=1),
        ],
        axis=0,
    )
    original_dist = np.power(original_dist, 2).astype(np.float32)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)  # noqa: N806 (its names)
    initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)
    query_num = q_g_dist.shape[0]
    all_num = q_g_dist.shape[0] + q_g_dist.shape[1]
    for i in range(all_num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        k_reciprocal = forward[np.where(backward == i)[0]]
        expansion = k_reciprocal
        for candidate in k_reciprocal:
            half = int(np.around(k1 / 2.0)) + 1
            candidate_forward = initial_rank[candidate, :half]
            candidate_backward = initial_rank[candidate_forward, :half]
            candidate_reciprocal = candidate_forward[np.where(candidate_backward == candidate)[0]]
            if len(np.intersect1d(candidate_reciprocal, k_reciprocal)) > 2.0 / 3 * len(
                candidate_reciprocal
            ):
                expansion = np.append(expansion, candidate_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)  # noqa: N806
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe  # noqa: N806
    inverted = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        non_zero = np.where(V[i, :] != 0)[0]
        for j in non_zero:
            temp_min[0, inverted[j]] += np.minimum(V[i, j], V[inverted[j], j])
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


def alignedreid_map_and_rank1(distmat, q_ids, g_ids, q_cams, g_cams):
    from sklearn.metrics import average_precision_score

    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = g_ids[indices] == q_ids[:, np.newaxis]
    aps, first_hits = [], []
    for i in range(distmat.shape[0]):
        valid = (g_ids[indices[i]] != q_ids[i]) | (g_cams[indices[i]] != q_cams[i])
        y_true = matches[i, valid]
        if not np.any(y_true):
            continue
        aps.append(average_precision_score(y_true, -distmat[i][indices[i]][valid]))
        first_hits.append(np.nonzero(y_true)[0][0] == 0)  # cmc with first_match_break
    return float(np.mean(aps)), float(np.mean(first_hits))


def alignedreid_six_rows(data, normalize_feature):
    """AlignedReID's TestSet.eval(normalize_feat, use_local_distance=True, to_re_rank=True)."""
    global_q, global_g = data["query_features"], data["gallery_features"]
    local_q, local_g = data["query_local_features"], data["gallery_local_features"]
    if normalize_feature:
        global_q, global_g = alignedreid_normalize(global_q), alignedreid_normalize(global_g)
        local_q, local_g = alignedreid_normalize(local_q), alignedreid_normalize(local_g)
    global_qg = alignedreid_euclidean(global_q, global_g)
    global_qq = alignedreid_euclidean(global_q, global_q)
    global_gg = alignedreid_euclidean(global_g, global_g)
    local_qg = alignedreid_local_dist(local_q, local_g)
    local_qq = alignedreid_local_dist(local_q, local_q)
    local_gg = alignedreid_local_dist(local_g, local_g)
    distances = {
        "global": global_qg,
        "global_re_ranking": alignedreid_re_ranking(global_qg, global_qq, global_gg),
        "local": local_qg,
        "local_re_ranking": alignedreid_re_ranking(local_qg, local_qq, local_gg),
        "global_local": global_qg + local_qg,
        "global_local_re_ranking": alignedreid_re_ranking(
            global_qg + local_qg, global_qq + local_qq, global_gg + local_gg
        ),
    }
    labels = (
        data["query_identity_IDs"],
        data["gallery_identity_IDs"],
        data["query_camera_IDs"],
        data["gallery_camera_IDs"],
    )
    return {name: alignedreid_map_and_rank1(d, *labels) for name, d in distances.items()}


def _scaled_data(seed):
    """make_data with norms spread over two decades, so normalising changes the rankings."""
    data = make_data(seed, num_query=16, num_gallery=48)
    rng = np.random.default_rng(seed + 100)
    for split in ("query", "gallery"):
        features, local = data[f"{split}_features"], data[f"{split}_local_features"]
        # More noise than make_data's, so that no row is perfect.
        features += rng.normal(0.0, 1.5, features.shape).astype(np.float32)
        local += rng.normal(0.0, 1.5, local.shape).astype(np.float32)
        features *= rng.uniform(0.1, 10.0, (len(features), 1)).astype(np.float32)
        local *= rng.uniform(0.3, 3.0, (len(local), 1, 1)).astype(np.float32)
    return data


@pytest.mark.parametrize("normalize_feature", [False, True])
@pytest.mark.parametrize("seed", [4, 5])
def test_six_rows_equal_alignedreids_own_evaluation(normalize_feature, seed):
    data = _scaled_data(seed)
    metrics = evaluate_aligned_features(
        **data,
        distance_metric="euclidean",
        use_re_ranking=True,
        normalize_features=normalize_feature,
    )
    rows = metrics_by_row(metrics)
    expected = alignedreid_six_rows(data, normalize_feature)
    for name, (mean_ap, rank1) in expected.items():
        assert rows[name]["mAP"] == pytest.approx(mean_ap, abs=1e-3), name
        assert rows[name]["rank1"] == pytest.approx(rank1, abs=1e-3), name
    # The flag changes the rows (the features' norms differ), so both cases test something.
    other = alignedreid_six_rows(data, not normalize_feature)
    assert any(abs(other[name][0] - expected[name][0]) > 1e-3 for name in expected)
