"""Mixed precision: float32 where it matters, float16 loss scaling, losses close to float32."""

import numpy as np
import pytest

from applications.core.backend import keras, tf
from applications.layers import GlobalGeMPooling2D
from applications.model import build_flipreid_models

P, K, HEIGHT, WIDTH = 4, 2, 64, 32


def _images_and_labels():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (P * K, HEIGHT, WIDTH, 3), dtype=np.uint8)
    return images, np.repeat(np.arange(P), K).astype(np.int32)


def _build(policy, weights=None):
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        training_model, inference_model = build_flipreid_models(
            "resnet18", HEIGHT, WIDTH, P, region_num=1, min_value=0.0, max_value=1.0
        )
        training_model.compile(keras.optimizers.Adam(1e-3))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if weights is not None:
        training_model.set_weights(weights)
    return training_model, inference_model


@pytest.fixture(scope="module")
def float32_reference():
    training_model, inference_model = _build("float32")
    images, labels = _images_and_labels()
    losses = training_model.compute_losses(images, labels, training=False)
    return training_model.get_weights(), {k: float(v) for k, v in losses.items()}


# Half precision keeps about 3 (float16) or 2 (bfloat16) significant digits per operation;
# a ResNet forward pass accumulates that error, so the tolerances are relative and loose.
@pytest.mark.parametrize("policy, rtol", [("mixed_float16", 0.02), ("mixed_bfloat16", 0.08)])
def test_losses_are_float32_finite_and_close_to_float32(float32_reference, policy, rtol):
    weights, expected = float32_reference
    training_model, inference_model = _build(policy, weights)
    images, labels = _images_and_labels()
    losses = training_model.compute_losses(images, labels, training=False)
    for name in ("loss", "triplet_loss", "cross_entropy_loss", "flipping_loss"):
        value = losses[name]
        assert value.dtype == tf.float32, name
        assert np.isfinite(value.numpy()), name
        np.testing.assert_allclose(float(value), expected[name], rtol=rtol, atol=1e-3, err_msg=name)
    # The L2 term reads the float32 master weights: identical to float32.
    np.testing.assert_allclose(
        float(losses["regularization_loss"]), expected["regularization_loss"], rtol=1e-6
    )
    # Compute in half precision, variables, GeM, softmax and embeddings in float32.
    assert training_model.branch_network.layers[2].compute_dtype in ("float16", "bfloat16")
    outputs = training_model(images, training=False)
    assert all(p.dtype == tf.float32 for p in outputs["probabilities"])
    assert all(e.dtype == tf.float32 for e in outputs["branch_embeddings"])
    assert inference_model(images).dtype == tf.float32
    gem_layers = [
        layer
        for layer in training_model.branch_network.layers
        if isinstance(layer, GlobalGeMPooling2D)
    ]
    assert gem_layers and all(layer.power.dtype == tf.float32 for layer in gem_layers)
    assert all(weight.dtype == tf.float32 for weight in training_model.trainable_weights)


def test_float16_uses_dynamic_loss_scaling():
    # Training steps under both policies are run by tests/test_mixed_precision.py; float16
    # convolutions are emulated on CPU and slow, so this only checks the optimizer set-up.
    training_model, _ = _build("mixed_float16")
    assert isinstance(training_model.optimizer, keras.mixed_precision.LossScaleOptimizer)
    assert training_model.optimizer.dynamic
    float32_model, _ = _build("float32")
    assert not isinstance(float32_model.optimizer, keras.mixed_precision.LossScaleOptimizer)
