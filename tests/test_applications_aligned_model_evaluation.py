"""Local-branch (AlignedReID) evaluation leaves undecodable query and gallery images out."""

import cv2
import numpy as np
import pandas as pd
import pytest

from applications.aligned_model_evaluation import evaluate_models
from applications.model import build_flipreid_models
from applications.model_evaluation import SKIPPED_GALLERY_KEY, SKIPPED_QUERY_KEY
from evaluation.aligned_evaluation import evaluate_aligned_features
from evaluation.report import evaluate_features
from tests.dataset_fixtures import write_bad_image_file

IMAGE_HEIGHT, IMAGE_WIDTH = 64, 32


def _write_split(folder_path, identity_IDs, camera_IDs, corrupt_row, rng):
    """PNG images at the model's size (decoding and resizing change nothing), one corrupt JPEG."""
    folder_path.mkdir()
    file_paths, images = [], {}
    for row in range(len(identity_IDs)):
        if row == corrupt_row:
            file_paths.append(
                write_bad_image_file(str(folder_path / f"{row:02d}.jpg"), "corrupt_jpeg")
            )
            continue
        image = rng.integers(0, 256, (IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
        file_path = str(folder_path / f"{row:02d}.png")
        cv2.imwrite(file_path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        file_paths.append(file_path)
        images[row] = image
    split = pd.DataFrame(
        {"image_file_path": file_paths, "identity_ID": identity_IDs, "camera_ID": camera_IDs}
    )
    return split, images


def test_local_branch_evaluation_leaves_the_corrupt_images_out(tmp_path):
    rng = np.random.default_rng(0)
    query, query_images = _write_split(tmp_path / "query", [1, 2, 3], [1, 1, 1], 1, rng)
    gallery, gallery_images = _write_split(
        tmp_path / "gallery", [1, 3, 2, 1, 3], [2, 2, 2, 2, 2], 3, rng
    )
    _, inference_model = build_flipreid_models(
        "resnet18", IMAGE_HEIGHT, IMAGE_WIDTH, 3, use_local_branch=True, local_feature_dim=8
    )
    features_file_path = str(tmp_path / "features.npz")
    metrics = evaluate_models(
        [inference_model],
        query,
        gallery,
        image_height=IMAGE_HEIGHT,
        image_width=IMAGE_WIDTH,
        batch_size=2,
        features_file_path=features_file_path,
        verbose=0,
    )

    assert metrics[SKIPPED_QUERY_KEY] == [query["image_file_path"][1]]
    assert metrics[SKIPPED_GALLERY_KEY] == [gallery["image_file_path"][3]]

    # Reference: the model run directly on the decodable images, scored with their own records.
    query_rows, gallery_rows = sorted(query_images), sorted(gallery_images)
    query_global, query_local = (
        output.numpy()
        for output in inference_model(
            np.stack([query_images[row] for row in query_rows]), training=False
        )
    )
    gallery_global, gallery_local = (
        output.numpy()
        for output in inference_model(
            np.stack([gallery_images[row] for row in gallery_rows]), training=False
        )
    )
    kept_query, kept_gallery = query.iloc[query_rows], gallery.iloc[gallery_rows]
    expected = evaluate_aligned_features(
        query_global,
        gallery_global,
        query_local,
        gallery_local,
        kept_query["identity_ID"].to_numpy(),
        kept_gallery["identity_ID"].to_numpy(),
        kept_query["camera_ID"].to_numpy(),
        kept_gallery["camera_ID"].to_numpy(),
        distance_metric="cosine",
        use_re_ranking=False,
        cmc_config="market1501",
    )
    assert metrics["num_valid_queries"] == 2
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-5), key

    with np.load(features_file_path) as features:
        np.testing.assert_array_equal(
            features["query_image_file_paths"], kept_query["image_file_path"].to_numpy(dtype=str)
        )
        np.testing.assert_array_equal(
            features["gallery_identity_IDs"], kept_gallery["identity_ID"].to_numpy()
        )
        np.testing.assert_allclose(features["query_features"], query_global, atol=1e-5)
        np.testing.assert_allclose(features["gallery_local_features"], gallery_local, atol=1e-5)


@pytest.mark.parametrize("use_local_branch", [False, True])
def test_normalize_feature_normalises_the_global_features_at_test_time(tmp_path, use_local_branch):
    rng = np.random.default_rng(1)
    query, query_images = _write_split(tmp_path / "query", [1, 2, 3], [1, 1, 1], None, rng)
    gallery, gallery_images = _write_split(
        tmp_path / "gallery", [1, 3, 2, 1, 3, 2], [2, 2, 2, 2, 2, 2], None, rng
    )
    extra = dict(use_local_branch=True, local_feature_dim=8) if use_local_branch else {}
    _, inference_model = build_flipreid_models("resnet18", IMAGE_HEIGHT, IMAGE_WIDTH, 3, **extra)
    metrics = evaluate_models(
        [inference_model],
        query,
        gallery,
        image_height=IMAGE_HEIGHT,
        image_width=IMAGE_WIDTH,
        batch_size=4,
        distance_metric="euclidean",
        use_re_ranking=True,
        normalize_feature=True,
        features_file_path=str(tmp_path / "features.npz"),
        verbose=0,
    )
    outputs = [
        inference_model(np.stack(list(images.values())), training=False)
        for images in (query_images, gallery_images)
    ]
    if use_local_branch:
        outputs = [output[0] for output in outputs]
    # AlignedReID's normalize(): x / (||x|| + float32 epsilon), then Euclidean distances.
    unit = [
        output.numpy() / (np.linalg.norm(output.numpy(), axis=1, keepdims=True) + 1.1920929e-07)
        for output in outputs
    ]
    expected = evaluate_features(
        *unit,
        query["identity_ID"].to_numpy(),
        gallery["identity_ID"].to_numpy(),
        query["camera_ID"].to_numpy(),
        gallery["camera_ID"].to_numpy(),
        distance_metric="euclidean",
        use_re_ranking=True,
    )
    for key in ("mAP", "rank1", "re_ranking_mAP"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-5), key
    # features.npz keeps the features as the model gives them.
    with np.load(tmp_path / "features.npz") as features:
        np.testing.assert_allclose(features["query_features"], outputs[0].numpy(), atol=1e-5)
