"""AlignedReID's ratio crop (--crop_ratio, --ratio_crop_probability) in the augmentation."""

import random

import cv2
import numpy as np
import pytest

from datasets.augmentation import RatioCrop, build_albumentations_transform, sample_ratio_crop


def test_window_sizes_and_places_follow_alignedreids_draws():
    py_random = random.Random(0)
    heights, widths = set(), set()
    for _ in range(2000):
        top, left, height, width = sample_ratio_crop(64, 32, 0.75, py_random)
        # int(H * U(r, 1)) and int(W * U(r, 1)), drawn apart; the corner inside the rest.
        assert int(64 * 0.75) <= height <= 64 and int(32 * 0.75) <= width <= 32
        assert 0 <= top <= max(0, 64 - height - 1) and 0 <= left <= max(0, 32 - width - 1)
        heights.add(height)
        widths.add(width)
    assert heights == set(range(48, 64)) and widths == set(range(24, 32))
    assert sample_ratio_crop(64, 32, 1.0, py_random) == (0, 0, 64, 32)


def test_ratio_crop_is_the_window_resized_back():
    image = np.random.default_rng(0).integers(0, 256, (64, 32, 3), dtype=np.uint8)
    transform = RatioCrop(0.5, p=1.0)
    window = sample_ratio_crop(64, 32, 0.5, random.Random(3))
    top, left, height, width = window
    expected = cv2.resize(
        np.ascontiguousarray(image[top : top + height, left : left + width]),
        (32, 64),
        interpolation=cv2.INTER_LINEAR,
    )
    np.testing.assert_array_equal(transform.apply(image, window=window), expected)
    with pytest.raises(ValueError, match="crop_ratio"):
        RatioCrop(0.0)


def test_ratio_crop_is_off_by_default_and_first_when_on():
    def names(**options):
        return [type(t).__name__ for t in build_albumentations_transform(64, 32, **options)]

    assert "RatioCrop" not in names()
    assert "RatioCrop" not in names(crop_ratio=1.0, ratio_crop_probability=1.0)
    assert names(crop_ratio=0.8, ratio_crop_probability=0.5)[0] == "RatioCrop"
    transform = build_albumentations_transform(
        64,
        32,
        crop_ratio=0.5,
        ratio_crop_probability=1.0,
        random_crop_probability=0.0,
        horizontal_flip_probability=0.0,
        patch_replacement_probability=0.0,
        random_erasing_probability=0.0,
    )
    image = np.random.default_rng(1).integers(0, 256, (64, 32, 3), dtype=np.uint8)
    augmented = transform(image=image)["image"]
    assert augmented.shape == image.shape and not np.array_equal(augmented, image)
