"""Backbone registry: tf2cv ImageNet classifiers split into a trunk and copies of the last stage.

FlipReID feeds the global branch and the regional branch from separate copies of the last
residual stage, so a backbone is delivered in two parts: the trunk (init block and stages 1-3),
built once, and a function that makes a fresh, independently trainable copy of stage 4 holding
the same (e.g. ImageNet) weights as the original.

Last stride: FlipReID's own copies of these backbones build stage 4 without downsampling
(last stride 1), so the last feature map is 1/16 of the input instead of pip tf2cv's 1/32. The
copies made here get the same by removing the downsampling of stage 4's first unit before it
is first built: its strided convolutions (body and shortcut) run with stride 1, and ResNeSt's
average-pool downsampling is skipped. No weight changes shape, so ImageNet weights load the
same with either stride.
"""

import os
import socket

from absl import logging

from applications.core.backend import keras

LAST_STRIDES = (1, 2)

# Name -> tf2cv model name: every ResNet, IBN-ResNet and ResNeSt depth that FlipReID's code
# accepts (its applications/ copies of these tf2cv modules) and for which tf2cv publishes
# ImageNet weights (FlipReID always loads them; tf2cv has none for resnet200 or
# ibn_resnet152). All are plain tf2cv classifiers whose `features` children are init_block,
# stage1, stage2, stage3, stage4 and final_pool. resnet18 is the small CPU backbone; FlipReID's
# README uses resnet50, ibn_resnet50 and resnesta50.
BACKBONE_MODEL_NAMES = {
    name: name
    for name in (
        *(f"resnet{depth}" for depth in (10, 12, 14, 16, 18, 26, 34, 50, 101, 152)),
        *(f"ibn_resnet{depth}" for depth in (50, 101)),
        *(f"resnesta{depth}" for depth in (18, 50, 101, 152, 200, 269)),
    )
}

DEFAULT_PRETRAINED_ROOT = os.path.join("~", ".tensorflow", "models")
_TRUNK_BLOCK_NAMES = ("init_block", "stage1", "stage2", "stage3")
_LAST_STAGE_NAME = "stage4"
# Pretrained weights live in the imgclsmob GitHub releases.
_NETWORK_PROBE_ADDRESS = ("github.com", 443)
_NETWORK_PROBE_TIMEOUT_SECONDS = 3.0


