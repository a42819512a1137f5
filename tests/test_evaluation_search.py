"""Gallery search: every index type against a plain brute-force loop."""

import csv
import json
import os

import numpy as np
import pytest

from evaluation import search
from evaluation.re_ranking import re_ranking_from_features


def _loop_top_k(query_features, gallery_features, k, metric):
    """Reference: one query at a time, every gallery row by its textbook formula, stable sort."""
    indices, distances = [], []
    for query in query_features.astype(np.float64):
        row = []
        for item in gallery_features.astype(np.float64):
            if metric == "cosine":
                value = 1.0 - query @ item / (np.linalg.norm(query) * np.linalg.norm(item))
            elif metric == "euclidean":
                value = np.sqrt(np.sum((query - item) ** 2))
            else:
                value = np.sum((query - item) ** 2)
            row.append(value)
        order = np.argsort(row, kind="stable")[:k]
        indices.append(order)
        distances.append(np.asarray(row)[order])
    return np.asarray(indices), np.asarray(distances)


def _clustered_features(num_items, dimension, num_clusters, seed):
    """Identity-like structure: tight clusters around random centres."""
    random = np.random.default_rng(seed)
    centres = random.normal(size=(num_clusters, dimension))
    labels = random.integers(0, num_clusters, size=num_items)
    return (centres[labels] + 0.3 * random.normal(size=(num_items, dimension))).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "squared_euclidean"])
@pytest.mark.parametrize("index_type", ["exact", "flat"])
def test_exact_and_flat_match_brute_force(metric, index_type):
    random = np.random.default_rng(0)
    gallery = random.normal(size=(300, 16)).astype(np.float32)
    query = random.normal(size=(20, 16)).astype(np.float32)
    expected_indices, expected_distances = _loop_top_k(query, gallery, 10, metric)

    result = search.GalleryIndex(gallery, metric=metric, index_type=index_type).search(query, 10)

    np.testing.assert_array_equal(result.indices, expected_indices)
    np.testing.assert_allclose(result.distances, expected_distances, atol=1e-4, rtol=1e-4)
    assert result.indices.dtype == np.int64 and result.distances.dtype == np.float32


def test_ivf_searching_every_cell_matches_brute_force():
    gallery = _clustered_features(2000, 16, 40, seed=1)
    query = _clustered_features(30, 16, 40, seed=2)
    index = search.GalleryIndex(gallery, metric="cosine", index_type="ivf", nlist=16, nprobe=16)
    expected_indices, _ = _loop_top_k(query, gallery, 5, "cosine")

    np.testing.assert_array_equal(index.search(query, 5).indices, expected_indices)


def test_ivf_default_probes_recall_clustered_neighbours():
    gallery = _clustered_features(4000, 16, 50, seed=3)
    query = _clustered_features(50, 16, 50, seed=4)
    index = search.GalleryIndex(gallery, metric="cosine", index_type="ivf")
    expected_indices, _ = _loop_top_k(query, gallery, 10, "cosine")

    found = index.search(query, 10).indices
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, expected_indices)])
    assert index.nlist == search.default_ivf_parameters(4000)[0]
    assert recall >= 0.9


def test_ivf_refills_queries_whose_probed_cells_hold_too_few_items():
    gallery = _clustered_features(800, 8, 20, seed=5)
    query = gallery[:4] + 0.01
    # 20 cells of about 40 items, one probed: k=200 needs more than one cell.
    index = search.GalleryIndex(gallery, metric="euclidean", index_type="ivf", nlist=20, nprobe=1)

    result = index.search(query, 200)

    assert (result.indices >= 0).all()
    assert all(len(set(row)) == 200 for row in result.indices)


def test_exact_search_breaks_ties_by_gallery_order():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    result = search.GalleryIndex(gallery, metric="cosine", index_type="exact").search(
        np.array([[3.0, 0.0]], dtype=np.float32), 4
    )
    # Rows 0, 2 and 3 are all at cosine distance 0 from the query.
    np.testing.assert_array_equal(result.indices, [[0, 2, 3, 1]])
    np.testing.assert_allclose(result.distances, [[0.0, 0.0, 0.0, 1.0]], atol=1e-6)


def test_k_is_capped_at_the_gallery_size_and_bad_input_is_named():
    gallery = np.eye(3, dtype=np.float32)
    index = search.GalleryIndex(gallery, index_type="exact")
    assert index.search(gallery, 10).indices.shape == (3, 3)
    with pytest.raises(ValueError, match="k"):
        index.search(gallery, 0)
    with pytest.raises(ValueError, match=r"\(num_query, 3\)"):
        index.search(np.zeros((2, 4), dtype=np.float32), 1)
    with pytest.raises(ValueError, match="index_type"):
        search.GalleryIndex(gallery, index_type="hnsw")
    with pytest.raises(ValueError, match="distance metric"):
        search.GalleryIndex(gallery, metric="manhattan")


