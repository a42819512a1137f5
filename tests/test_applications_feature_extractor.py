"""FeatureExtractor: a run folder's weights rebuilt from model_config.json, on files and arrays."""

import json
import os

import cv2
import numpy as np
import pytest

from applications.core.backend import tf
from applications.feature_extractor import (
    FeatureExtractor,
    extract_folder,
    format_extraction_summary,
    list_image_files,
    load_features,
)
from applications.model import build_flipreid_models
from applications.model_evaluation import extract_features

MODEL_CONFIG = dict(
    backbone_name="resnet18",
    image_height=64,
    image_width=32,
    num_identities=5,
    region_num=2,
    pooling_mode="GeM",
    gem_initial_power=3.0,
    min_value=None,
    max_value=None,
    use_horizontal_flipping_inside_model=True,
)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder as training leaves it, with random (but not initial) weights."""
    folder = tmp_path_factory.mktemp("run")
    training_model, inference_model = build_flipreid_models(**MODEL_CONFIG)
    # Move BatchNormalization statistics off their initial values, so a model that silently
    # kept its fresh weights would not pass.
    for layer in inference_model.submodules:
        if hasattr(layer, "moving_mean"):
            layer.moving_mean.assign(tf.random.normal(layer.moving_mean.shape, stddev=0.1))
    inference_model.save_weights(str(folder / "inference_model.h5"))
    training_model.save_weights(str(folder / "training_model.h5"))
    with open(folder / "model_config.json", "w") as file:
        json.dump(MODEL_CONFIG, file)
    with open(folder / "flags.json", "w") as file:
        json.dump({"use_horizontal_flipping_in_evaluation": False}, file)
    return folder, inference_model


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Five small PNGs of different sizes in two sub-folders."""
    folder = tmp_path_factory.mktemp("images")
    random = np.random.default_rng(0)
    arrays, paths = [], []
    for index, (height, width) in enumerate([(80, 40), (64, 32), (50, 30), (128, 64), (33, 17)]):
        array = random.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        sub_folder = folder / ("a" if index % 2 else "b")
        sub_folder.mkdir(exist_ok=True)
        path = str(sub_folder / f"image_{index}.png")
        cv2.imwrite(path, cv2.cvtColor(array, cv2.COLOR_RGB2BGR))
        arrays.append(array)
        paths.append(path)
    return folder, arrays, paths


def _reference_features(inference_model, arrays, use_flipping):
    """The inference model on each array resized by OpenCV, as FlipReID reads files."""
    rows = []
    for array in arrays:
        image = tf.constant(cv2.resize(array, (32, 64)))[None]
        embedding = inference_model(image, training=False).numpy()
        if use_flipping:
            flipped = inference_model(tf.image.flip_left_right(image), training=False).numpy()
            embedding = (embedding + flipped) / 2
        rows.append(embedding[0])
    return np.stack(rows)


def test_files_and_arrays_give_the_evaluation_features(run_folder, image_folder):
    folder, inference_model = run_folder
    _, arrays, paths = image_folder
    extractor = FeatureExtractor(folder / "inference_model.h5", use_horizontal_flipping=True)

    from_files = extractor(paths)
    from_arrays = extractor(arrays)

    expected = _reference_features(inference_model, arrays, use_flipping=True)
    assert from_files.dtype == np.float32 and from_files.shape == (5, 1024)
    np.testing.assert_allclose(from_files, expected, atol=1e-5)
    np.testing.assert_allclose(from_arrays, expected, atol=1e-5)
    evaluation = extract_features(
        inference_model,
        paths,
        image_height=64,
        image_width=32,
        use_horizontal_flipping=True,
        verbose=0,
    )
    np.testing.assert_allclose(from_files, evaluation, atol=1e-5)


def test_flip_setting_defaults_to_the_runs_and_one_image_gives_one_row(run_folder, image_folder):
    folder, inference_model = run_folder
    _, arrays, paths = image_folder
    extractor = FeatureExtractor(str(folder / "inference_model.h5"))

    assert extractor.use_horizontal_flipping is False  # flags.json of the run says so
    expected = _reference_features(inference_model, arrays[:1], use_flipping=False)
    np.testing.assert_allclose(extractor(paths[0]), expected, atol=1e-5)
    np.testing.assert_allclose(extractor(arrays[0]), expected, atol=1e-5)


def test_training_model_weights_give_the_same_features(run_folder, image_folder):
    folder, _ = run_folder
    _, arrays, _ = image_folder
    from_inference = FeatureExtractor(folder / "inference_model.h5")(arrays)
    from_training = FeatureExtractor(folder / "training_model.h5")(arrays)
    np.testing.assert_array_equal(from_training, from_inference)


