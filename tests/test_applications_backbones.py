"""Backbone registry, trunk/last-stage split and the offline pretrained-weights error."""

import numpy as np
import pytest
import requests

from applications import backbones
from applications.backbones import build_backbone, pretrained_file_path


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="ibn_resnet50, resnesta50, resnet18, resnet50"):
        build_backbone("vgg16", 64, 32)


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
    assert first.output_shape[1:] == (2, 1, 512)


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