def test_index_type_follows_gallery_size():
    assert search.choose_index_type(10) == "exact"
    assert search.choose_index_type(search.EXACT_SEARCH_MAX_GALLERY) == "exact"
    assert search.choose_index_type(search.EXACT_SEARCH_MAX_GALLERY + 1) == "flat"
    assert search.choose_index_type(search.FLAT_INDEX_MAX_GALLERY + 1) == "ivf"
    nlist, nprobe = search.default_ivf_parameters(1_000_000)
    assert nlist == 4000 and nprobe == 500


def test_index_is_built_once_saved_beside_the_features_and_reloaded(tmp_path):
    gallery = _clustered_features(500, 8, 10, seed=6)
    query = _clustered_features(5, 8, 10, seed=7)
    features_file_path = str(tmp_path / "gallery.npz")

    built, status = search.load_or_build_gallery_index(
        gallery, features_file_path, index_type="ivf", nlist=8, nprobe=8
    )
    index_file_path = search.index_file_path_for(features_file_path, "ivf", "cosine")
    assert status == "built" and os.path.isfile(index_file_path)
    with open(index_file_path + ".json") as file:
        assert json.load(file)["num_gallery"] == 500
    modified_time = os.path.getmtime(index_file_path)

    loaded, status = search.load_or_build_gallery_index(
        gallery, features_file_path, index_type="ivf", nlist=8, nprobe=8
    )
    assert status == "loaded" and os.path.getmtime(index_file_path) == modified_time
    np.testing.assert_array_equal(loaded.search(query, 7).indices, built.search(query, 7).indices)

    # New features under the same name: the saved index no longer describes them.
    _, status = search.load_or_build_gallery_index(
        gallery + 1.0, features_file_path, index_type="ivf", nlist=8, nprobe=8
    )
    assert status == "built"


def test_small_galleries_need_no_index_file(tmp_path):
    index, status = search.load_or_build_gallery_index(
        np.eye(4, dtype=np.float32), str(tmp_path / "gallery.npz")
    )
    assert status == "exact" and index.index_type == "exact"
    assert os.listdir(tmp_path) == []


def test_re_ranking_with_every_candidate_equals_full_re_ranking():
    gallery = _clustered_features(120, 8, 12, seed=8)
    query = _clustered_features(10, 8, 12, seed=9)
    index = search.GalleryIndex(gallery, index_type="flat")
    re_ranked = re_ranking_from_features(query, gallery, k1=6, k2=3, lambda_value=0.3)
    expected = np.argsort(re_ranked, axis=1, kind="stable")[:, :5]

    result = search.search_gallery(
        query, index, 5, use_re_ranking=True, num_re_ranking_candidates=120, k1=6, k2=3
    )

    np.testing.assert_array_equal(result.indices, expected)
    np.testing.assert_allclose(
        result.distances, np.take_along_axis(re_ranked, expected, axis=1), atol=1e-6
    )


def test_re_ranking_only_reorders_each_querys_candidates():
    gallery = _clustered_features(400, 8, 20, seed=10)
    query = _clustered_features(6, 8, 20, seed=11)
    index = search.GalleryIndex(gallery, index_type="exact")
    candidates = index.search(query, 30).indices

    result = search.search_gallery(
        query, index, 10, use_re_ranking=True, num_re_ranking_candidates=30, k1=5, k2=2
    )

    for found, allowed in zip(result.indices, candidates):
        assert set(found) <= set(allowed) and len(set(found)) == 10
    assert (np.diff(result.distances, axis=1) >= 0).all()


def test_results_are_written_as_csv_and_text(tmp_path):
    result = search.SearchResult(
        indices=np.array([[1, 0], [0, 1]]), distances=np.array([[0.1, 0.5], [0.2, 0.25]])
    )
    file_path = tmp_path / "results.csv"
    search.write_search_results_csv(
        str(file_path), ["q0.jpg", "q1.jpg"], ["g0.jpg", "g1.jpg"], result
    )

    with open(file_path) as file:
        rows = list(csv.DictReader(file))
    assert [
        (row["query_image_file_path"], row["rank"], row["gallery_image_file_path"]) for row in rows
    ] == [
        ("q0.jpg", "1", "g1.jpg"),
        ("q0.jpg", "2", "g0.jpg"),
        ("q1.jpg", "1", "g0.jpg"),
        ("q1.jpg", "2", "g1.jpg"),
    ]
    assert float(rows[1]["distance"]) == pytest.approx(0.5)
    text = search.format_search_results(["q0.jpg", "q1.jpg"], ["g0.jpg", "g1.jpg"], result)
    assert "1. 0.1000  g1.jpg" in text and text.splitlines()[3] == "q1.jpg"