def test_unreadable_files_are_skipped_counted_and_named(run_folder, image_folder, tmp_path):
    folder, _ = run_folder
    _, arrays, paths = image_folder
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("not an image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(paths[0], "rb").read()[:200])
    missing = str(tmp_path / "missing.png")
    extractor = FeatureExtractor(folder / "inference_model.h5")
    mixed = [paths[0], str(text_file), paths[1], str(truncated), missing, paths[2]]

    features, kept, unreadable = extractor.extract_files(mixed, verbose=0)

    assert kept == paths[:3]
    assert unreadable == [str(text_file), str(truncated), missing]
    np.testing.assert_allclose(features, extractor(arrays[:3]), atol=1e-5)
    with pytest.raises(ValueError, match="notes.jpg"):
        extractor(mixed)


def test_extract_folder_writes_one_npz_and_never_overwrites(run_folder, image_folder, tmp_path):
    folder, _ = run_folder
    images_path, arrays, paths = image_folder
    (images_path / "readme.txt").write_text("not an image")
    broken = images_path / "a" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    extractor = FeatureExtractor(folder / "inference_model.h5")
    features_file_path = str(tmp_path / "out" / "gallery.npz")

    summary = extract_folder(extractor, str(images_path), features_file_path, verbose=0)

    features, stored_paths, description = load_features(features_file_path)
    assert stored_paths == sorted(paths)
    assert summary["unreadable_image_file_paths"] == [str(broken)]
    assert summary["num_other_files"] == 1 and summary["num_images"] == 5
    order = [paths.index(path) for path in stored_paths]
    np.testing.assert_allclose(features, extractor([arrays[i] for i in order]), atol=1e-5)
    assert description["model_config"]["backbone_name"] == "resnet18"
    text = format_extraction_summary(summary)
    assert "Skipped 1 unreadable image file(s)" in text and "broken.jpg" in text
    with pytest.raises(FileExistsError, match="gallery.npz"):
        extract_folder(extractor, str(images_path), features_file_path, verbose=0)
    broken.unlink()
    (images_path / "readme.txt").unlink()


def test_list_image_files_is_sorted_and_recursive(tmp_path):
    (tmp_path / "z").mkdir()
    for name in ["z/b.PNG", "a.jpg", "c.txt", "z/a.jpeg"]:
        (tmp_path / name).write_bytes(b"")
    image_file_paths, num_other_files = list_image_files(str(tmp_path))
    assert [os.path.relpath(path, tmp_path) for path in image_file_paths] == [
        "a.jpg",
        "z/a.jpeg",
        "z/b.PNG",
    ]
    assert num_other_files == 1
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        list_image_files(str(tmp_path / "no_such_folder"))


def test_missing_config_and_mismatched_weights_get_clear_errors(run_folder, tmp_path):
    folder, _ = run_folder
    lone_weights = tmp_path / "inference_model.h5"
    lone_weights.write_bytes(open(folder / "inference_model.h5", "rb").read())
    with pytest.raises(FileNotFoundError, match="model_config.json"):
        FeatureExtractor(lone_weights)
    with pytest.raises(FileNotFoundError, match="No weights file"):
        FeatureExtractor(tmp_path / "nothing.h5")
    with open(tmp_path / "model_config.json", "w") as file:
        json.dump({**MODEL_CONFIG, "region_num": 3}, file)
    with pytest.raises(ValueError, match="does not fit"):
        FeatureExtractor(lone_weights)
    with open(tmp_path / "model_config.json", "w") as file:
        json.dump({"backbone_name": "resnet18"}, file)
    with pytest.raises(ValueError, match="lacks the model settings"):
        FeatureExtractor(lone_weights)


def test_arrays_that_are_not_rgb_are_refused(run_folder):
    folder, _ = run_folder
    extractor = FeatureExtractor(folder / "inference_model.h5")
    with pytest.raises(ValueError, match=r"Image 1 must be a numeric RGB array"):
        extractor([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match="not a mixture"):
        extractor(["a.jpg", np.zeros((8, 8, 3), np.uint8)])


def test_weights_of_one_model_of_several_find_the_runs_config(run_folder, image_folder):
    folder, _ = run_folder
    _, arrays, _ = image_folder
    # A --model_num run keeps model_<i>/inference_model.h5 below its model_config.json.
    (folder / "model_1").mkdir(exist_ok=True)
    model_weights = folder / "model_1" / "inference_model.h5"
    model_weights.write_bytes((folder / "inference_model.h5").read_bytes())

    features = FeatureExtractor(model_weights)(arrays[:2])

    np.testing.assert_array_equal(
        features, FeatureExtractor(folder / "inference_model.h5")(arrays[:2])
    )
