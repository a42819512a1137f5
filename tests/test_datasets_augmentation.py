"""Each augmentation at probability 1 and 0 against hand-checked results."""

import numpy as np
import pytest

from datasets.augmentation import (
    IMAGENET_MEAN_RGB,
    AlbumentationsAugmentor,
    compute_padding_size,
)

HEIGHT, WIDTH = 40, 20
ALL_OFF = dict(
    random_crop_probability=0.0,
    horizontal_flip_probability=0.0,
    patch_replacement_probability=0.0,
    random_erasing_probability=0.0,
)
MEAN_UINT8 = np.round(IMAGENET_MEAN_RGB).astype(np.uint8)


@pytest.fixture
def image():
    # Channels in disjoint ranges: no pixel is gray (R=G=B) or equal to the ImageNet mean.
    rng = np.random.default_rng(0)
    return np.stack(
        [
            rng.integers(0, 60, (HEIGHT, WIDTH)),
            rng.integers(140, 200, (HEIGHT, WIDTH)),
            rng.integers(210, 256, (HEIGHT, WIDTH)),
        ],
        axis=-1,
    ).astype(np.uint8)


def _augment(image, seed=3, **probabilities):
    kwargs = {**ALL_OFF, **probabilities}
    augmentor = AlbumentationsAugmentor(HEIGHT, WIDTH, **kwargs)
    out = augmentor(image, np.array([0, seed]))
    assert out.dtype == np.uint8 and out.shape == image.shape
    return out


def _changed_rectangle(before, after):
    """(top, left, height, width) bounding the changed pixels, asserting they fill it."""
    changed = (before != after).any(axis=-1)
    rows, columns = np.nonzero(changed)
    assert rows.size > 0, "nothing changed"
    top, left = rows.min(), columns.min()
    height, width = rows.max() - top + 1, columns.max() - left + 1
    assert changed[top : top + height, left : left + width].all(), "changed area not a rectangle"
    return top, left, height, width


def test_all_probabilities_zero_is_identity(image):
    assert np.array_equal(_augment(image), image)


def test_flip_with_probability_one_is_fliplr(image):
    assert np.array_equal(_augment(image, horizontal_flip_probability=1.0), np.fliplr(image))


def test_pad_and_crop_is_a_window_of_the_mean_padded_image(image):
    padding_height, padding_width = compute_padding_size(HEIGHT, WIDTH, 0, 0.05)
    assert (padding_height, padding_width) == (2, 1)
    found_shifted = False
    for seed in range(8):
        out = _augment(image, seed=seed, random_crop_probability=1.0)
        padded = np.empty((HEIGHT + 2 * padding_height, WIDTH + 2 * padding_width, 3), np.uint8)
        padded[:] = MEAN_UINT8
        padded[padding_height : padding_height + HEIGHT, padding_width : padding_width + WIDTH] = (
            image
        )
        # The window may start anywhere the padding allows (centred padding of 1 / 2 per side).
        matches = [
            (dy, dx)
            for dy in range(2 * padding_height + 1)
            for dx in range(2 * padding_width + 1)
            if np.array_equal(out, padded[dy : dy + HEIGHT, dx : dx + WIDTH])
        ]
        assert matches, f"seed {seed}: output is not a window of the padded image"
        found_shifted |= matches[0] != (padding_height, padding_width)
    assert found_shifted


def test_grayscale_patch_makes_a_gray_rectangle(image):
    out = _augment(image, patch_replacement_probability=1.0)
    top, left, height, width = _changed_rectangle(image, out)
    patch = out[top : top + height, left : left + width].astype(int)
    assert (patch[..., 0] == patch[..., 1]).all() and (patch[..., 1] == patch[..., 2]).all()
    # ITU-R 601 luma of the original pixels, as cv2 and tf.image compute it.
    original = image[top : top + height, left : left + width].astype(float)
    luma = original @ np.array([0.299, 0.587, 0.114])
    assert np.abs(patch[..., 0] - luma).max() <= 1.0
    assert 0 < height < HEIGHT and 0 < width < WIDTH


def test_erasing_fills_a_rectangle_with_the_mean(image):
    out = _augment(image, random_erasing_probability=1.0)
    top, left, height, width = _changed_rectangle(image, out)
    patch = out[top : top + height, left : left + width].astype(int)
    assert np.abs(patch - np.array(IMAGENET_MEAN_RGB)).max() <= 1.0
    area_fraction = height * width / (HEIGHT * WIDTH)
    assert 0.01 <= area_fraction <= 0.45


def test_augmentation_depends_only_on_the_seed(image):
    everything = dict(
        random_crop_probability=1.0,
        horizontal_flip_probability=0.5,
        patch_replacement_probability=0.8,
        random_erasing_probability=0.8,
    )
    first = [_augment(image, seed=seed, **everything) for seed in range(6)]
    again = [_augment(image, seed=seed, **everything) for seed in range(6)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert len({a.tobytes() for a in first}) > 1


def test_batch_augmentation_matches_per_image_calls(image):
    augmentor = AlbumentationsAugmentor(HEIGHT, WIDTH, random_erasing_probability=1.0)
    images = np.stack([image, np.fliplr(image)])
    batch = augmentor.augment_batch(images, np.array([10, 11]), 5)
    assert np.array_equal(batch[0], augmentor(image, np.array([5, 10])))
    assert np.array_equal(batch[1], augmentor(np.fliplr(image), np.array([5, 11])))


def test_invalid_probability_is_rejected():
    with pytest.raises(ValueError, match="random_erasing_probability"):
        AlbumentationsAugmentor(HEIGHT, WIDTH, random_erasing_probability=1.5)