class NamedBlock(keras.layers.Layer):
    """Runs a tf2cv block under a distinct name.

    Every copy of a tf2cv stage names its variables identically ("features/stage4/..."), which
    an h5 weights file cannot hold twice; wrapping each copy prefixes its variables with the
    wrapper's name.
    """

    def __init__(self, block, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def call(self, inputs, training=None):
        return self.block(inputs, training=training)


def _remove_downsampling(unit):
    """Makes an unbuilt tf2cv residual unit keep the spatial size of its input (stride 1).

    Strided convolutions (ResNet and IBN-ResNet bodies and shortcuts) get stride 1: tf_keras
    reads `strides` when a convolution is called, and the explicit zero padding of tf2cv's 3x3
    convolutions then keeps the size. ResNeSt downsamples by average pooling instead: its body's
    pool is switched off (`resize`) and its shortcut's pool, whose window equals its stride,
    becomes the identity, which is what a stride-1 ResNeSt unit computes. None of this touches a
    weight.

    Args:
        unit: the first unit of a tf2cv stage, not yet built.
    """
    for layer in [unit, *unit.submodules]:
        if isinstance(layer, keras.layers.Conv2D) and tuple(layer.strides) != (1, 1):
            layer.strides = (1, 1)
        if getattr(layer, "resize", None) is True:
            layer.resize = False
        identity_pool = getattr(getattr(layer, "identity_block", None), "pool", None)
        if identity_pool is not None and getattr(identity_pool, "use_stride", False):
            layer.identity_block.pool = keras.layers.Activation("linear", name="pool")


def _children_by_name(tf2cv_model):
    """Maps the short name ("stage1", ...) of each `features` child to the child layer."""
    return {child.name.split("/")[-1]: child for child in tf2cv_model.features.children}


def pretrained_file_path(backbone_name, pretrained_root=None):
    """Returns where tf2cv caches (and looks for) the ImageNet weights of a backbone.

    Args:
        backbone_name: a key of BACKBONE_MODEL_NAMES.
        pretrained_root: folder of the cache; None means tf2cv's ~/.tensorflow/models.

    Returns:
        Absolute path of the `.tf2.h5` file tf2cv loads.
    """
    from tf2cv.models.model_store import get_model_name_suffix_data

    model_name = _tf2cv_model_name(backbone_name)
    error, sha1_hash, _ = get_model_name_suffix_data(model_name)
    file_name = f"{model_name}-{error}-{sha1_hash[:8]}.tf2.h5"
    root = os.path.expanduser(pretrained_root or DEFAULT_PRETRAINED_ROOT)
    return os.path.abspath(os.path.join(root, file_name))


def _pretrained_url(backbone_name):
    from tf2cv.models.model_store import get_model_name_suffix_data, imgclsmob_repo_url

    model_name = _tf2cv_model_name(backbone_name)
    _, _, release_tag = get_model_name_suffix_data(model_name)
    file_name = os.path.basename(pretrained_file_path(backbone_name))
    return f"{imgclsmob_repo_url}/releases/download/{release_tag}/{file_name}.zip"


def is_network_reachable():
    """Returns whether the host serving the pretrained weights accepts a connection quickly."""
    try:
        with socket.create_connection(
            _NETWORK_PROBE_ADDRESS, timeout=_NETWORK_PROBE_TIMEOUT_SECONDS
        ):
            return True
    except OSError:
        return False


def _offline_error(backbone_name, file_path, reason):
    return RuntimeError(
        f"Cannot load the pretrained ImageNet weights of backbone '{backbone_name}': "
        f"{reason}. tf2cv wanted the file {file_path} . Download "
        f"{_pretrained_url(backbone_name)} , unzip it and place the .tf2.h5 file at that path "
        "(or in the folder given as pretrained_root), or build the model with pretrained=False."
    )


def _tf2cv_model_name(backbone_name):
    if backbone_name not in BACKBONE_MODEL_NAMES:
        raise ValueError(
            "Unknown backbone_name {!r}; valid names are: {}.".format(
                backbone_name, ", ".join(BACKBONE_MODEL_NAMES)
            )
        )
    return BACKBONE_MODEL_NAMES[backbone_name]


def build_tf2cv_model(backbone_name, *, pretrained=False, pretrained_root=None):
    """Builds the full tf2cv classifier of a backbone, optionally with its ImageNet weights.

    With pretrained=True and no cached file, a short network probe runs first so that an offline
    machine fails in seconds (tf2cv itself retries five times without a timeout).

    Args:
        backbone_name: a key of BACKBONE_MODEL_NAMES.
        pretrained: load tf2cv's ImageNet weights.
        pretrained_root: folder of tf2cv's weight cache; None means ~/.tensorflow/models.

    Returns:
        The tf2cv model (channels_last).

    Raises:
        ValueError: unknown backbone_name.
        RuntimeError: pretrained weights are neither cached nor downloadable.
    """
    import requests
    from tf2cv.model_provider import get_model

    model_name = _tf2cv_model_name(backbone_name)
    if not pretrained:
        return get_model(model_name, pretrained=False, data_format="channels_last")

    file_path = pretrained_file_path(backbone_name, pretrained_root)
    if not os.path.isfile(file_path) and not is_network_reachable():
        raise _offline_error(
            backbone_name, file_path, "the file is not cached and the network is unreachable"
        )
    root = os.path.dirname(file_path)
    try:
        return get_model(model_name, pretrained=True, root=root, data_format="channels_last")
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
        raise _offline_error(backbone_name, file_path, f"the download failed ({error})") from error


class Backbone:
    """A backbone split into its trunk and a factory of last-stage copies.

    Attributes:
        name: the backbone name.
        trunk: functional keras.Model, float images (B, H, W, 3) normalised with ImageNet
            statistics -> feature map (B, H/16, W/16, C3).
        trunk_output_shape: (H/16, W/16, C3).
    """

    def __init__(
        self, backbone_name, image_height, image_width, *, pretrained, pretrained_root, last_stride
    ):
        self.name = backbone_name
        self.last_stride = last_stride
        source_model = build_tf2cv_model(
            backbone_name, pretrained=pretrained, pretrained_root=pretrained_root
        )
        children = _children_by_name(source_model)
        images = keras.Input(shape=(image_height, image_width, 3), name="normalised_images")
        features = images
        for block_name in _TRUNK_BLOCK_NAMES:
            features = children[block_name](features)
        self.trunk = keras.Model(images, features, name="trunk")
        self.trunk_output_shape = tuple(features.shape[1:])

        # The original stage 4 only serves as the source of the weights each copy starts from.
        source_stage = children[_LAST_STAGE_NAME]
        stage_input = keras.Input(shape=self.trunk_output_shape)
        source_stage(stage_input)
        self._last_stage_weights = source_stage.get_weights()

    def build_last_stage_copy(self, name):
        """Returns a fresh copy of stage 4 holding the same weights as the original.

        Args:
            name: name of the returned model (and prefix of its variables); must be unique.

        Returns:
            Functional keras.Model: trunk features (B, h, w, C3) -> (B, h, w, C4) with last
            stride 1, (B, h/2, w/2, C4) with last stride 2.
        """
        fresh_model = build_tf2cv_model(self.name, pretrained=False)
        fresh_stage = _children_by_name(fresh_model)[_LAST_STAGE_NAME]
        if self.last_stride == 1:
            _remove_downsampling(fresh_stage.children[0])
        stage = NamedBlock(fresh_stage, name=name + "_block")
        stage_input = keras.Input(shape=self.trunk_output_shape)
        copy = keras.Model(stage_input, stage(stage_input), name=name)
        copy.set_weights(self._last_stage_weights)
        return copy


def build_backbone(
    backbone_name,
    image_height,
    image_width,
    *,
    pretrained=False,
    pretrained_root=None,
    last_stride=1,
):
    """Builds a registered backbone as a trunk plus a factory of last-stage copies.

    Args:
        backbone_name: one of BACKBONE_MODEL_NAMES (e.g. "resnet18", "resnet50",
            "ibn_resnet50", "resnesta50", "resnet101", "resnesta101").
        image_height: input height in pixels (a multiple of 32 keeps the stripes even).
        image_width: input width in pixels.
        pretrained: load tf2cv's ImageNet weights into the trunk and every last-stage copy.
        pretrained_root: folder of tf2cv's weight cache; None means ~/.tensorflow/models.
        last_stride: 1 (FlipReID: stage 4 keeps the 1/16 resolution) or 2 (pip tf2cv: 1/32).

    Returns:
        Backbone.

    Raises:
        ValueError: unknown backbone_name, non-positive image size or last_stride not 1 or 2.
        RuntimeError: pretrained weights are neither cached nor downloadable.
    """
    _tf2cv_model_name(backbone_name)
    if image_height <= 0 or image_width <= 0:
        raise ValueError(
            f"image_height and image_width must be positive, got {image_height}x{image_width}."
        )
    if last_stride not in LAST_STRIDES:
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}.")
    logging.info(
        "Building backbone %s (pretrained=%s, last stride %d).",
        backbone_name,
        pretrained,
        last_stride,
    )
    return Backbone(
        backbone_name,
        image_height,
        image_width,
        pretrained=pretrained,
        pretrained_root=pretrained_root,
        last_stride=last_stride,
    )


__all__ = [
    "BACKBONE_MODEL_NAMES",
    "LAST_STRIDES",
    "Backbone",
    "NamedBlock",
    "build_backbone",
    "build_tf2cv_model",
    "is_network_reachable",
    "pretrained_file_path",
]
