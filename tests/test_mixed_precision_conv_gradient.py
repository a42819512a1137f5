"""The matrix-product kernel gradient of bfloat16 convolutions on small maps."""

import numpy as np
import pytest

import applications.layers
from applications.core.backend import keras, tf
from applications.layers import (
    conv2d_with_matmul_filter_gradient,
    conv_output_size,
    image_patches,
    use_matmul_filter_gradients,
)
from applications.precision import global_policy


def loop_kernel_gradient(inputs, output_gradient, kernel_size, strides, padding):
    """dL/dW[a, b, c, o] = sum_{n, i, j} x_pad[n, i*s + a, j*s + b, c] * dy[n, i, j, o]."""
    (kernel_height, kernel_width), (stride_height, stride_width) = kernel_size, strides
    _, height, width, _ = inputs.shape
    _, output_height, output_width, _ = output_gradient.shape
    if padding == "SAME":
        pad_height = max((output_height - 1) * stride_height + kernel_height - height, 0)
        pad_width = max((output_width - 1) * stride_width + kernel_width - width, 0)
        inputs = np.pad(
            inputs,
            [
                (0, 0),
                (pad_height // 2, pad_height - pad_height // 2),
                (pad_width // 2, pad_width - pad_width // 2),
                (0, 0),
            ],
        )
    gradient = np.zeros((kernel_height, kernel_width, inputs.shape[-1], output_gradient.shape[-1]))
    for a in range(kernel_height):
        for b in range(kernel_width):
            for i in range(output_height):
                for j in range(output_width):
                    patch = inputs[:, i * stride_height + a, j * stride_width + b, :]
                    gradient[a, b] += patch.T @ output_gradient[:, i, j, :]
    return gradient


@pytest.mark.parametrize(
    ("kernel_size", "strides", "padding"),
    [((3, 3), (1, 1), "SAME"), ((3, 3), (2, 2), "VALID"), ((1, 1), (1, 1), "VALID"),
     ((1, 1), (2, 2), "VALID"), ((3, 3), (2, 2), "SAME")],
)  # fmt: skip
def test_kernel_and_input_gradients_equal_the_loop_and_tensorflows(kernel_size, strides, padding):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(2, 7, 5, 4)).astype(np.float32)
    kernel = rng.normal(size=(*kernel_size, 4, 3)).astype(np.float32)
    inputs_tensor, kernel_tensor = tf.constant(inputs), tf.constant(kernel)
    outputs = tf.nn.conv2d(inputs, kernel, [1, *strides, 1], padding)
    output_gradient = rng.normal(size=outputs.shape).astype(np.float32)
    gradients = {}
    for name, function in (
        ("ours", lambda x, w: conv2d_with_matmul_filter_gradient(x, w, strides, padding)),
        ("tensorflow", lambda x, w: tf.nn.conv2d(x, w, [1, *strides, 1], padding)),
    ):
        with tf.GradientTape() as tape:
            tape.watch([inputs_tensor, kernel_tensor])
            values = function(inputs_tensor, kernel_tensor)
            loss = tf.reduce_sum(values * output_gradient)
        gradients[name] = [g.numpy() for g in tape.gradient(loss, [inputs_tensor, kernel_tensor])]
        np.testing.assert_allclose(values.numpy(), outputs.numpy(), rtol=1e-6, atol=1e-6)
    expected = loop_kernel_gradient(inputs, output_gradient, kernel_size, strides, padding)
    np.testing.assert_allclose(gradients["ours"][1], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        gradients["ours"][1], gradients["tensorflow"][1], rtol=1e-4, atol=1e-4
    )
    np.testing.assert_array_equal(gradients["ours"][0], gradients["tensorflow"][0])


@pytest.mark.parametrize(
    ("kernel_size", "strides", "padding"),
    [((3, 3), (1, 1), "SAME"), ((3, 3), (2, 2), "VALID"), ((3, 3), (2, 2), "SAME"),
     ((7, 7), (2, 2), "SAME"), ((1, 1), (2, 2), "VALID"), ((2, 3), (1, 2), "SAME")],
)  # fmt: skip
def test_image_patches_equal_tensorflows_extract_patches(kernel_size, strides, padding):
    inputs = tf.random.normal((2, 9, 6, 3), seed=1)
    expected = tf.image.extract_patches(
        inputs, [1, *kernel_size, 1], [1, *strides, 1], [1, 1, 1, 1], padding
    )
    patches = image_patches(inputs, kernel_size, strides, padding, expected.shape[1:3])
    np.testing.assert_array_equal(patches.numpy(), expected.numpy())


def test_only_bfloat16_convolutions_on_small_maps_take_the_matrix_product(monkeypatch):
    def build():
        images = keras.Input((8, 4, 128))
        small = keras.layers.Conv2D(8, 3, padding="same", name="many_channels")(images)
        large = keras.layers.Conv2D(8, 3, padding="same", name="few_channels")(small)
        return keras.Model(images, [small, large])

    calls = []

    def counting(inputs, kernel, strides, padding):
        calls.append(inputs.shape[-1])
        return conv2d_with_matmul_filter_gradient(inputs, kernel, strides, padding)

    monkeypatch.setattr(applications.layers, "conv2d_with_matmul_filter_gradient", counting)
    for policy in ("float32", "mixed_bfloat16"):
        calls.clear()
        with global_policy(policy):
            model = build()
        assert use_matmul_filter_gradients(model) == 2
        assert use_matmul_filter_gradients(model) == 0  # once only
        images = tf.random.normal((2, 8, 4, 128))
        with tf.GradientTape() as tape:
            outputs = model(images)
            loss = tf.add_n([tf.reduce_sum(tf.cast(output, tf.float32)) for output in outputs])
        gradients = tape.gradient(loss, model.trainable_variables)
        assert all(gradient is not None for gradient in gradients)
        # 32 output pixels: 128 input channels allow the product (32 x 4 <= 128), 8 do not.
        assert conv_output_size(images.shape, model.get_layer("many_channels")) == (8, 4)
        assert calls == ([128] if policy == "mixed_bfloat16" else [])
