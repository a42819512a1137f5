"""Custom layers of the FlipReID model: input normalisation, GeM pooling, feature clipping.

The pooling and clipping layers always run in float32 (their dtype policy is pinned), so the
embeddings keep full precision and GeM's power stays exact under mixed_bfloat16.
"""

from applications.core.backend import keras, tf
from applications.core.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNormalization(keras.layers.Layer):
    """Casts RGB images in [0, 255] to float and normalises them with ImageNet mean and std.

    Input: (B, H, W, 3) uint8 or float in [0, 255]. Output: same shape in the layer's compute
    dtype (float32, or bfloat16 under mixed_bfloat16).
    """

    def call(self, inputs):
        images = tf.cast(inputs, tf.float32)
        mean = tf.constant(IMAGENET_MEAN, dtype=tf.float32) * 255.0
        std = tf.constant(IMAGENET_STD, dtype=tf.float32) * 255.0
        return tf.cast((images - mean) / std, self.compute_dtype)


def gem_pooling(feature_map, power, epsilon=1e-6):
    """Generalised-mean pooling over the spatial axes.

    Computes (mean_{h,w} max(x, epsilon)^p)^(1/p) per channel: p = 1 is average pooling and
    p -> inf tends to max pooling.

    Args:
        feature_map: float tensor (B, H, W, C).
        power: scalar float tensor p > 0.
        epsilon: lower clamp that keeps the power of non-positive activations defined.

    Returns:
        float32 tensor (B, C).
    """
    feature_map = tf.cast(feature_map, tf.float32)
    power = tf.cast(power, tf.float32)
    clamped = tf.maximum(feature_map, epsilon)
    return tf.pow(tf.reduce_mean(tf.pow(clamped, power), axis=[1, 2]), 1.0 / power)


