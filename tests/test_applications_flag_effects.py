"""The table of the flags each mode or switch reads; warnings for typed flags left unread."""

import shlex

import pytest
from absl import flags

import solution
from applications.config import build_experiment_config, flag_fields
from applications.flag_effects import FLAGS_READ_BY, When, flags_without_effect
from applications.layers import POOLING_LAYER_BUILDERS
from applications.learning_rate import LEARNING_RATE_FUNCTIONS, build_learning_rate_function
from applications.optimizers import regularization_settings

FIELDS = {field.name: field for _, field, _ in flag_fields()}


def _warnings(command_line):
    """The warnings solution.py prints for a command line (flags after "solution.py")."""
    flag_values = flags.FlagValues()
    solution.define_flags(flag_values)
    flag_values(["solution.py", *shlex.split(command_line)])
    config = solution.config_from_flags(flag_values)
    return flags_without_effect(config.to_flat(), solution.given_flag_names(flag_values))


def test_every_table_entry_names_real_fields_and_real_choices():
    for switch, readers in FLAGS_READ_BY.items():
        assert switch in FIELDS, switch
        choices = FIELDS[switch].metadata["choices"]
        for key, read_names in readers.items():
            assert set(read_names) <= set(FIELDS), (switch, set(read_names) - set(FIELDS))
            assert switch not in read_names
            if isinstance(key, When):
                continue
            if isinstance(key, bool):
                assert isinstance(FIELDS[switch].default, bool), switch
            elif choices is not None:
                assert key in choices, (switch, key)
            else:
                assert switch == "dataset_name", switch  # its names are not an enum
    # Every mode of the enums that gate flags has a row, so a new mode cannot be forgotten.
    assert set(FLAGS_READ_BY["learning_rate_mode"]) == set(LEARNING_RATE_FUNCTIONS)
    assert set(FLAGS_READ_BY["regularization_mode"]) == set(
        FIELDS["regularization_mode"].metadata["choices"]
    )
    assert set(FLAGS_READ_BY["pooling_mode"]) <= set(POOLING_LAYER_BUILDERS)


# Settings where every rule of the learning-rate modes holds, and a change of each flag that
# stays valid; the schedule is compared over all epochs.
_SCHEDULE_SETTINGS = dict(
    epoch_num=12,
    learning_rate_start=1e-3,
    learning_rate_end=1e-5,
    learning_rate_base=1e-3,
    learning_rate_warmup_epochs=3,
    learning_rate_steady_epochs=4,
    learning_rate_drop_factor=10.0,
    learning_rate_lower_bound=1e-7,
    exponential_decay_start_epoch=4,
    staircase_decay_epochs=(3, 6),
    staircase_decay_factor=0.1,
)
_CHANGED = dict(
    learning_rate_start=5e-4,
    learning_rate_end=2e-5,
    learning_rate_base=5e-4,
    learning_rate_warmup_epochs=5,
    learning_rate_steady_epochs=2,
    learning_rate_drop_factor=2.0,
    learning_rate_lower_bound=2e-3,
    exponential_decay_start_epoch=6,
    staircase_decay_epochs=(2, 5),
    staircase_decay_factor=0.5,
)


# The constant mode's rule: start equals end; a warm-up climbs from start to end.
_MODE_SETTINGS = {
    "constant": dict(learning_rate_end=1e-3),
    "warmup": dict(learning_rate_start=1e-5, learning_rate_end=1e-3),
}


def _schedule(mode, **changes):
    settings = {**_SCHEDULE_SETTINGS, **_MODE_SETTINGS.get(mode, {}), **changes}
    try:
        function = build_learning_rate_function(mode, **settings)
    except ValueError:
        return "refused"  # the mode's own rule reads the flag
    return [function(epoch) for epoch in range(_SCHEDULE_SETTINGS["epoch_num"])]


@pytest.mark.parametrize("mode", sorted(LEARNING_RATE_FUNCTIONS))
def test_the_learning_rate_rows_say_what_each_schedule_reads(mode):
    # Independent reference: a flag is read by a mode exactly when changing it changes the
    # schedule (or breaks the mode's rule, which reads it too).
    read = FLAGS_READ_BY["learning_rate_mode"][mode]
    for name, value in _CHANGED.items():
        changed = _schedule(mode, **{name: value}) != _schedule(mode)
        if name == "learning_rate_lower_bound":
            assert changed, (mode, name)  # the floor of every mode: in no row
            assert all(name not in names for names in FLAGS_READ_BY["learning_rate_mode"].values())
        else:
            assert changed == (name in read), (mode, name)


