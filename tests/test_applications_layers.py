"""Pooling and clipping layers against their formulas."""

import numpy as np
import pytest

from applications.core.backend import keras, tf
from applications.layers import (
    FeatureClipping,
    GlobalGeMPooling2D,
    ImageNormalization,
    build_pooling_layer,
)


def test_gem_matches_formula_and_starts_at_power_three():
    rng = np.random.default_rng(0)
    feature_map = rng.uniform(-0.5, 2.0, size=(2, 3, 4, 5)).astype(np.float32)
    layer = GlobalGeMPooling2D()
    pooled = layer(feature_map).numpy()
    assert layer.power.numpy() == pytest.approx(3.0)
    assert layer.power.trainable
    expected = np.zeros((2, 5))
    for sample in range(2):
        for channel in range(5):
            values = np.maximum(feature_map[sample, :, :, channel], 1e-6)
            expected[sample, channel] = np.mean(values**3.0) ** (1 / 3.0)
    np.testing.assert_allclose(pooled, expected, rtol=1e-5)


def test_gem_with_power_one_is_average_pooling():
    feature_map = np.random.default_rng(1).uniform(0.1, 1.0, size=(2, 3, 3, 4)).astype(np.float32)
    pooled = GlobalGeMPooling2D(initial_power=1.0)(feature_map).numpy()
    np.testing.assert_allclose(pooled, feature_map.mean(axis=(1, 2)), rtol=1e-5)


def test_pooling_registry():
    feature_map = np.random.default_rng(2).uniform(0.1, 1.0, size=(2, 3, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(
        build_pooling_layer("Max")(feature_map).numpy(), feature_map.max(axis=(1, 2))
    )
    np.testing.assert_allclose(
        build_pooling_layer("Average")(feature_map).numpy(),
        feature_map.mean(axis=(1, 2)),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="Average, Max, GeM"):
        build_pooling_layer("Sum")


def test_clipping():
    values = np.array([[-1.0, 0.5, 2.0]], np.float32)
    np.testing.assert_array_equal(FeatureClipping(0.0, 1.0)(values).numpy(), [[0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(FeatureClipping(None, 1.0)(values).numpy(), [[-1.0, 0.5, 1.0]])
    with pytest.raises(ValueError, match="min_value"):
        FeatureClipping(1.0, 0.0)


def test_image_normalization_uses_imagenet_statistics():
    images = np.full((1, 2, 2, 3), 255, np.uint8)
    normalised = ImageNormalization()(images).numpy()
    expected = (1.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(normalised[0, 0, 0], expected, rtol=1e-5)


def test_gem_runs_in_float32_under_mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        inputs = keras.Input((3, 3, 4))
        features = keras.layers.Conv2D(4, 1)(inputs)
        pooled = GlobalGeMPooling2D()(features)
        clipped = FeatureClipping(0.0, 1.0)(pooled)
        model = keras.Model(inputs, clipped)
        outputs = model(tf.random.uniform((2, 3, 3, 4)))
        assert features.dtype == tf.bfloat16
        assert outputs.dtype == tf.float32
        assert model.layers[2].power.dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_gem_starting_at_power_one_is_average_pooling_and_reaches_the_model():
    from applications.model import build_flipreid_models

    feature_map = tf.random.uniform((2, 4, 3, 5), minval=0.01, maxval=2.0, seed=1)
    gem = build_pooling_layer("GeM", name="gem", gem_initial_power=1.0)
    np.testing.assert_allclose(
        gem(feature_map).numpy(), tf.reduce_mean(feature_map, axis=[1, 2]).numpy(), rtol=1e-5
    )
    training_model, _ = build_flipreid_models("resnet18", 64, 32, 4, gem_initial_power=1.0)
    assert set(training_model.gem_power_values().values()) == {1.0}
