"""The config's choice lists equal the registries they name; a config loads no model code."""

import pytest

from applications import config
from applications.backbones import BACKBONE_MODEL_NAMES
from applications.heads import IDENTITY_HEAD_MODES
from applications.layers import POOLING_LAYER_BUILDERS
from applications.learning_rate import LEARNING_RATE_FUNCTIONS
from datasets import DATASET_NAMES
from datasets.sampler import SAMPLING_MODES
from evaluation.distances import DISTANCE_METRICS
from evaluation.metrics import CMC_CONFIGS
from tests.fresh_interpreter import modules_loaded_by


@pytest.mark.parametrize(
    "config_choices, implemented, flag_name",
    [
        (config.BACKBONE_MODEL_NAMES, BACKBONE_MODEL_NAMES, "backbone_model_name"),
        (config.IDENTITY_HEAD_MODES, IDENTITY_HEAD_MODES, "identity_head"),
        (config.POOLING_MODES, POOLING_LAYER_BUILDERS, "pooling_mode"),
        (config.LEARNING_RATE_MODES, LEARNING_RATE_FUNCTIONS, "learning_rate_mode"),
        (config.DATASET_NAMES, DATASET_NAMES, "dataset_name"),
        (config.SAMPLING_MODES, SAMPLING_MODES, "sampling_mode"),
        (config.DISTANCE_METRIC_NAMES, DISTANCE_METRICS, "distance_metric"),
        (config.CMC_CONFIG_NAMES, CMC_CONFIGS, "cmc_config"),
    ],
)
def test_each_choice_list_equals_the_names_its_module_implements(
    config_choices, implemented, flag_name
):
    # Same names in the same order (the order of the help text and of the error's list).
    assert tuple(config_choices) == tuple(implemented), flag_name
    assert all(isinstance(name, str) for name in config_choices)


def test_the_flags_offer_exactly_those_choices():
    choices = {field.name: field.metadata["choices"] for _, field, _ in config.flag_fields()}
    assert choices["backbone_model_name"] == config.BACKBONE_MODEL_NAMES
    assert choices["identity_head"] == config.IDENTITY_HEAD_MODES
    assert choices["pooling_mode"] == config.POOLING_MODES
    assert choices["learning_rate_mode"] == config.LEARNING_RATE_MODES
    assert choices["sampling_mode"] == config.SAMPLING_MODES
    assert choices["distance_metric"] == config.DISTANCE_METRIC_NAMES
    assert choices["cmc_config"] == config.CMC_CONFIG_NAMES


def test_building_a_config_loads_no_tensorflow_and_no_model_module():
    loaded = modules_loaded_by(
        "from applications.config import build_experiment_config\n"
        "build_experiment_config(backbone_model_name='resnet50', pooling_mode='Max')\n",
        top_level_names=("tensorflow", "tf_keras", "keras", "tf2cv", "datasets", "applications"),
        allowed_names=("applications", "applications.config"),
    )
    assert loaded == [], loaded
