"""The one embedding path (flip-averaged forward function, extraction loop) against plain calls."""

import cv2
import numpy as np
import pytest

from applications.core.backend import keras, tf
from applications.embedding import (
    embed_images,
    embedding_function,
    embedding_model,
    extract_embeddings,
)
from datasets.image_files import SkippedImageLog
from tests.dataset_fixtures import write_bad_image_file

IMAGE_HEIGHT, IMAGE_WIDTH = 8, 4


def _two_output_model():
    """images -> [(B, 5) embedding, (B, H, 2) row features], not symmetric under a flip."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((IMAGE_HEIGHT, IMAGE_WIDTH, 3))
    embedding = keras.layers.Dense(5)(keras.layers.Flatten()(inputs))
    rows = keras.layers.Reshape((IMAGE_HEIGHT, IMAGE_WIDTH * 3))(inputs)
    local = keras.layers.Dense(2)(rows)
    return keras.Model(inputs, [embedding, local])


def _random_images(num_images, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (num_images, IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)


def _float32_tolerance(reference):
    """Absolute tolerance for float32 sums whose terms reach the reference's largest value.

    Batched and one-image calls sum in different orders, so an output near zero that comes from
    terms in the hundreds differs by a few float32 steps of those terms (about 7e-5 at 400).
    """
    return 4e-6 * float(np.abs(reference).max())


def _plain_outputs(model, images):
    """Each output of the model on the images, one plain call per image (float64)."""
    per_image = [model(image[None].astype(np.float32)) for image in images]
    return [
        np.concatenate([np.asarray(outputs[o], np.float64) for outputs in per_image])
        for o in range(len(per_image[0]))
    ]


@pytest.mark.parametrize("use_horizontal_flipping", [False, True])
def test_embed_images_averages_every_output_with_the_mirrored_images(use_horizontal_flipping):
    model = _two_output_model()
    images = _random_images(3)
    expected = _plain_outputs(model, images)
    if use_horizontal_flipping:
        flipped = _plain_outputs(model, images[:, :, ::-1])
        # The flip must matter for this model, or the check proves nothing.
        assert not np.allclose(expected[0], flipped[0])
        expected = [(a + b) / 2 for a, b in zip(expected, flipped)]

    outputs = embed_images(model, tf.constant(images), use_horizontal_flipping)

    assert isinstance(outputs, list) and len(outputs) == 2
    for output, reference in zip(outputs, expected):
        assert output.dtype == tf.float32
        np.testing.assert_allclose(
            output.numpy(), reference, rtol=1e-5, atol=_float32_tolerance(reference)
        )
    # The embedding-only view gives one tensor, the first output's.
    single = embed_images(embedding_model(model), tf.constant(images), use_horizontal_flipping)
    np.testing.assert_allclose(
        single.numpy(), expected[0], rtol=1e-5, atol=_float32_tolerance(expected[0])
    )


def test_embedding_function_is_traced_once_per_model_and_flip_setting():
    model = _two_output_model()
    function = embedding_function(model, True)
    assert embedding_function(model, True) is function
    assert embedding_function(model, False) is not function
    images = _random_images(5)
    for batch_size in (1, 5):
        function(tf.constant(images[:batch_size]))
    # One input signature with a free batch size: every batch reuses the one trace.
    assert function.experimental_get_tracing_count() == 1


def test_extract_embeddings_keeps_file_order_and_leaves_undecodable_files_out(tmp_path):
    images = _random_images(5, seed=1)
    file_paths, good_rows = [], []
    for index, image in enumerate(images):
        if index == 2:
            file_paths.append(write_bad_image_file(str(tmp_path / "bad.jpg"), "corrupt_jpeg"))
        file_paths.append(str(tmp_path / f"{index}.png"))
        cv2.imwrite(file_paths[-1], cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        good_rows.append(len(file_paths) - 1)
    # A bad file last: the final batch holds no decodable image.
    file_paths.append(write_bad_image_file(str(tmp_path / "bad_last.jpg"), "header_only_jpeg"))
    model = _two_output_model()
    log = SkippedImageLog("Tiny")

    (embeddings, local), positions = extract_embeddings(
        model,
        file_paths,
        image_height=IMAGE_HEIGHT,
        image_width=IMAGE_WIDTH,
        batch_size=2,
        use_horizontal_flipping=True,
        verbose=0,
        skipped_images=log,
    )

    assert positions.dtype == np.int64 and positions.tolist() == good_rows
    expected = [
        (a + b) / 2
        for a, b in zip(_plain_outputs(model, images), _plain_outputs(model, images[:, :, ::-1]))
    ]
    assert embeddings.dtype == np.float32 and local.shape == (5, IMAGE_HEIGHT, 2)
    np.testing.assert_allclose(
        embeddings, expected[0], rtol=1e-5, atol=_float32_tolerance(expected[0])
    )
    np.testing.assert_allclose(local, expected[1], rtol=1e-5, atol=_float32_tolerance(expected[1]))
    assert log.skipped_file_paths == [str(tmp_path / "bad.jpg"), str(tmp_path / "bad_last.jpg")]


def test_extract_embeddings_of_only_undecodable_files_gives_empty_outputs(tmp_path):
    file_paths = [write_bad_image_file(str(tmp_path / "bad.jpg"), "corrupt_jpeg")]
    (embeddings, local), positions = extract_embeddings(
        _two_output_model(),
        file_paths,
        image_height=IMAGE_HEIGHT,
        image_width=IMAGE_WIDTH,
        verbose=0,
        skipped_images=SkippedImageLog("Tiny"),
    )
    assert embeddings.shape == (0, 5) and local.shape == (0, IMAGE_HEIGHT, 2)
    assert positions.shape == (0,) and positions.dtype == np.int64
