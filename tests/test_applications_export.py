"""Serving export: the signature's resize and flip, and SavedModel / ONNX parity with TensorFlow."""

import json
import os

import cv2
import numpy as np
import pytest

from applications import export
from applications.core.backend import tf
from applications.model import build_flipreid_models

IMAGE_HEIGHT, IMAGE_WIDTH = 64, 32


@pytest.fixture(scope="module")
def inference_model():
    _, model = build_flipreid_models(
        "resnet18", IMAGE_HEIGHT, IMAGE_WIDTH, 5, min_value=0.0, max_value=1.0
    )
    return model


def _images(num_images, height, width, seed=0):
    random = np.random.default_rng(seed)
    small = random.integers(0, 256, size=(num_images, 6, 3, 3), dtype=np.uint8)
    return np.stack([cv2.resize(image, (width, height)) for image in small])


def _reference(inference_model, images, use_flipping):
    """What evaluation computes: resize each image as cv2.resize does, embed, flip-average."""
    resized = tf.constant(
        np.stack([cv2.resize(image, (IMAGE_WIDTH, IMAGE_HEIGHT)) for image in images])
    )
    embeddings = inference_model(resized, training=False).numpy()
    if use_flipping:
        flipped = inference_model(tf.image.flip_left_right(resized), training=False).numpy()
        embeddings = (embeddings + flipped) / 2
    return embeddings


@pytest.mark.parametrize("use_flipping", [False, True])
def test_serving_signature_resizes_any_size_and_flips_inside(inference_model, use_flipping):
    module = export.ServingModule(inference_model, IMAGE_HEIGHT, IMAGE_WIDTH, use_flipping)
    for height, width in [(128, 64), (50, 41)]:
        images = _images(3, height, width)
        served = module.serve(tf.constant(images))[export.OUTPUT_NAME].numpy()
        assert served.dtype == np.float32 and served.shape == (3, 1024)
        np.testing.assert_allclose(
            served, _reference(inference_model, images, use_flipping), atol=1e-5
        )


def test_parity_images_are_real_images_of_the_most_common_size(tmp_path):
    paths = []
    for index, size in enumerate([(40, 20), (60, 30), (60, 30), (40, 20), (60, 30)]):
        path = str(tmp_path / f"{index}.png")
        cv2.imwrite(path, _images(1, *size, seed=index)[0][..., ::-1])
        paths.append(path)
    (tmp_path / "bad.png").write_text("no")
    images = export.read_parity_images([str(tmp_path / "bad.png"), *paths], num_images=10)
    assert images.shape == (3, 60, 30, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[0], _images(1, 60, 30, seed=1)[0])
    with pytest.raises(ValueError, match="could be read"):
        export.read_parity_images([str(tmp_path / "bad.png")])


def test_parity_failure_names_the_format_and_keeps_the_files(
    inference_model, tmp_path, monkeypatch
):
    # Stand-ins for the slow writers: this test is about the check, not the conversion.
    import tf2onnx

    monkeypatch.setattr(tf.saved_model, "save", lambda module, path, signatures: os.mkdir(path))
    monkeypatch.setattr(
        tf2onnx.convert,
        "from_function",
        lambda function, input_signature, opset, output_path: open(output_path, "w").close(),
    )
    images = _images(2, 70, 30)
    reference = _reference(inference_model, images, True)
    monkeypatch.setattr(export, "run_onnx_model", lambda path, batch: reference + 2e-4)
    monkeypatch.setattr(export, "run_saved_model", lambda path, batch: reference)

    with pytest.raises(export.ExportParityError, match=r"ONNX differs .* up to 0.0002"):
        export.export_inference_model(
            inference_model,
            str(tmp_path / "export"),
            image_height=IMAGE_HEIGHT,
            image_width=IMAGE_WIDTH,
            parity_images=images,
        )
    with open(tmp_path / "export" / export.EXPORT_CONFIG_FILE_NAME) as file:
        parity = json.load(file)["parity"]
    assert parity["onnx_max_abs_difference"] == pytest.approx(2e-4, rel=1e-2)
    assert parity["saved_model_max_abs_difference"] <= 1e-5
    with pytest.raises(FileExistsError, match="left untouched"):
        export.export_inference_model(
            inference_model,
            str(tmp_path / "export"),
            image_height=IMAGE_HEIGHT,
            image_width=IMAGE_WIDTH,
            parity_images=images,
        )


@pytest.mark.slow
def test_onnx_and_saved_model_match_tensorflow(inference_model, tmp_path):
    parity_images = _images(4, 128, 64, seed=3)
    summary = export.export_inference_model(
        inference_model,
        str(tmp_path / "export"),
        image_height=IMAGE_HEIGHT,
        image_width=IMAGE_WIDTH,
        use_horizontal_flipping=True,
        parity_images=parity_images,
    )
    assert summary["onnx_max_abs_difference"] <= 1e-4
    assert summary["saved_model_max_abs_difference"] <= 1e-4

    # Held-out images of another size, against an independent TensorFlow reference.
    held_out = _images(3, 90, 45, seed=4)
    expected = _reference(inference_model, held_out, use_flipping=True)
    onnx_embeddings = export.run_onnx_model(summary["onnx_file_path"], held_out)
    saved_model_embeddings = export.run_saved_model(summary["saved_model_folder_path"], held_out)
    assert np.max(np.abs(onnx_embeddings - expected)) <= 1e-4
    assert np.max(np.abs(saved_model_embeddings - expected)) <= 1e-4
    with open(summary["export_config_file_path"]) as file:
        config = json.load(file)
    assert config["output"]["shape"] == [None, 1024] and config["use_horizontal_flipping"]
    assert "onnxruntime" in export.format_export_summary(summary)