class GlobalGeMPooling2D(keras.layers.Layer):
    """GeM pooling with a trainable power p (init 3.0), computed in float32.

    Input: (B, H, W, C) any float dtype. Output: float32 (B, C).
    """

    def __init__(self, initial_power=3.0, trainable_power=True, epsilon=1e-6, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.initial_power = initial_power
        self.trainable_power = trainable_power
        self.epsilon = epsilon

    def build(self, input_shape):
        self.power = self.add_weight(
            name="power",
            shape=(),
            dtype=tf.float32,
            initializer=keras.initializers.Constant(self.initial_power),
            trainable=self.trainable_power,
        )
        super().build(input_shape)

    def call(self, inputs):
        return gem_pooling(inputs, self.power, self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update(
            initial_power=self.initial_power,
            trainable_power=self.trainable_power,
            epsilon=self.epsilon,
        )
        return config


class FeatureClipping(keras.layers.Layer):
    """Clips features to [min_value, max_value] in float32; a None bound is not applied.

    Input: (B, D) any float dtype. Output: float32 (B, D).
    """

    def __init__(self, min_value=None, max_value=None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if min_value is not None and max_value is not None and min_value > max_value:
            raise ValueError(f"min_value must not exceed max_value, got {min_value} > {max_value}.")
        self.min_value = min_value
        self.max_value = max_value

    def call(self, inputs):
        outputs = tf.cast(inputs, tf.float32)
        if self.min_value is not None:
            outputs = tf.maximum(outputs, self.min_value)
        if self.max_value is not None:
            outputs = tf.minimum(outputs, self.max_value)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(min_value=self.min_value, max_value=self.max_value)
        return config


# oneDNN's bfloat16 Conv2DBackpropFilter measured no faster than its float32 one on this CPU
# (0.85x-1.12x, against 1.7x-2.0x for the forward and input-gradient convolutions) and held
# bfloat16 training at 1.3x float32. On small feature maps (the last stages) one bfloat16
# matrix product of the input patches with the output gradient computes the same kernel
# gradient faster (batch 32, 3x3 on an 8x4 map with 512 channels: 1.2x the whole convolution
# step; 3x3 stride 2 from 16x8x256: 1.8x); with few channels on a larger map (16x8x128,
# 32x16x64) extracting the patches costs more than it saves (0.5x-0.6x). Hence the rule: the
# matrix product where the output map has at most C_in / 4 pixels.
MATMUL_FILTER_GRADIENT_CHANNELS_PER_POSITION = 4


def conv2d_with_matmul_filter_gradient(inputs, kernel, strides, padding):
    """A 2-D convolution whose kernel gradient is one matrix product of patches and gradient.

    The forward pass and the input gradient are TensorFlow's own (conv2d and
    Conv2DBackpropInput); the kernel gradient sum_{b,i,j} patch(x)_{b,i,j} dy_{b,i,j} is
    computed as patches^T @ dy, which equals Conv2DBackpropFilter up to rounding.

    Args:
        inputs: (B, H, W, C_in) float tensor, channels last.
        kernel: (k_h, k_w, C_in, C_out) tensor of the same dtype.
        strides: (s_h, s_w) ints.
        padding: "SAME" or "VALID".

    Returns:
        (B, H_out, W_out, C_out) tensor, as tf.nn.conv2d.
    """
    strides = [1, int(strides[0]), int(strides[1]), 1]

    @tf.custom_gradient
    def convolution(inputs, kernel):
        outputs = tf.nn.conv2d(inputs, kernel, strides, padding)

        def gradient(output_gradient):
            input_gradient = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(inputs),
                filter=kernel,
                out_backprop=output_gradient,
                strides=strides,
                padding=padding,
            )
            kernel_height, kernel_width, input_channels, output_channels = kernel.shape
            patches = image_patches(
                inputs, (kernel_height, kernel_width), strides[1:3], padding, outputs.shape[1:3]
            )
            kernel_gradient = tf.matmul(
                tf.reshape(patches, [-1, kernel_height * kernel_width * input_channels]),
                tf.reshape(output_gradient, [-1, output_channels]),
                transpose_a=True,
            )
            return input_gradient, tf.reshape(kernel_gradient, tf.shape(kernel))

        return outputs, gradient

    # A variable (or the bfloat16 view of one) is read outside, so that its gradient flows
    # through the read and custom_gradient sees plain tensors.
    return convolution(tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel))


def image_patches(inputs, kernel_size, strides, padding, output_size):
    """Every kernel-sized patch of the (padded) input, flattened as (k_h, k_w, C_in).

    The same values as tf.image.extract_patches, built from k_h * k_w strided slices of the
    padded input, which measured 6x faster in bfloat16 (32x8x4x512 input, 3x3).

    Args:
        inputs: (B, H, W, C) tensor.
        kernel_size: (k_h, k_w) ints.
        strides: (s_h, s_w) ints.
        padding: "SAME" or "VALID", as tf.nn.conv2d.
        output_size: (H_out, W_out) ints, the convolution's output map.

    Returns:
        (B, H_out, W_out, k_h * k_w * C) tensor.
    """
    (kernel_height, kernel_width), (stride_height, stride_width) = kernel_size, strides
    output_height, output_width = output_size
    if (kernel_height, kernel_width, stride_height, stride_width) == (1, 1, 1, 1):
        return inputs
    if padding == "SAME":
        paddings = [[0, 0]]
        for size, kernel, stride, output in (
            (inputs.shape[1], kernel_height, stride_height, output_height),
            (inputs.shape[2], kernel_width, stride_width, output_width),
        ):
            total = max((output - 1) * stride + kernel - size, 0)
            paddings.append([total // 2, total - total // 2])
        inputs = tf.pad(inputs, paddings + [[0, 0]])
    slices = [
        inputs[
            :,
            row : row + (output_height - 1) * stride_height + 1 : stride_height,
            column : column + (output_width - 1) * stride_width + 1 : stride_width,
            :,
        ]
        for row in range(kernel_height)
        for column in range(kernel_width)
    ]
    return tf.concat(slices, axis=-1) if len(slices) > 1 else slices[0]


def use_matmul_filter_gradients(
    model, channels_per_position=MATMUL_FILTER_GRADIENT_CHANNELS_PER_POSITION
):
    """Gives the bfloat16 convolutions of a model on small maps the matrix-product kernel gradient.

    Every plain 2-D convolution of the model (groups 1, no dilation, channels last) keeps its
    weights and forward values; when it runs in bfloat16 and its output map has at most
    C_in / channels_per_position pixels, its kernel gradient comes from
    conv2d_with_matmul_filter_gradient. float32 convolutions are left as they are.

    Args:
        model: keras.Model whose layers (nested ones included) are changed in place.
        channels_per_position: int, input channels needed per output pixel.

    Returns:
        int, the number of convolution layers changed.
    """
    changed = 0
    for layer in model.submodules:
        if (
            type(layer).__name__ in ("DepthwiseConv2D", "Conv2DTranspose", "SeparableConv2D")
            or not isinstance(layer, keras.layers.Conv2D)
            or layer.groups != 1
            or tuple(layer.dilation_rate) != (1, 1)
            or layer.data_format != "channels_last"
            or layer.padding not in ("same", "valid")
            or getattr(layer, "_uses_matmul_filter_gradient", False)
        ):
            continue
        original_convolution_op = layer.convolution_op

        def convolution_op(inputs, kernel, layer=layer, original=original_convolution_op):
            output_height, output_width = conv_output_size(inputs.shape, layer)
            if (
                inputs.dtype != tf.bfloat16
                or output_height is None
                or output_height * output_width * channels_per_position > inputs.shape[-1]
            ):
                return original(inputs, kernel)
            return conv2d_with_matmul_filter_gradient(
                inputs, kernel, layer.strides, layer.padding.upper()
            )

        layer.convolution_op = convolution_op
        layer._uses_matmul_filter_gradient = True
        changed += 1
    return changed


def conv_output_size(input_shape, layer):
    """(H_out, W_out) of a Conv2D layer on a static input shape, or (None, None) if unknown."""
    height, width = input_shape[1], input_shape[2]
    if height is None or width is None:
        return None, None
    sizes = []
    for size, kernel_size, stride in zip(
        (height, width), layer.kernel_size, layer.strides, strict=True
    ):
        if layer.padding == "valid":
            size = size - kernel_size + 1
        sizes.append(-(-size // stride))
    return tuple(sizes)


def _average_pooling(name, **_):
    return keras.layers.GlobalAveragePooling2D(name=name, dtype="float32")


def _max_pooling(name, **_):
    return keras.layers.GlobalMaxPooling2D(name=name, dtype="float32")


def _gem_pooling(name, gem_initial_power=3.0):
    return GlobalGeMPooling2D(initial_power=gem_initial_power, name=name)


POOLING_LAYER_BUILDERS = Registry(
    "pooling_mode",
    {
        "Average": _average_pooling,
        "Max": _max_pooling,
        "GeM": _gem_pooling,
    },
)


def build_pooling_layer(pooling_mode, name=None, gem_initial_power=3.0):
    """Builds the global pooling layer of a pooling mode.

    Args:
        pooling_mode: "Average", "Max" or "GeM".
        name: layer name.
        gem_initial_power: float, the starting (trainable) power p of GeM; 1 starts as average
            pooling, as FlipReID does, 3 is the usual GeM start. Ignored by other modes.

    Returns:
        A layer mapping (B, H, W, C) -> float32 (B, C).

    Raises:
        ValueError: unknown pooling_mode.
    """
    return POOLING_LAYER_BUILDERS[pooling_mode](name, gem_initial_power=gem_initial_power)
