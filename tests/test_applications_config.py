"""The typed configuration: each rule stated once in a field, checked with the flag's name."""

import dataclasses
import inspect

import pytest

from applications.config import (
    CROSS_FIELD_RULES,
    GROUPS,
    ExperimentConfig,
    TrainingConfig,
    build_experiment_config,
    field_value_type,
    flag_fields,
    resume_matching_flag_names,
    with_recipe_defaults,
)
from applications.learning_rate import build_learning_rate_function


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(epoch_num=0), "--epoch_num must be at least 1; got 0."),
        (dict(image_height=16), "--image_height must be at least 32; got 16."),
        (dict(random_erasing_probability=1.5), "--random_erasing_probability must be at most"),
        (dict(last_stride=3), "--last_stride must be one of 1, 2; got 3."),
        (dict(pooling_mode="Mean"), "--pooling_mode must be one of Average, Max, GeM"),
        (dict(regularization_mode="weight_decay"), "--regularization_mode must be one of l2,"),
        (dict(label_smoothing=1.0), "--label_smoothing must be in [0, 1)"),
        (dict(gem_initial_power=0.0), "--gem_initial_power must be above 0"),
        (dict(testing_size=float("inf")), "--testing_size must be 0 (no test evaluation)"),
        (dict(testing_size=-0.5), "--testing_size must be 0 (no test evaluation)"),
        (dict(pretrained_model_file_path="/nonexistent.h5"), "--pretrained_model_file_path"),
        (dict(evaluation_only=True), "--evaluation_only needs --pretrained_model_file_path"),
        (
            dict(use_feature_clipping=True, min_value=1.0, max_value=1.0),
            "--min_value must be below --max_value",
        ),
        (dict(epoch_num=True), "--epoch_num must be int; got True."),
        (dict(seed="0"), "--seed must be int"),
        (dict(combined_dataset_names="Market1501"), "--combined_dataset_names must be comma"),
        (dict(epoch_numbers=3), "Unknown option(s): epoch_numbers."),
    ],
)
def test_a_broken_rule_is_one_message_naming_the_flag(values, message):
    with pytest.raises(ValueError) as raised:
        build_experiment_config(**values)
    assert str(raised.value).startswith(message)


def test_allowed_edge_values_and_conversions(tmp_path):
    weights_file_path = tmp_path / "model.h5"
    weights_file_path.write_bytes(b"")
    config = build_experiment_config(
        testing_size=0,  # test evaluation off
        epoch_num=1,
        image_height=32,
        random_erasing_probability=1,
        learning_rate_base=1,  # an int for a float flag becomes a float
        min_value=1.0,
        max_value=0.0,
        use_feature_clipping=False,  # the bounds only matter when clipping
        combined_dataset_names=["Market1501", "MSMT17"],
        pretrained_model_file_path=str(weights_file_path),
    )
    assert config.data.testing_size == 0.0 and isinstance(config.data.testing_size, float)
    assert isinstance(config.training.learning_rate_base, float)
    assert config.training.random_erasing_probability == 1.0
    assert config.data.combined_dataset_names == ("Market1501", "MSMT17")
    assert build_experiment_config(testing_size=7).data.testing_size == 7.0
    assert build_experiment_config(testing_size=2.7).data.testing_size == 2.7  # FlipReID: int()
    assert build_experiment_config(workers=None).training.workers is None


def test_flat_values_round_trip_and_every_field_is_documented():
    config = build_experiment_config(epoch_num=3, last_stride=2, regularization_mode="none")
    flat = config.to_flat()
    assert len(flat) == len(flag_fields())  # flag names are unique across groups
    assert build_experiment_config(**flat) == config
    assert flat["epoch_num"] == 3 and flat["last_stride"] == 2
    for _, field, annotation in flag_fields():
        metadata = field.metadata
        assert metadata["help"].strip(), field.name
        value_type, optional = field_value_type(annotation)
        assert value_type in (int, float, bool, str, tuple), field.name
        if field.default is None:
            assert optional, field.name
        if metadata["choices"] is not None:
            assert field.default in metadata["choices"], field.name
    names = {field.name for _, group in GROUPS for field in dataclasses.fields(group)}
    for rule in CROSS_FIELD_RULES:
        assert set(rule.names) <= names


def test_defaults_are_the_flags_documented_values():
    config = ExperimentConfig()
    assert config.model.last_stride == 1  # FlipReID's
    assert config.model.regularization_mode == "none"  # measured best from random weights
    assert config.model.use_feature_clipping is False
    assert config.data.testing_size == 1.0
    assert config.training.workers is None
    assert config.data.combined_dataset_names == ("Market1501", "DukeMTMC_reID")


# Each combination that the learning-rate library refuses, stated as flags (recipe included).
_BAD_LEARNING_RATE_COMBINATIONS = [
    (dict(recipe="flipreid", learning_rate_mode="cosine"), "--learning_rate_mode cosine decays"),
    (dict(learning_rate_mode="constant"), "--learning_rate_mode constant keeps one rate"),
    (dict(learning_rate_mode="linear", epoch_num=1), "--learning_rate_mode linear goes"),
    (
        dict(learning_rate_mode="default", learning_rate_steady_epochs=0),
        "--learning_rate_mode default drops the rate every",
    ),
    (
        dict(learning_rate_mode="default", learning_rate_drop_factor=0, epoch_num=4),
        "--learning_rate_mode default with --learning_rate_drop_factor 0",
    ),
]


@pytest.mark.parametrize("values, message", _BAD_LEARNING_RATE_COMBINATIONS)
def test_learning_rate_rules_are_refused_by_the_config_before_any_work(tmp_path, values, message):
    output_folder_path = tmp_path / "outputs"
    with pytest.raises(ValueError) as raised:
        build_experiment_config(**values, output_folder_path=str(output_folder_path))
    assert str(raised.value).startswith(message)
    assert not output_folder_path.exists()  # no run folder: refused before the run starts
    # The same settings, with the recipe's defaults, are what the library itself refuses.
    settings = with_recipe_defaults(values)
    training_fields = {field.name: field.default for field in dataclasses.fields(TrainingConfig)}
    names = inspect.signature(build_learning_rate_function).parameters
    arguments = {name: settings.get(name, training_fields.get(name)) for name in names}
    arguments["staircase_decay_epochs"] = [
        int(epoch) for epoch in arguments["staircase_decay_epochs"]
    ]
    del arguments["restart_epoch"]
    with pytest.raises(ValueError):
        build_learning_rate_function(**arguments)


@pytest.mark.parametrize(
    "values",
    [
        dict(recipe="flipreid", learning_rate_mode="constant"),  # the recipe's start == end
        dict(recipe="alignedreid", learning_rate_mode="exponential"),  # its 150 epochs >= 76
        dict(learning_rate_mode="default", learning_rate_drop_factor=0, epoch_num=5),
        dict(learning_rate_mode="cosine", learning_rate_steady_epochs=0),  # read by default only
    ],
)
def test_learning_rate_combinations_the_library_accepts_pass(values):
    build_experiment_config(**values)


def test_the_flags_that_must_match_on_resume_are_field_metadata():
    names = resume_matching_flag_names()
    assert {"backbone_model_name", "image_height", "seed", "model_num"} <= set(names)
    # They shape the data stream and the stage boundaries.
    assert {"sampling_mode", "restart_schedule_after_freezing"} <= set(names)
    assert not {"epoch_num", "learning_rate_start", "output_folder_path"} & set(names)
