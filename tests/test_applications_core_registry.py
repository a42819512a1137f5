"""The registry helper: one error format that lists the valid names, dict behaviour kept."""

import pytest

from applications.core.registry import Registry, UnknownNameError


def test_lookup_returns_the_builder_and_an_unknown_name_lists_the_valid_ones_in_order():
    registry = Registry("pooling_mode", {"Average": 1, "Max": 2, "GeM": 3})
    assert registry["Max"] == 2
    assert registry.names() == ("Average", "Max", "GeM")
    with pytest.raises(ValueError) as raised:
        registry["Mean"]
    assert str(raised.value) == "Unknown pooling_mode 'Mean'; valid names: Average, Max, GeM."


def test_dict_idioms_still_work():
    registry = Registry("distance metric", [("cosine", "c")])
    assert "cosine" in registry and "manhattan" not in registry
    assert registry.get("manhattan") is None
    with pytest.raises(KeyError):  # code written for plain dicts keeps working
        registry["manhattan"]
    with pytest.raises(UnknownNameError, match=r"\['cosine'\]"):
        registry[["cosine"]]  # an unhashable name is an unknown name, not a TypeError


def test_every_project_registry_uses_the_helper():
    from applications.layers import POOLING_LAYER_BUILDERS
    from applications.learning_rate import LEARNING_RATE_FUNCTIONS
    from evaluation.distances import DISTANCE_METRICS
    from evaluation.metrics import CMC_CONFIGS

    for registry in (
        POOLING_LAYER_BUILDERS,
        LEARNING_RATE_FUNCTIONS,
        DISTANCE_METRICS,
        CMC_CONFIGS,
    ):
        assert isinstance(registry, Registry)
        with pytest.raises(ValueError, match=f"valid names: {', '.join(registry)}"):
            registry["no such name"]
