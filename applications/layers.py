"""Custom layers of the FlipReID model: input normalisation, GeM pooling, feature clipping.

The pooling and clipping layers always run in float32 (their dtype policy is pinned), so the
embeddings keep full precision and GeM's power stays exact under mixed_bfloat16.
"""

from applications.backend import keras, tf
from applications.registry import Registry

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
