"""Which flags each mode or switch reads, and the flags a command line gives to no effect.

`FLAGS_READ_BY` is the one table: for each flag that gates others (a mode, a switch, a count),
the flags read only under some of its values. A flag typed on the command line that the other
settings leave unread gets a warning naming it, what it would need and the value that stops it,
e.g. `--learning_rate_base` under `--learning_rate_mode cosine`.

Warnings rather than errors, by choice: FlipReID's own README command lines pass
`--learning_rate_start`, `--learning_rate_end` and `--learning_rate_base` together although its
default mode reads only the base, and AlignedReID-style scripts keep flags of modes they switched
off; refusing them would break command lines that are meant to run. Where a combination would
surely surprise, `applications.config.CROSS_FIELD_RULES` refuses it (e.g. `--evaluation_only`
without weights, `--visualize_ranked_lists` with `--testing_size 0`).

Only flags the user typed count: a recipe's values are defaults, never "given".
"""

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class When:
    """A condition on a switch that is not one of its values, e.g. "--model_num above 1".

    Attributes:
        label: str, what it requires, phrased to follow the switch's flag name ("above 1").
        test: callable (switch value, all values by flag name) -> bool.
    """

    label: str
    test: Callable


def _above(bound):
    return When(f"above {bound:g}", lambda value, values: value is not None and value > bound)


def _below(bound):
    return When(f"below {bound:g}", lambda value, values: value is not None and value < bound)


_SET = When("set", lambda value, values: bool(value))


def _dataset_uses(name):
    """--dataset_name `name`, or Combined with `name` among its parts."""

    def test(value, values):
        parts = [*values["combined_dataset_names"], values["evaluation_dataset_name"]]
        return value == name or (value == "Combined" and name in parts)

    return When(f"{name} (or Combined with {name} among its datasets)", test)


_LEARNING_RATE_FLAGS = (
    "learning_rate_start",
    "learning_rate_end",
    "learning_rate_base",
    "learning_rate_warmup_epochs",
    "learning_rate_steady_epochs",
    "learning_rate_drop_factor",
    "learning_rate_lower_bound",
    "exponential_decay_start_epoch",
    "staircase_decay_epochs",
    "staircase_decay_factor",
)
_REGULARIZATION_FACTORS = (
    "kernel_regularization_factor",
    "bias_regularization_factor",
    "gamma_regularization_factor",
    "beta_regularization_factor",
)
_AUGMENTATION_PROBABILITIES = (
    "random_crop_probability",
    "horizontal_flip_probability",
    "patch_replacement_probability",
    "random_erasing_probability",
    "crop_ratio",
    "ratio_crop_probability",
)
_LOSS_FLAGS = (
    "triplet_margin",
    "label_smoothing",
    "triplet_loss_weight",
    "cross_entropy_loss_weight",
    "flipping_loss_weight",
    "local_triplet_loss_weight",
    "local_triplet_margin",
    "local_distance_own_hard_samples",
    "probability_mutual_loss_weight",
    "global_distance_mutual_loss_weight",
    "local_distance_mutual_loss_weight",
)
# Evaluation settings of the test set (--visualize_ranked_lists with --testing_size 0 is an
# error in the config instead).
_TESTING_FLAGS = (
    "evaluate_testing_every_N_epochs",
    "evaluate_before_training",
    "use_horizontal_flipping_in_evaluation",
    "distance_metric",
    "use_re_ranking",
    "cmc_config",
    "testing_batch_size",
    "save_data_to_disk",
    "evaluation_precision",
)
# What --evaluation_only leaves unread: everything about training (seed, precision and
# devices still shape the evaluation and the Synthetic data).
_TRAINING_ONLY_FLAGS = (
    "pretrained",
    "pretrained_root",
    "regularization_mode",
    *_REGULARIZATION_FACTORS,
    *_LOSS_FLAGS,
    "freeze_backbone_for_N_epochs",
    "restart_schedule_after_freezing",
    "sampling_mode",
    "identity_num_per_batch",
    "image_num_per_identity",
    "steps_per_epoch",
    "epoch_num",
    *_LEARNING_RATE_FLAGS,
    "use_data_augmentation_in_training",
    *_AUGMENTATION_PROBABILITIES,
    "workers",
    "jit_compile",
    "epoch_unit",
    "evaluate_testing_every_N_epochs",
    "evaluate_before_training",
)

