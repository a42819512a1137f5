"""Images decode to exactly the pixels FlipReID reads with `cv2.imread`."""

import cv2
import numpy as np
import pytest

from applications.core.backend import tf
from datasets.pipeline import build_testing_dataset, decode_and_resize

# (height, width, JPEG quality, chroma sampling factor) of cv2-written test files.
JPEG_CASES = [
    (128, 64, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420),
    (97, 41, 75, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420),
    (64, 32, 60, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
    (50, 30, 90, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422),
]


def _random_picture(rng, height, width):
    """Smooth colour regions plus noise: content where the inverse DCT variants disagree."""
    coarse = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(float)
    return np.clip(smooth + rng.normal(0.0, 25.0, smooth.shape), 0, 255).astype(np.uint8)


def _cv2_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def jpeg_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    paths = []
    for index, (height, width, quality, sampling) in enumerate(JPEG_CASES):
        path = folder / f"image_{index}.jpg"
        parameters = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling]
        assert cv2.imwrite(str(path), _random_picture(rng, height, width), parameters)
        paths.append(path)
    grey_path = folder / "grey.jpg"
    assert cv2.imwrite(str(grey_path), _random_picture(rng, 40, 20)[..., 0])
    paths.append(grey_path)
    return paths


def test_jpeg_pixels_equal_cv2_imread(jpeg_files):
    for path in jpeg_files:
        expected = _cv2_rgb(path)
        height, width = expected.shape[:2]
        # At the image's own size the resize is the identity, so these are the decoded pixels.
        decoded = decode_and_resize(tf.constant(str(path)), height, width).numpy()
        np.testing.assert_array_equal(decoded, expected, err_msg=str(path))


def test_the_default_tensorflow_decoder_would_differ(jpeg_files):
    # Guards the test above against content on which every decoder agrees.
    differing = [
        not np.array_equal(
            tf.io.decode_image(tf.io.read_file(str(path)), channels=3).numpy(), _cv2_rgb(path)
        )
        for path in jpeg_files
    ]
    assert any(differing)


def test_testing_pipeline_and_png_files_give_cv2_pixels(jpeg_files, tmp_path):
    rng = np.random.default_rng(1)
    png_path = tmp_path / "image.png"
    assert cv2.imwrite(str(png_path), _random_picture(rng, 128, 64))
    paths = [str(jpeg_files[0]), str(png_path)]
    (images,) = [
        batch.numpy()
        for batch in build_testing_dataset(paths, image_height=128, image_width=64, batch_size=2)
    ]
    for image, path in zip(images, paths, strict=True):
        np.testing.assert_array_equal(image, _cv2_rgb(path))


@pytest.mark.parametrize(
    "source_size, target_size",
    [
        ((128, 64), (384, 128)),  # Market-1501 at FlipReID's default size
        ((256, 128), (128, 64)),  # exact 2x: OpenCV's area path
        ((128, 64), (128, 64)),  # identity
        ((97, 41), (256, 128)),
        ((300, 150), (256, 100)),
        ((1, 1), (4, 3)),
    ],
)
def test_resize_like_cv2_equals_cv2_resize(source_size, target_size):
    from datasets.resizing import resize_like_cv2

    rng = np.random.default_rng(sum(source_size + target_size))
    image = rng.integers(0, 256, (*source_size, 3), dtype=np.uint8)
    expected = cv2.resize(image, target_size[::-1])  # INTER_LINEAR, FlipReID's call
    np.testing.assert_array_equal(resize_like_cv2(image, *target_size).numpy(), expected)
    if source_size != target_size and source_size != (1, 1):
        # tf.image.resize's floating-point bilinear lands one level away on some values.
        floating = tf.cast(tf.round(tf.image.resize(image, target_size)), tf.uint8).numpy()
        assert np.abs(floating.astype(int) - expected).max() <= 1


def test_resize_like_cv2_on_a_batch_equals_cv2_on_each_image():
    from datasets.resizing import resize_like_cv2

    images = np.random.default_rng(7).integers(0, 256, (3, 50, 41, 3), dtype=np.uint8)
    expected = np.stack([cv2.resize(image, (64, 128)) for image in images])
    np.testing.assert_array_equal(resize_like_cv2(images, 128, 64).numpy(), expected)


def test_training_pipeline_resizes_files_to_cv2_pixels(jpeg_files):
    """FlipReID reads a file with cv2.imread then cv2.resize; so does every pipeline here."""
    from datasets.pipeline import decode_and_resize

    for path in jpeg_files[:2]:
        image = decode_and_resize(tf.constant(str(path)), 96, 40).numpy()
        np.testing.assert_array_equal(image, cv2.resize(_cv2_rgb(path), (40, 96)))
