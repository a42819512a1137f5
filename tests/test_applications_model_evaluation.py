"""Feature extraction (with flip averaging) and the metric report built on the NumPy engine."""

import cv2
import numpy as np
import pandas as pd
import pytest

from applications.core.backend import keras
from applications.model_evaluation import (
    SKIPPED_GALLERY_KEY,
    SKIPPED_QUERY_KEY,
    evaluate_model,
    extract_features,
)
from datasets.image_files import SkippedImageLog
from evaluation.distances import compute_distance_matrix
from evaluation.metrics import evaluate_ranking
from evaluation.report import evaluate_features, format_metrics
from tests.dataset_fixtures import write_bad_image_file

IMAGE_HEIGHT, IMAGE_WIDTH = 8, 4


def _write_png_images(folder_path, num_images, seed=0):
    """Lossless images at the model's size, so decoding and resizing change nothing."""
    rng = np.random.default_rng(seed)
    images, file_paths = [], []
    for index in range(num_images):
        image = rng.integers(0, 256, (IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
        file_path = str(folder_path / f"{index:03d}.png")
        cv2.imwrite(file_path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        images.append(image)
        file_paths.append(file_path)
    return np.stack(images), file_paths


def _tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((IMAGE_HEIGHT, IMAGE_WIDTH, 3))
    outputs = keras.layers.Dense(5)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("use_horizontal_flipping", [False, True])
def test_extract_features_keeps_file_order_and_averages_the_flip(tmp_path, use_horizontal_flipping):
    images, file_paths = _write_png_images(tmp_path, 11)
    model = _tiny_model()
    features = extract_features(
        model,
        file_paths,
        image_height=IMAGE_HEIGHT,
        image_width=IMAGE_WIDTH,
        batch_size=4,
        use_horizontal_flipping=use_horizontal_flipping,
        verbose=0,
    )
    expected = model.predict(images.astype(np.float32), verbose=0)
    if use_horizontal_flipping:
        flipped = model.predict(images[:, :, ::-1].astype(np.float32), verbose=0)
        expected = (expected + flipped) / 2
        # The flip must matter for this model, or the check above proves nothing.
        assert not np.allclose(features, model.predict(images.astype(np.float32), verbose=0))
    assert features.dtype == np.float32 and features.shape == (11, 5)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)


def test_extract_features_rejects_an_empty_list():
    with pytest.raises(ValueError, match="no image files"):
        extract_features(_tiny_model(), [], image_height=IMAGE_HEIGHT, image_width=IMAGE_WIDTH)


def _mixed_file_paths(folder_path, num_images, bad_rows):
    """Good PNGs with bad files inserted at `bad_rows` (row -> kind) of the returned list.

    corrupt_jpeg and corrupt_png keep their header and end marker, so they pass the cheap
    load-time check and fail only at decoding; header_only_jpeg is caught by either check.
    """
    images, good_paths = _write_png_images(folder_path, num_images)
    file_paths, good_rows = [], []
    good = iter(good_paths)
    for row in range(num_images + len(bad_rows)):
        if row in bad_rows:
            extension = ".png" if bad_rows[row] == "corrupt_png" else ".jpg"
            file_paths.append(
                write_bad_image_file(str(folder_path / f"bad_{row}{extension}"), bad_rows[row])
            )
        else:
            file_paths.append(next(good))
            good_rows.append(row)
    return images, file_paths, good_rows


def test_extract_features_leaves_undecodable_files_out_with_their_positions(tmp_path):
    # Two bad files side by side, one at the very end (the last batch then holds none).
    bad_rows = {1: "corrupt_jpeg", 2: "corrupt_png", 8: "header_only_jpeg"}
    images, file_paths, good_rows = _mixed_file_paths(tmp_path, 6, bad_rows)
    model = _tiny_model()
    log = SkippedImageLog("Tiny gallery")

    features, positions = extract_features(
        model,
        file_paths,
        image_height=IMAGE_HEIGHT,
        image_width=IMAGE_WIDTH,
        batch_size=4,
        verbose=0,
        return_positions=True,
        skipped_images=log,
    )

    assert positions.dtype == np.int64 and positions.tolist() == good_rows
    expected = model.predict(images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)
    assert log.skipped_file_paths == [file_paths[row] for row in sorted(bad_rows)]
    assert log.num_skipped == 3


def test_extract_features_without_positions_names_an_undecodable_file(tmp_path):
    _, file_paths, _ = _mixed_file_paths(tmp_path, 3, {2: "corrupt_jpeg"})
    with pytest.raises(ValueError, match="Cannot decode 1 image file.*bad_2.jpg"):
        extract_features(
            _tiny_model(), file_paths, image_height=IMAGE_HEIGHT, image_width=IMAGE_WIDTH
        )


def _split(file_paths, identity_IDs, camera_IDs):
    return pd.DataFrame(
        {"image_file_path": file_paths, "identity_ID": identity_IDs, "camera_ID": camera_IDs}
    )


def test_evaluate_model_scores_and_saves_only_the_decodable_rows(tmp_path):
    query_path, gallery_path = tmp_path / "query", tmp_path / "gallery"
    query_path.mkdir()
    gallery_path.mkdir()
    query_images, query_paths, query_rows = _mixed_file_paths(query_path, 4, {0: "corrupt_png"})
    gallery_images, gallery_paths, gallery_rows = _mixed_file_paths(
        gallery_path, 8, {3: "corrupt_jpeg", 6: "header_only_jpeg"}
    )
    # The bad rows carry identities of their own: scoring them by mistake changes the result.
    query = _split(query_paths, [9, 1, 2, 3, 4], [1, 1, 1, 2, 2])
    gallery_identity_IDs = [1, 2, 3, 9, 4, 1, 9, 2, 3, 4]
    gallery = _split(gallery_paths, gallery_identity_IDs, [2, 2, 1, 2, 1, 1, 2, 2, 1, 1])
    model = _tiny_model()
    features_file_path = str(tmp_path / "features.npz")

    metrics = evaluate_model(
        model,
        query,
        gallery,
        image_height=IMAGE_HEIGHT,
        image_width=IMAGE_WIDTH,
        batch_size=3,
        features_file_path=features_file_path,
        verbose=0,
    )

    assert metrics[SKIPPED_QUERY_KEY] == [query_paths[0]]
    assert metrics[SKIPPED_GALLERY_KEY] == [gallery_paths[3], gallery_paths[6]]
    # Reference: the kept rows' records with features of the decoded pixels, scored directly.
    kept_query, kept_gallery = query.iloc[query_rows], gallery.iloc[gallery_rows]
    query_features = model.predict(query_images.astype(np.float32), verbose=0)
    gallery_features = model.predict(gallery_images.astype(np.float32), verbose=0)
    reference = evaluate_features(
        query_features,
        gallery_features,
        kept_query["identity_ID"].to_numpy(),
        kept_gallery["identity_ID"].to_numpy(),
        kept_query["camera_ID"].to_numpy(),
        kept_gallery["camera_ID"].to_numpy(),
    )
    for key, value in reference.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key
    assert metrics["num_valid_queries"] == 4
    saved = np.load(features_file_path)
    np.testing.assert_allclose(saved["gallery_features"], gallery_features, atol=1e-4)
    assert saved["query_image_file_paths"].tolist() == [query_paths[row] for row in query_rows]
    kept_gallery_identity_IDs = [gallery_identity_IDs[row] for row in gallery_rows]
    assert saved["gallery_identity_IDs"].tolist() == kept_gallery_identity_IDs


def test_evaluate_model_names_a_split_with_no_decodable_image(tmp_path):
    _, file_paths, _ = _mixed_file_paths(tmp_path, 2, {2: "corrupt_jpeg", 3: "corrupt_png"})
    query = _split(file_paths[:2], [1, 2], [1, 1])
    gallery = _split(file_paths[2:], [1, 2], [2, 2])
    with pytest.raises(ValueError, match="None of the 2 gallery images.*bad_2.jpg"):
        evaluate_model(
            _tiny_model(),
            query,
            gallery,
            image_height=IMAGE_HEIGHT,
            image_width=IMAGE_WIDTH,
            verbose=0,
        )


def _planted_features(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 16))
    query_identity_IDs = np.repeat(np.arange(6), 2)
    gallery_identity_IDs = np.concatenate([np.repeat(np.arange(6), 3), [0, 0]])
    query_features = centres[query_identity_IDs] + 0.8 * rng.normal(size=(12, 16))
    gallery_features = centres[gallery_identity_IDs] + 0.8 * rng.normal(size=(20, 16))
    query_camera_IDs = np.tile([1, 2], 6)
    gallery_camera_IDs = rng.integers(1, 4, size=20)
    return (
        query_features.astype(np.float32),
        gallery_features.astype(np.float32),
        query_identity_IDs,
        gallery_identity_IDs,
        query_camera_IDs,
        gallery_camera_IDs,
    )


@pytest.mark.parametrize("distance_metric", ["cosine", "euclidean"])
def test_evaluate_features_reports_the_engine_results_under_flat_names(distance_metric):
    inputs = _planted_features()
    metrics = evaluate_features(*inputs, distance_metric=distance_metric, use_re_ranking=True)
    distmat = compute_distance_matrix(inputs[0], inputs[1], metric=distance_metric)
    reference = evaluate_ranking(distmat, *inputs[2:], max_rank=20)
    for rank in (1, 5, 10, 20):
        assert metrics[f"rank{rank}"] == pytest.approx(reference.cmc[rank - 1])
        assert 0 <= metrics[f"re_ranking_rank{rank}"] <= 1
    assert metrics["mAP"] == pytest.approx(reference.mAP)
    assert metrics["mINP"] == pytest.approx(reference.mINP)
    assert metrics["num_excluded_queries"] == reference.num_excluded_queries
    assert 0 <= metrics["re_ranking_mAP"] <= 1


def test_format_metrics_shows_both_rankings_and_the_excluded_queries():
    text = format_metrics(
        {
            "rank1": 0.5,
            "rank5": 0.75,
            "mAP": 0.25,
            "mINP": 0.125,
            "re_ranking_rank1": 0.6,
            "re_ranking_mAP": 0.3,
            "num_excluded_queries": 2,
        },
        "Title:",
    )
    lines = text.splitlines()
    assert lines[0] == "Title:"
    assert "rank-1 50.00%" in lines[1] and "rank-5 75.00%" in lines[1]
    assert "mAP 25.00%" in lines[1] and "mINP 12.50%" in lines[1]
    assert "re-ranked" in lines[2] and "rank-1 60.00%" in lines[2] and "mAP 30.00%" in lines[2]
    assert lines[3].strip().startswith("2 queries had no correct match")