# Switch flag -> {value or When: the flags read only then}. A flag listed under a switch is read
# when the switch matches any of the keys that list it; a flag listed under several switches
# needs each of them.
FLAGS_READ_BY = {
    "learning_rate_mode": {
        "constant": ("learning_rate_start", "learning_rate_end"),
        "linear": ("learning_rate_start", "learning_rate_end"),
        "cosine": ("learning_rate_start", "learning_rate_end"),
        "warmup": ("learning_rate_start", "learning_rate_end", "learning_rate_warmup_epochs"),
        "default": (
            "learning_rate_base",
            "learning_rate_warmup_epochs",
            "learning_rate_steady_epochs",
            "learning_rate_drop_factor",
        ),
        "exponential": ("learning_rate_base", "exponential_decay_start_epoch"),
        "staircase": ("learning_rate_base", "staircase_decay_epochs", "staircase_decay_factor"),
    },
    "regularization_mode": {
        "l2": _REGULARIZATION_FACTORS,
        "decoupled": ("kernel_regularization_factor",),
        "none": (),
    },
    "use_feature_clipping": {True: ("min_value", "max_value")},
    "pooling_mode": {"GeM": ("gem_initial_power",)},
    "use_horizontal_flipping_inside_model": {
        True: ("flipping_loss_weight", "flip_batch_norm_mode")
    },
    "use_local_branch": {
        True: (
            "local_feature_dim",
            "local_triplet_loss_weight",
            "local_triplet_margin",
            "local_distance_own_hard_samples",
            "local_distance_mutual_loss_weight",
        )
    },
    "model_num": {
        _above(1): (
            "probability_mutual_loss_weight",
            "global_distance_mutual_loss_weight",
            "local_distance_mutual_loss_weight",
        )
    },
    # AlignedReID's train_ml.py computes the local distance term only then.
    "local_distance_own_hard_samples": {True: ("local_distance_mutual_loss_weight",)},
    "triplet_loss_weight": {_above(0): ("triplet_margin",)},
    "cross_entropy_loss_weight": {_above(0): ("label_smoothing",)},
    "local_triplet_loss_weight": {_above(0): ("local_triplet_margin",)},
    "freeze_backbone_for_N_epochs": {_above(0): ("restart_schedule_after_freezing",)},
    "steps_per_epoch": {When("0", lambda value, values: value == 0): ("epoch_unit",)},
    # AlignedReID's ratio crop: a probability and a ratio below 1 (1 keeps the whole image).
    "ratio_crop_probability": {_above(0): ("crop_ratio",)},
    "crop_ratio": {_below(1): ("ratio_crop_probability",)},
    "use_data_augmentation_in_training": {True: _AUGMENTATION_PROBABILITIES},
    "pretrained": {True: ("pretrained_root",)},
    "distribution_strategy": {"mirrored": ("cpu_logical_devices",)},
    "dataset_name": {
        _dataset_uses("Synthetic"): (
            "synthetic_identity_num",
            "synthetic_camera_num",
            "synthetic_image_num_per_identity",
        ),
        _dataset_uses("CUHK03"): ("cuhk03_variant",),
        "Combined": ("combined_dataset_names", "evaluation_dataset_name"),
    },
    "testing_size": {_above(0): _TESTING_FLAGS},
    "evaluation_only": {False: _TRAINING_ONLY_FLAGS},
    "export_folder_path": {_SET: ("export_with_flipping",)},
}


def _matches(key, value, values):
    if isinstance(key, When):
        return key.test(value, values)
    return value == key


def _describe_key(switch, key):
    if isinstance(key, When):
        return f"--{switch} {key.label}"
    if key is True:
        return f"--{switch}"
    if key is False:
        return f"--no{switch}"
    return f"--{switch} {key}"


def _requirement(switch, keys):
    """E.g. "--learning_rate_mode default, exponential or staircase"."""
    if all(not isinstance(key, When | bool) for key in keys):
        names = [str(key) for key in keys]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        return f"--{switch} {listed}"
    return " or ".join(_describe_key(switch, key) for key in keys)


def _value_text(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "unset"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def flags_without_effect(values, given_flag_names, table=FLAGS_READ_BY):
    """The flags given that the other settings leave unread, each with what it would need.

    Args:
        values: dict flag name -> value, every setting of the run (ExperimentConfig.to_flat()).
        given_flag_names: iterable of str, the flags typed on the command line.
        table: the switch table, FLAGS_READ_BY.

    Returns:
        list of str, one warning per such flag, in the order given, e.g. "--learning_rate_base
        has no effect: it is read only with --learning_rate_mode default, exponential or
        staircase (here --learning_rate_mode is cosine)."
    """
    warnings = []
    for name in dict.fromkeys(given_flag_names):
        unmet = []
        for switch, readers in table.items():
            keys = [key for key, read_names in readers.items() if name in read_names]
            if keys and not any(_matches(key, values[switch], values) for key in keys):
                unmet.append((switch, keys))
        if unmet:
            needs = " and ".join(_requirement(switch, keys) for switch, keys in unmet)
            now = ", ".join(f"--{switch} is {_value_text(values[switch])}" for switch, _ in unmet)
            warnings.append(f"--{name} has no effect: it is read only with {needs} (here {now}).")
    return warnings
