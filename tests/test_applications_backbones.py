"""Backbone registry, trunk/last-stage split and the offline pretrained-weights error."""

import numpy as np
import pytest
import requests

from applications import backbones
from applications.backbones import BACKBONE_MODEL_NAMES, build_backbone, pretrained_file_path


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="resnet152, ibn_resnet50, ibn_resnet101, resnesta18"):
        build_backbone("vgg16", 64, 32)


def test_every_registered_depth_is_a_tf2cv_model_with_imagenet_weights():
    from tf2cv.model_provider import _models
    from tf2cv.models.model_store import get_model_name_suffix_data

    # FlipReID's code accepts these (and loads their ImageNet weights); issue 16 names four.
    assert {"resnet101", "resnet152", "ibn_resnet101", "resnesta101"} <= set(BACKBONE_MODEL_NAMES)
    for backbone_name, model_name in BACKBONE_MODEL_NAMES.items():
        assert model_name in _models, backbone_name
        get_model_name_suffix_data(model_name)  # raises for a model without published weights
        assert pretrained_file_path(backbone_name).endswith(".tf2.h5")


@pytest.mark.parametrize(
    "backbone_name, last_channels",
    [("resnesta18", 512), ("ibn_resnet101", 2048)],
)
def test_other_depths_build_with_last_stride_one(backbone_name, last_channels):
    backbone = build_backbone(backbone_name, 64, 32, last_stride=1)
    copy = backbone.build_last_stage_copy("copy")
    assert backbone.trunk_output_shape[:2] == (4, 2)  # 1/16 of 64x32
    assert copy.output_shape[1:] == (4, 2, last_channels)  # last stride 1 keeps it
    features = np.random.default_rng(0).normal(size=(1, *backbone.trunk_output_shape))
    assert np.isfinite(copy(features.astype(np.float32)).numpy()).all()


def test_copies_of_the_last_stage_are_independent_with_equal_weights():
    backbone = build_backbone("resnet18", 64, 32)
    first = backbone.build_last_stage_copy("copy_a")
    second = backbone.build_last_stage_copy("copy_b")
    features = np.random.default_rng(0).normal(size=(2, *backbone.trunk_output_shape))
    np.testing.assert_array_equal(first(features).numpy(), second(features).numpy())
    assert {v.ref() for v in first.weights}.isdisjoint({v.ref() for v in second.weights})
    # Unique variable names let both copies live in one h5 weights file.
    assert first.weights[0].name.startswith("copy_a")
    assert backbone.trunk.output_shape[1:] == (4, 2, 256)
    # Last stride 1 (the default, as FlipReID): stage 4 keeps the trunk's 1/16 resolution.
    assert first.output_shape[1:] == (4, 2, 512)


def test_pretrained_offline_fails_fast_naming_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr(backbones, "is_network_reachable", lambda: False)
    expected_path = pretrained_file_path("resnet50", str(tmp_path))
    assert expected_path.startswith(str(tmp_path))
    with pytest.raises(RuntimeError) as error:
        build_backbone("resnet50", 64, 32, pretrained=True, pretrained_root=str(tmp_path))
    assert expected_path in str(error.value)
    assert "releases/download" in str(error.value)


def test_pretrained_download_failure_becomes_runtime_error(monkeypatch, tmp_path):
    import tf2cv.model_provider

    def failing_get_model(*args, **kwargs):
        raise requests.exceptions.ConnectionError("no route to host")

    monkeypatch.setattr(backbones, "is_network_reachable", lambda: True)
    monkeypatch.setattr(tf2cv.model_provider, "get_model", failing_get_model)
    with pytest.raises(RuntimeError, match="no route to host"):
        build_backbone("resnet18", 64, 32, pretrained=True, pretrained_root=str(tmp_path))


def test_default_cache_is_tf2cv_folder():
    path = pretrained_file_path("ibn_resnet50")
    assert "/.tensorflow/models/ibn_resnet50-" in path
    assert path.endswith(".tf2.h5")


@pytest.mark.parametrize(
    "backbone_name, trunk_channels, last_channels",
    [("resnet18", 256, 512), ("resnet50", 1024, 2048), ("resnesta50", 1024, 2048)],
)
def test_last_stride_sets_the_resolution_and_keeps_every_weight(
    backbone_name, trunk_channels, last_channels
):
    backbone = build_backbone(backbone_name, 128, 64, last_stride=1)
    stride_1 = backbone.build_last_stage_copy("stride_1")
    backbone_2 = build_backbone(backbone_name, 128, 64, last_stride=2)
    stride_2 = backbone_2.build_last_stage_copy("stride_2")
    assert backbone.trunk_output_shape == (8, 4, trunk_channels)
    assert stride_1.output_shape[1:] == (8, 4, last_channels)
    assert stride_2.output_shape[1:] == (4, 2, last_channels)
    # ImageNet-shaped weights load the same with either stride: same shapes, same order.
    assert [w.shape for w in stride_1.weights] == [w.shape for w in stride_2.weights]
    weights = [
        np.random.default_rng(i).normal(size=w.shape) for i, w in enumerate(stride_2.weights)
    ]
    stride_1.set_weights(weights)
    stride_2.set_weights(weights)
    for loaded_1, loaded_2 in zip(stride_1.get_weights(), stride_2.get_weights()):
        np.testing.assert_array_equal(loaded_1, loaded_2)


def _first_unit(stage_copy):
    return stage_copy.get_layer(index=1).block.children[0]


@pytest.mark.parametrize("backbone_name", ["resnet18", "resnesta50"])
def test_stride_one_unit_computes_what_tf2cv_builds_with_stride_one(backbone_name):
    """The reference: tf2cv's own unit class built with strides=1 (FlipReID's rule)."""
    from tf2cv.models.resnesta import ResNeStAUnit
    from tf2cv.models.resnet import ResUnit

    backbone = build_backbone(backbone_name, 64, 32, last_stride=1)
    unit = _first_unit(backbone.build_last_stage_copy("copy"))
    in_channels = backbone.trunk_output_shape[-1]
    if backbone_name == "resnet18":
        reference = ResUnit(in_channels, 512, strides=1, bottleneck=False, name="reference")
    else:
        reference = ResNeStAUnit(in_channels, 2048, strides=1, bottleneck=True, name="reference")
    features = np.random.default_rng(0).normal(size=(2, *backbone.trunk_output_shape))
    features = features.astype(np.float32)
    reference(features)
    assert [w.shape for w in reference.weights] == [w.shape for w in unit.weights]
    rng = np.random.default_rng(1)
    # Positive values keep the batch-norm variances valid (no NaN that would compare equal).
    weights = [rng.uniform(0.01, 0.1, size=w.shape).astype(np.float32) for w in unit.weights]
    unit.set_weights(weights)
    reference.set_weights(weights)
    output = unit(features, training=False).numpy()
    assert np.isfinite(output).all() and output.std() > 0
    np.testing.assert_allclose(
        output,
        reference(features, training=False).numpy(),
        rtol=1e-4,
        atol=1e-4,
    )


def test_last_stride_must_be_one_or_two():
    with pytest.raises(ValueError, match="last_stride must be 1 or 2, got 3"):
        build_backbone("resnet18", 64, 32, last_stride=3)
