"""Feature extraction (with flip averaging) and the metric report built on the NumPy engine."""

import cv2
import numpy as np
import pytest

from applications.backend import keras
from applications.model_evaluation import extract_features
from evaluation.distances import compute_distance_matrix
from evaluation.metrics import evaluate_ranking
from evaluation.report import evaluate_features, format_metrics

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