@pytest.mark.parametrize("mode", ["l2", "decoupled", "none"])
def test_the_regularization_rows_say_which_factors_each_mode_reads(mode):
    names = (
        "kernel_regularization_factor",
        "bias_regularization_factor",
        "gamma_regularization_factor",
        "beta_regularization_factor",
    )

    def settings(**changes):
        factors, optimizer = regularization_settings(
            mode, **{**dict.fromkeys(names, 1e-4), **changes}
        )
        return factors, float(getattr(optimizer, "weight_decay", None) or 0.0)

    for name in names:
        changed = settings(**{name: 3e-4}) != settings()
        assert changed == (name in FLAGS_READ_BY["regularization_mode"][mode]), (mode, name)


def test_a_flag_the_mode_ignores_gets_a_warning_naming_it_and_what_it_needs():
    assert _warnings("--learning_rate_base 1e12") == [
        "--learning_rate_base has no effect: it is read only with --learning_rate_mode default, "
        "exponential or staircase (here --learning_rate_mode is cosine)."
    ]
    assert _warnings("--learning_rate_mode default --learning_rate_base 1e12") == []
    [clipping] = _warnings("--min_value 0.5")
    assert clipping.startswith(
        "--min_value has no effect: it is read only with --use_feature_clipping"
    )
    assert _warnings("--use_feature_clipping --min_value 0.5") == []
    warnings = _warnings("--kernel_regularization_factor 1e-3 --gamma_regularization_factor 1e-3")
    assert [warning.split(" ", 1)[0] for warning in warnings] == [
        "--kernel_regularization_factor",
        "--gamma_regularization_factor",
    ]
    assert (
        "--regularization_mode l2 or decoupled (here --regularization_mode is none)" in warnings[0]
    )
    assert "--regularization_mode l2 (here" in warnings[1]
    assert _warnings("--regularization_mode decoupled --gamma_regularization_factor 1e-3") != []
    assert _warnings("--regularization_mode l2 --gamma_regularization_factor 1e-3") == []


def test_switches_of_counts_datasets_and_testing():
    [mutual] = _warnings("--probability_mutual_loss_weight 2")
    assert "--model_num above 1 (here --model_num is 1)" in mutual
    [local] = _warnings("--local_distance_mutual_loss_weight 1")
    assert (
        "--use_local_branch and --model_num above 1 and --local_distance_own_hard_samples" in local
    )
    assert (
        _warnings(
            "--use_local_branch --model_num 2 --local_distance_own_hard_samples "
            "--local_distance_mutual_loss_weight 1"
        )
        == []
    )
    [testing] = _warnings("--testing_size 0 --use_re_ranking")
    assert (
        testing.startswith("--use_re_ranking has no effect") and "--testing_size above 0" in testing
    )
    [variant] = _warnings("--cuhk03_variant labeled")
    assert "--dataset_name CUHK03 (or Combined with CUHK03 among its datasets)" in variant
    assert _warnings("--dataset_name Combined --combined_dataset_names CUHK03,Synthetic "
                     "--cuhk03_variant labeled --synthetic_camera_num 3") == []  # fmt: skip
    [unit] = _warnings("--steps_per_epoch 200 --epoch_unit identities")
    assert "--epoch_unit has no effect: it is read only with --steps_per_epoch 0 (here" in unit
    [crop] = _warnings("--crop_ratio 0.8")
    assert "--ratio_crop_probability above 0 (here --ratio_crop_probability is 0.0)" in crop
    assert _warnings("--crop_ratio 0.8 --ratio_crop_probability 0.5") == []
    [export] = _warnings("--noexport_with_flipping")
    assert "--export_folder_path set (here --export_folder_path is unset)" in export


def test_recipe_values_are_not_typed_flags():
    # The flipreid recipe sets learning rates and factors that its default mode and L2 read;
    # only what the user types counts, so a plain FlipReID run warns about nothing.
    assert _warnings("--backbone_model_name resnet50") == []
    # FlipReID's README lines pass start and end although its default mode reads the base only.
    warnings = _warnings(
        "--backbone_model_name resnet50 --learning_rate_start 2e-4 --learning_rate_end 2e-4 "
        "--learning_rate_base 2e-4"
    )
    assert [warning.split(" ", 1)[0] for warning in warnings] == [
        "--learning_rate_start",
        "--learning_rate_end",
    ]
    assert all("(here --learning_rate_mode is default)" in warning for warning in warnings)


def test_evaluation_only_leaves_the_training_flags_unread(tmp_path):
    weights_file_path = tmp_path / "training_model.h5"
    weights_file_path.write_bytes(b"")
    warnings = _warnings(
        f"--evaluation_only --pretrained_model_file_path {weights_file_path} --epoch_num 5 "
        "--seed 3 --normalize_feature"
    )
    assert warnings == [
        "--epoch_num has no effect: it is read only with --noevaluation_only (here "
        "--evaluation_only is on)."
    ]


def test_the_warning_lists_every_unmet_switch_once_per_flag():
    values = build_experiment_config().to_flat()
    assert flags_without_effect(values, ["epoch_num", "seed", "image_height"]) == []
    warnings = flags_without_effect(values, ["min_value", "min_value"])
    assert len(warnings) == 1
