"""Typed configuration of one experiment: one dataclass per flag group, one field per flag.

`solution.py` turns every field into an absl flag of the same name (the type picks
DEFINE_integer/float/bool/string/list, `choices` an enum, the bounds become the flag's
`lower_bound`/`upper_bound`), reads the parsed flags once into an `ExperimentConfig`, and calls
`applications.experiment.run_experiment(config)`. Tests build the same object directly with
`build_experiment_config(epoch_num=2, ...)`. Each rule lives here once: the flag parser and
`__post_init__` both read it from the field, so a bad value gets one clear line naming the flag.

How to add an option:
1. Add a field to the group it belongs to, named like the flag, with `option(...)`:

       crop_ratio: float = option(0.05, "Padding before the random crop, as a fraction of the "
                                  "image size (FlipReID: 0.05).", lower_bound=0.0)

   `option(default, help, *, lower_bound=None, upper_bound=None, choices=None, rule=None)`:
   bounds are inclusive; `choices` is a tuple of allowed values (str: an enum flag; int: an
   integer flag restricted to them); `rule=(predicate, "must ...")` is any other one-value check.
   Help text says the unit or range and FlipReID's value where the default differs. Types:
   int, float, bool, str, `tuple[str, ...]` (a comma-separated list), or `X | None` (unset).
2. A rule that involves several flags goes into `CROSS_FIELD_RULES` below.
3. Read it in `applications/experiment.py` as `config.<group>.<name>` and pass it on as a keyword
   argument named like the flag. Library modules never see the config object or the flags.
"""

import dataclasses
import os
import types
import typing
from collections.abc import Callable

# The choices of the flags that name a registry entry live here, not in the modules that
# implement them, so that building a config loads no model code and no TensorFlow;
# tests/test_applications_config_choices.py checks that each equals its registry's names.
BACKBONE_MODEL_NAMES = (
    *(f"resnet{depth}" for depth in (10, 12, 14, 16, 18, 26, 34, 50, 101, 152)),
    *(f"ibn_resnet{depth}" for depth in (50, 101)),
    *(f"resnesta{depth}" for depth in (18, 50, 101, 152, 200, 269)),
)
IDENTITY_HEAD_MODES = ("bn_neck", "linear")
POOLING_MODES = ("Average", "Max", "GeM")
LEARNING_RATE_MODES = (
    "constant",
    "linear",
    "cosine",
    "warmup",
    "default",
    "exponential",
    "staircase",
)
DATASET_NAMES = (
    "Market1501",
    "DukeMTMC_reID",
    "MSMT17",
    "CUHK03",
    "CUHK03_detected",
    "CUHK03_labeled",
    "Combined",
    "Synthetic",
)
SAMPLING_MODES = ("balanced", "flipreid")
DISTANCE_METRIC_NAMES = ("cosine", "euclidean", "squared_euclidean")
CMC_CONFIG_NAMES = ("market1501", "cuhk03", "allshots")

REPOSITORY_FOLDER_PATH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGULARIZATION_MODES = ("l2", "decoupled", "none")
RECIPE_NAMES = ("auto", "random_init", "flipreid", "alignedreid")
# The backbone of the CPU demo, the one backbone whose "auto" recipe is random_init.
DEMO_BACKBONE = "resnet18"
# Every other backbone is one FlipReID's code accepts with its ImageNet weights.
FLIPREID_BACKBONES = tuple(name for name in BACKBONE_MODEL_NAMES if name != DEMO_BACKBONE)
# The dataset of the CPU demo: without --backbone_model_name it keeps the demo backbone, and any
# other dataset gets FlipReID's default backbone (so FlipReID's README commands, which name no
# backbone, train its resnet50).
DEMO_DATASET = "Synthetic"
FLIPREID_DEFAULT_BACKBONE = "resnet50"
# FlipReID's flag defaults (nixingyang/FlipReID, release 1.0.0, solution.py) where ours differ;
# "random_init" is the fields' own defaults. FlipReID always starts from ImageNet weights and
# trains until stopped (epoch_num 10**6); its README's commands pass --epoch_num 200.
RECIPE_DEFAULTS = {
    "random_init": {},
    "flipreid": {
        "backbone_model_name": FLIPREID_DEFAULT_BACKBONE,
        "pretrained": True,
        "image_height": 384,
        "image_width": 128,
        "last_stride": 1,
        "region_num": 2,
        "pooling_mode": "GeM",
        "gem_initial_power": 1.0,
        "use_feature_clipping": True,
        "min_value": 0.0,
        "max_value": 1.0,
        "regularization_mode": "l2",
        "use_horizontal_flipping_inside_model": False,
        "flip_batch_norm_mode": "separate",
        "freeze_backbone_for_N_epochs": 20,
        "restart_schedule_after_freezing": True,
        "sampling_mode": "flipreid",
        "steps_per_epoch": 200,
        "epoch_num": 200,
        "learning_rate_mode": "default",
        "learning_rate_start": 2e-4,
        "learning_rate_end": 2e-4,
        "learning_rate_base": 2e-4,
        "learning_rate_warmup_epochs": 10,
        "learning_rate_steady_epochs": 30,
        "learning_rate_drop_factor": 10.0,
        "learning_rate_lower_bound": 2e-6,
        "evaluate_testing_every_N_epochs": 10,
        "use_horizontal_flipping_in_evaluation": False,
        "patch_replacement_probability": 0.8,
        "random_erasing_probability": 0.8,
    },
    # AlignedReID's defaults (huanghoujing/AlignedReID-Re-Production-Pytorch, the arguments and
    # Config of script/experiment/train.py and train_ml.py) where ours differ. Its Adam's
    # weight_decay 5e-4 adds 5e-4 * w to every parameter's gradient; the L2 term
    # factor * sum(w^2) adds 2 * factor * w, hence 2.5e-4 for all four factors. It tests once,
    # after the last epoch, without flip averaging, on Euclidean distances, with re-ranking.
    "alignedreid": {
        "backbone_model_name": "resnet50",
        "pretrained": True,
        "image_height": 256,
        "image_width": 128,
        "last_stride": 2,
        "region_num": 0,
        "pooling_mode": "Average",
        "use_feature_clipping": False,
        "regularization_mode": "l2",
        "kernel_regularization_factor": 2.5e-4,
        "bias_regularization_factor": 2.5e-4,
        "gamma_regularization_factor": 2.5e-4,
        "beta_regularization_factor": 2.5e-4,
        "use_horizontal_flipping_inside_model": False,
        "identity_head": "linear",
        "triplet_margin": 0.3,
        "cross_entropy_loss_weight": 0.0,
        "flipping_loss_weight": 0.0,
        "local_triplet_margin": 0.3,
        "normalize_feature": True,
        "identity_num_per_batch": 32,
        "image_num_per_identity": 4,
        "epoch_unit": "identities",
        "epoch_num": 150,
        "learning_rate_mode": "exponential",
        "learning_rate_base": 2e-4,
        "exponential_decay_start_epoch": 76,
        "learning_rate_lower_bound": 0.0,
        "random_crop_probability": 0.0,
        "patch_replacement_probability": 0.0,
        "random_erasing_probability": 0.0,
        "evaluate_before_training": False,
        "evaluate_testing_every_N_epochs": 10**6,
        "use_horizontal_flipping_in_evaluation": False,
        "distance_metric": "euclidean",
        "use_re_ranking": True,
    },
}


def resolve_backbone_model_name(recipe, dataset_name):
    """The backbone of a run that names none: it follows the recipe, or "auto" the dataset.

    Args:
        recipe: str, one of RECIPE_NAMES, as given.
        dataset_name: str, the --dataset_name of the run.

    Returns:
        str: resnet18 (the demo's backbone) with --recipe random_init, or with "auto" on the
        Synthetic dataset; resnet50 (FlipReID's default) with --recipe flipreid, or with "auto"
        on any other dataset.
    """
    if recipe == "auto":
        return DEMO_BACKBONE if dataset_name == DEMO_DATASET else FLIPREID_DEFAULT_BACKBONE
    return RECIPE_DEFAULTS.get(recipe, {}).get("backbone_model_name", DEMO_BACKBONE)


def resolve_recipe(recipe, backbone_model_name):
    """The recipe whose defaults apply: "auto" follows the backbone.

    Args:
        recipe: str, one of RECIPE_NAMES.
        backbone_model_name: str, the backbone the run uses (given, or from
            `resolve_backbone_model_name`).

    Returns:
        "random_init" for the demo's resnet18, "flipreid" for every other backbone.
    """
    if recipe != "auto":
        return recipe
    return "flipreid" if backbone_model_name in FLIPREID_BACKBONES else "random_init"


# "auto": mixed_bfloat16 under random_init on a CPU with native bfloat16, else float32 (see
# applications/precision.py).
MIXED_PRECISION_POLICIES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
EVALUATION_PRECISIONS = ("float32", "bfloat16")
FLIP_BATCH_NORM_MODES = ("shared", "separate")


def option(
    default,
    help,
    *,
    lower_bound=None,
    upper_bound=None,
    choices=None,
    rule=None,
    must_match_on_resume=False,
):
    """A config field with its flag help and its rule.

    Args:
        default: the default value (a tuple for list flags).
        help: str, the flag's help text.
        lower_bound: number or None, the smallest allowed value (inclusive).
        upper_bound: number or None, the largest allowed value (inclusive).
        choices: tuple or None, the allowed values.
        rule: (predicate value -> bool, str) or None: another check and what it requires,
            phrased to follow the flag name ("must be ...").
        must_match_on_resume: bool, True for a setting that shapes the model, the data or the
            data stream: --resume continues only a run started with the same value (see
            `resume_matching_flag_names`).

    Returns:
        dataclasses.Field.
    """
    metadata = dict(
        help=help,
        lower_bound=lower_bound,
        upper_bound=upper_bound,
        choices=choices,
        rule=rule,
        must_match_on_resume=must_match_on_resume,
    )
    return dataclasses.field(default=default, metadata=metadata)


# Learning rates: zero or negative ones pass no useful step (a negative one climbs the loss).
_POSITIVE = (lambda value: value > 0, "must be above 0")


def _probability(default, help):
    return option(default, help, lower_bound=0.0, upper_bound=1.0)


def _non_negative_factor(help):
    return option(0.0005, help, lower_bound=0.0)


def _is_testing_size(value):
    return 0 <= value < float("inf")


def value_error(name, value, metadata):
    """What is wrong with one field's value, or None.

    Args:
        name: str, the field (and flag) name.
        value: the value, already of the field's type.
        metadata: the field's metadata (see `option`).

    Returns:
        str naming the flag, or None when the value is allowed.
    """
    if value is None:
        return None
    choices, rule = metadata["choices"], metadata["rule"]
    if choices is not None and value not in choices:
        return f"--{name} must be one of {', '.join(map(str, choices))}; got {value!r}."
    lower_bound, upper_bound = metadata["lower_bound"], metadata["upper_bound"]
    if lower_bound is not None and value < lower_bound:
        return f"--{name} must be at least {lower_bound}; got {value!r}."
    if upper_bound is not None and value > upper_bound:
        return f"--{name} must be at most {upper_bound}; got {value!r}."
    if rule is not None and not rule[0](value):
        return f"--{name} {rule[1]}; got {value!r}."
    return None


def field_value_type(annotation):
    """The value type of a field annotation and whether it may be None.

    Args:
        annotation: a type such as int, `float | None` or `tuple[str, ...]`.

    Returns:
        (type, bool): int, float, bool, str or tuple, and whether None is allowed.
    """
    optional = False
    if isinstance(annotation, types.UnionType):
        arguments = typing.get_args(annotation)
        optional = type(None) in arguments
        (annotation,) = [argument for argument in arguments if argument is not type(None)]
    if typing.get_origin(annotation) is tuple:
        return tuple, optional
    return annotation, optional


def _coerce(name, value, annotation):
    value_type, optional = field_value_type(annotation)
    if value is None and optional:
        return None
    if value_type is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if value_type is tuple and isinstance(value, list | tuple):
        if all(isinstance(item, str) for item in value):
            return tuple(value)
    elif isinstance(value, value_type) and not (value_type is int and isinstance(value, bool)):
        return value
    expected = "comma-separated names" if value_type is tuple else value_type.__name__
    raise ValueError(f"--{name} must be {expected}; got {value!r}.")


class _Group:
    """Checks and normalises every field of a group dataclass after construction."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = _coerce(field.name, getattr(self, field.name), hints[field.name])
            object.__setattr__(self, field.name, value)
            message = value_error(field.name, value, field.metadata)
            if message:
                raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class DataConfig(_Group):
    """Which dataset, where it lives, and which part of its test set is evaluated."""

    root_folder_path: str = option(
        os.path.join(REPOSITORY_FOLDER_PATH, "data"),
        "Folder that holds the dataset folders (e.g. Market-1501-v15.09.15/). The Synthetic "
        "dataset is generated here on first use.",
    )
    dataset_name: str = option(
        "Synthetic",
        f"One of {', '.join(DATASET_NAMES)}, or the path of your own folder: either with "
        "bounding_box_train, bounding_box_test and query in Market1501 naming, or in "
        "AlignedReID's format (the images/ folder and partitions.pkl that its "
        "script/dataset/transform_*.py write, Python 2 or 3).",
        rule=(
            lambda value: value in DATASET_NAMES or os.path.isdir(value),
            f"must be one of {', '.join(DATASET_NAMES)} or an existing folder in Market1501 "
            "layout or in AlignedReID's format (images/ and partitions.pkl)",
        ),
        must_match_on_resume=True,
    )
    cuhk03_variant: str = option(
        "detected",
        "CUHK03 (new protocol) bounding boxes: detected or hand-labeled.",
        choices=("detected", "labeled"),
        must_match_on_resume=True,
    )
    combined_dataset_names: tuple[str, ...] = option(
        ("Market1501", "DukeMTMC_reID"),
        "With --dataset_name Combined: the datasets whose training sets are joined, by name or "
        "as the path of a folder (Market1501 layout or AlignedReID's format). Each one's test "
        "set is evaluated and reported on its own, as AlignedReID's combined training is tested "
        "on each of its datasets.",
        must_match_on_resume=True,
    )
    evaluation_dataset_name: str = option(
        "Market1501",
        "With --dataset_name Combined: the dataset whose test metrics are the run's unprefixed "
        "ones (printed first, and watched for the best weights); the others' names start with "
        "their dataset's label and a slash (e.g. DukeMTMC_reID/mAP). Evaluated also when not "
        "in --combined_dataset_names.",
        must_match_on_resume=True,
    )
    trainset_part: str = option(
        "trainval",
        "With a folder in AlignedReID's format: the partition trained on, trainval (every "
        "training identity, its default) or train (without its validation identities; "
        "AlignedReID --trainset_part).",
        choices=("trainval", "train"),
    )
    synthetic_identity_num: int = option(
        200,
        "Synthetic dataset: identities in all, half for training and half for testing.",
        must_match_on_resume=True,
    )
    synthetic_camera_num: int = option(
        4, "Synthetic dataset: number of cameras.", must_match_on_resume=True
    )
    synthetic_image_num_per_identity: int = option(
        12,
        "Synthetic dataset: images drawn per identity.",
        must_match_on_resume=True,
    )
    verify_images: bool = option(
        False,
        "Also decode every image with OpenCV while loading and skip (and count) the ones that "
        "fail (minutes on a large dataset). Without it, a cheap check at load (size, header, "
        "end marker) skips broken files, and images that still fail to decode are skipped and "
        "counted when training or evaluation meets them.",
    )
    testing_size: float = option(
        1.0,
        "Part of the test set to evaluate on, chosen exactly as FlipReID does: a proportion in "
        "(0, 1] of the identities of query and gallery together (distractors count as one), or "
        "a number of them when above 1 (truncated by int(), as FlipReID does: 2.7 keeps 2); 0 "
        "turns test evaluation off (training then saves the last epoch's weights). Query and "
        "gallery images of the chosen identities are kept together; the choice is "
        "GroupShuffleSplit's with random_state 0, as in FlipReID.",
        rule=(
            _is_testing_size,
            "must be 0 (no test evaluation), a proportion in (0, 1] or a number of identities "
            "above 1",
        ),
        must_match_on_resume=True,
    )


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Group):
    """The network: backbone, branches, pooling, clipping, regularisation, flip structure."""

    recipe: str = option(
        "auto",
        "Defaults of the flags you do not set. random_init: what measured best from random "
        "weights on a CPU (README, Learning); flipreid: FlipReID's own defaults and procedure "
        "(resnet50 with ImageNet weights, 384x128, 20 frozen epochs before --epoch_num more with "
        "the learning-rate schedule restarting, 10 warm-up epochs to 2e-4, clipping to [0, 1], "
        "L2, its identity sampler, 200 steps per epoch...), so its README's command lines mean "
        "what they meant there; alignedreid: AlignedReID's (resnet50 with ImageNet weights, "
        "256x128, last stride 2, average pooling, P32 x K4, Adam 2e-4 decaying exponentially "
        "from epoch 76 of 150, margin 0.3, --normalize_feature, an epoch of identities / P "
        "batches, Euclidean re-ranked test; README, Coming from AlignedReID); auto: random_init "
        "for resnet18, flipreid for every other backbone. Flags you set always win.",
        choices=RECIPE_NAMES,
    )
    backbone_model_name: str = option(
        "resnet18",
        "Backbone from tf2cv, with last stride 1 (--last_stride). Unset, it follows the recipe "
        "and the dataset: resnet18 (the small CPU backbone) on the Synthetic dataset or with "
        "--recipe random_init, resnet50 (FlipReID's default) on any other dataset or with "
        "--recipe flipreid. FlipReID's README uses resnet50, ibn_resnet50 and resnesta50.",
        choices=BACKBONE_MODEL_NAMES,
        must_match_on_resume=True,
    )
    pretrained: bool = option(
        False,
        "Start from tf2cv's ImageNet weights (downloaded on first use, needs the internet).",
    )
    pretrained_root: str | None = option(
        None, "Folder of tf2cv's pretrained weight files (default: tf2cv's ~/.tensorflow/models)."
    )
    image_height: int = option(
        64,
        "Height the images are resized to, in pixels (FlipReID: 384; the demo's 64 keeps it "
        "fast on a CPU).",
        lower_bound=32,
        must_match_on_resume=True,
    )
    image_width: int = option(
        32,
        "Width the images are resized to, in pixels (FlipReID: 128).",
        lower_bound=32,
        must_match_on_resume=True,
    )
    last_stride: int = option(
        1,
        "Stride of the backbone's last stage: 1 keeps a feature map of 1/16 of the input "
        "(FlipReID: 1; pip tf2cv: 2).",
        choices=(1, 2),
        must_match_on_resume=True,
    )
    region_num: int = option(
        2,
        "Number of horizontal stripes in the regional branch (0 disables it).",
        lower_bound=0,
        must_match_on_resume=True,
    )
    pooling_mode: str = option(
        "GeM",
        "Global pooling of every branch.",
        choices=POOLING_MODES,
        must_match_on_resume=True,
    )
    gem_initial_power: float = option(
        3.0,
        "Starting value of the trainable GeM power p: 3.0 is the usual GeM start; 1.0 "
        "(FlipReID) starts as average pooling.",
        rule=(lambda value: value > 0, "must be above 0"),
    )
    use_feature_clipping: bool = option(
        False,
        "Clip the pooled features to [--min_value, --max_value], as FlipReID does (FlipReID: on). "
        "Off by default: from random weights many pooled activations exceed 1 or sit at 0, where "
        "clipping leaves them no gradient (see README, Learning).",
        must_match_on_resume=True,
    )
    min_value: float = option(
        0.0, "Lower bound of the feature embeddings when clipping.", must_match_on_resume=True
    )
    max_value: float = option(
        1.0, "Upper bound of the feature embeddings when clipping.", must_match_on_resume=True
    )
    regularization_mode: str = option(
        "none",
        "How weights are regularised. l2: FlipReID's L2 penalty in the loss with the four "
        "--*_regularization_factor flags; decoupled: AdamW-style weight decay of "
        "--kernel_regularization_factor applied by the optimizer (no L2 term in the loss); "
        "none: no regularisation (the default: measured best from random weights on short "
        "runs; FlipReID: l2).",
        choices=REGULARIZATION_MODES,
        must_match_on_resume=True,
    )
    kernel_regularization_factor: float = _non_negative_factor("L2 factor of kernels.")
    bias_regularization_factor: float = _non_negative_factor("L2 factor of biases.")
    gamma_regularization_factor: float = _non_negative_factor("L2 factor of batch-norm gammas.")
    beta_regularization_factor: float = _non_negative_factor("L2 factor of batch-norm betas.")
    use_horizontal_flipping_inside_model: bool = option(
        False,
        "The FlipReID structure: train on the average embedding of each image and its "
        "horizontal flip, and add the flipping loss (MSE between the two embeddings); each "
        "step costs about 1.7x. Off by default: from random weights, the same minutes without "
        "it trained better on held-out data (README, Learning). FlipReID's flag defaults to "
        "off too; its published results (from ImageNet weights) use it.",
        must_match_on_resume=True,
    )
    flip_batch_norm_mode: str = option(
        "shared",
        "With the flip structure, the batch-norm statistics of training: shared (one batch of "
        "the images and their flips, one set of statistics over the 2B images; the random_init "
        "default) or separate (two passes of B images, statistics per pass, as FlipReID, which "
        "calls its inference model on the images and then on their flips; the flipreid "
        "recipe's). Inference mode is the same in both.",
        choices=FLIP_BATCH_NORM_MODES,
    )
    use_local_branch: bool = option(
        False,
        "AlignedReID's local branch on the global branch's feature map: mean over the width, 1x1 "
        "convolution, batch normalisation and ReLU give one feature per row; trained with the "
        "local triplet loss on the aligned distance, and evaluated as AlignedReID's six rows "
        "(global, local, global_local, each also re-ranked).",
        must_match_on_resume=True,
    )
    local_feature_dim: int = option(
        128,
        "Channels of each local (row) feature (AlignedReID: 128).",
        lower_bound=1,
        must_match_on_resume=True,
    )
    identity_head: str = option(
        "bn_neck",
        "The identity (softmax) head of each branch. bn_neck: FlipReID's batch-normalisation "
        "neck and bias-free linear layer; linear: AlignedReID's linear layer with bias on the "
        "raw embedding (the alignedreid recipe's; it trains only with "
        "--cross_entropy_loss_weight above 0, AlignedReID's -idlw).",
        choices=IDENTITY_HEAD_MODES,
    )
    model_num: int = option(
        1,
        "Models trained jointly by deep mutual learning (AlignedReID --num_models); each is "
        "evaluated and saved on its own in model_<i>/.",
        lower_bound=1,
        must_match_on_resume=True,
    )


@dataclasses.dataclass(frozen=True)
class LossesConfig(_Group):
    """Margins, smoothing and weights of the three losses."""

    triplet_margin: float | None = option(
        None,
        "Margin of the batch-hard triplet loss; unset means the soft margin "
        "log(1 + exp(d_ap - d_an)).",
    )
    label_smoothing: float = option(
        0.0,
        "Label smoothing of the softmax ID loss, in [0, 1).",
        rule=(lambda value: 0 <= value < 1, "must be in [0, 1)"),
    )
    triplet_loss_weight: float = option(1.0, "Weight of the triplet loss.", lower_bound=0.0)
    cross_entropy_loss_weight: float = option(
        1.0, "Weight of the softmax ID loss.", lower_bound=0.0
    )
    flipping_loss_weight: float = option(1.0, "Weight of the flipping loss.", lower_bound=0.0)
    local_triplet_loss_weight: float = option(
        1.0,
        "With --use_local_branch: weight of the local triplet loss (AlignedReID -llw).",
        lower_bound=0.0,
    )
    local_triplet_margin: float | None = option(
        None,
        "With --use_local_branch: hinge margin of the local triplet loss (AlignedReID: 0.3); "
        "unset means the soft margin.",
    )
    local_distance_own_hard_samples: bool = option(
        False,
        "Mine the local triplet loss's hard samples from the local distance instead of the global "
        "one (AlignedReID --local_dist_own_hard_sample).",
    )
    normalize_feature: bool = option(
        False,
        "L2-normalise the embeddings and each local stripe before every distance, in training "
        "(triplet and mutual losses) and at test time (global and local features), as "
        "AlignedReID --normalize_feature does (on in the alignedreid recipe).",
    )
    probability_mutual_loss_weight: float = option(
        1.0,
        "With --model_num > 1: weight of the KL mutual loss (AlignedReID -pmlw).",
        lower_bound=0.0,
    )
    global_distance_mutual_loss_weight: float = option(
        1.0,
        "With --model_num > 1: weight of the global-distance mutual loss (AlignedReID -gdmlw).",
        lower_bound=0.0,
    )
    local_distance_mutual_loss_weight: float = option(
        0.0,
        "With --model_num > 1: weight of the local-distance mutual loss (AlignedReID -ldmlw).",
        lower_bound=0.0,
    )


@dataclasses.dataclass(frozen=True)
class TrainingConfig(_Group):
    """Batches, epochs, learning-rate schedule, augmentation, precision and seed."""

    freeze_backbone_for_N_epochs: int = option(
        0,
        "Train only the heads for the first N epochs (FlipReID: 20, with --pretrained).",
        lower_bound=0,
        must_match_on_resume=True,
    )
    restart_schedule_after_freezing: bool = option(
        False,
        "FlipReID's procedure: the --freeze_backbone_for_N_epochs frozen epochs come before "
        "--epoch_num epochs of training the whole model (N + epoch_num in all), and the "
        "learning-rate schedule restarts at its epoch 0 when the backbone is unfrozen (a second "
        "warm-up). Off: N + the rest make --epoch_num in all, on one schedule (the flipreid "
        "recipe turns it on).",
        must_match_on_resume=True,
    )
    sampling_mode: str = option(
        "balanced",
        "Identity sampler of the P x K batches. balanced: identities visited round-robin, each "
        "equally often; one with fewer than K images repeats some. flipreid: FlipReID's: each "
        "pass shuffles every identity's images into groups of K (leaving out the remainder), "
        "skips identities with fewer than K images, and draws P identities at random among those "
        "with groups left until fewer than P remain (the flipreid recipe's choice).",
        choices=SAMPLING_MODES,
        must_match_on_resume=True,
    )
    identity_num_per_batch: int = option(
        16, "Identities per batch (P).", lower_bound=2, must_match_on_resume=True
    )
    image_num_per_identity: int = option(
        4, "Images per identity in a batch (K).", lower_bound=2, must_match_on_resume=True
    )
    steps_per_epoch: int = option(
        0,
        "Steps per epoch; 0 means one pass over the training images (FlipReID: 200).",
        lower_bound=0,
        must_match_on_resume=True,
    )
    epoch_num: int = option(
        8,
        "Number of epochs in all; with --restart_schedule_after_freezing (the flipreid recipe) "
        "the epochs after the --freeze_backbone_for_N_epochs frozen ones, as in FlipReID "
        "(FlipReID: 10^6, train until stopped; its README: 200).",
        lower_bound=1,
    )
    epoch_unit: str = option(
        "images",
        "What one epoch is when --steps_per_epoch is 0. images: one pass over the training "
        "images, ceil(images / (P x K)) steps. identities: AlignedReID's epoch, every training "
        "identity once, identities / P steps, rounded down with one model (its train.py drops "
        "the last incomplete batch: 23 on Market-1501 at P = 32) and up with --model_num above 1 "
        "(its train_ml.py keeps it: 24); the alignedreid recipe's choice.",
        choices=("images", "identities"),
    )
    learning_rate_mode: str = option(
        "cosine",
        "Learning-rate schedule over epochs. cosine (our default): half cosine from "
        "--learning_rate_start down to --learning_rate_end over --epoch_num. default "
        "(FlipReID's): linear warm-up from the lower bound to the base, then a drop by "
        "--learning_rate_drop_factor every --learning_rate_steady_epochs.",
        choices=LEARNING_RATE_MODES,
    )
    learning_rate_start: float = option(
        1e-3,
        "Starting learning rate (linear, cosine, warmup; FlipReID: 2e-4).",
        rule=_POSITIVE,
    )
    learning_rate_end: float = option(
        1e-5,
        "Ending learning rate (linear, cosine, warmup; FlipReID: 2e-4).",
        rule=_POSITIVE,
    )
    learning_rate_base: float = option(
        1e-3,
        "Base learning rate of the default mode (FlipReID: 2e-4, for ImageNet-pretrained "
        "backbones; the demo trains from random weights).",
        rule=_POSITIVE,
    )
    learning_rate_warmup_epochs: int = option(2, "Warm-up epochs (FlipReID: 10).")
    learning_rate_steady_epochs: int = option(30, "Epochs between two drops in the default mode.")
    learning_rate_drop_factor: float = option(10.0, "Divisor applied at each drop.")
    learning_rate_lower_bound: float = option(2e-6, "Lowest learning rate.", lower_bound=0.0)
    exponential_decay_start_epoch: int = option(
        76,
        "Exponential mode: 1-based epoch s from which the rate is base * 0.001 ** ((e + 1 - s) / "
        "(epoch_num + 1 - s)) (AlignedReID --exp_decay_at_epoch).",
        lower_bound=1,
    )
    staircase_decay_epochs: tuple[str, ...] = option(
        ("101", "201"),
        "Staircase mode: increasing 1-based epochs at whose start the rate is multiplied by "
        "--staircase_decay_factor (AlignedReID --staircase_decay_at_epochs).",
        rule=(
            lambda value: (
                all(item.strip().isdigit() and int(item) >= 1 for item in value)
                and [int(item) for item in value] == sorted({int(item) for item in value})
            ),
            "must be increasing whole numbers >= 1, e.g. 101,201",
        ),
    )
    staircase_decay_factor: float = option(
        0.1,
        "Staircase mode: multiplier at each listed epoch (AlignedReID "
        "--staircase_decay_multiply_factor).",
        rule=(lambda value: 0 < value <= 1, "must be in (0, 1]"),
    )
    use_data_augmentation_in_training: bool = option(
        True,
        "Random padding and crop, horizontal flip, grayscale patch replacement, random erasing.",
        must_match_on_resume=True,
    )
    random_crop_probability: float = _probability(
        1.0, "Probability of the random padding and crop."
    )
    crop_ratio: float = option(
        1.0,
        "AlignedReID's ratio crop (its --crop_ratio): a window of a random fraction in "
        "[crop_ratio, 1] of the height and, drawn apart, of the width, at a random place, resized "
        "back to the image size; 1 keeps the whole image. Applied with --ratio_crop_probability, "
        "before the other transforms.",
        rule=(lambda value: 0 < value <= 1, "must be in (0, 1]"),
    )
    ratio_crop_probability: float = _probability(
        0.0, "Probability of the ratio crop of --crop_ratio (AlignedReID --crop_prob; 0, as there)."
    )
    horizontal_flip_probability: float = _probability(0.5, "Probability of a horizontal flip.")
    patch_replacement_probability: float = _probability(
        0.0,
        "Probability of replacing a random patch with its grayscale version (FlipReID: 0.8; "
        "off by default: from random weights on short runs it slowed learning, see README, "
        "Learning).",
    )
    random_erasing_probability: float = _probability(
        0.0,
        "Probability of random erasing (FlipReID: 0.8; off by default for the same reason).",
    )
    workers: int | None = option(
        None,
        "Parallel workers of the training input pipeline (FlipReID: 5 processes); unset lets "
        "tf.data choose.",
        lower_bound=1,
    )
    mixed_precision_policy: str = option(
        "auto",
        "Keras mixed-precision policy of training. auto: mixed_bfloat16 under the random_init "
        "recipe on a CPU with native bfloat16 (avx512_bf16 or amx_bf16 in /proc/cpuinfo) and "
        "no GPU in use, float32 otherwise (the flipreid and alignedreid recipes keep their "
        "reference's float32); the run's first lines say which and why. float32 turns "
        "bfloat16 off; mixed_float16 suits NVIDIA GPUs. Losses, GeM pooling, the embeddings "
        "and the distances stay float32.",
        choices=MIXED_PRECISION_POLICIES,
        must_match_on_resume=True,
    )
    seed: int = option(
        0, "Random seed of weights, sampling and augmentation.", must_match_on_resume=True
    )
    resume: bool = option(
        False,
        "Continue the most recent unfinished run of this dataset and backbone in "
        "--output_folder_path that was started with the same model and data flags, from its "
        "last completed epoch (weights, optimizer state, schedule, stage, data stream, best "
        "record and history).",
    )
    resume_from: str | None = option(
        None,
        "Continue the unfinished run in this run folder (e.g. outputs/Synthetic_resnet18_2), "
        "as --resume does.",
    )
    distribution_strategy: str = option(
        "default",
        "default: one device; mirrored: MirroredStrategy over this machine's GPUs (or its "
        "--cpu_logical_devices); multi_worker: MultiWorkerMirroredStrategy over several "
        "machines, configured by the TF_CONFIG environment variable. The batch of "
        "--identity_num_per_batch x --image_num_per_identity is global, split between replicas "
        "by whole identities.",
        choices=("default", "mirrored", "multi_worker"),
    )
    cpu_logical_devices: int = option(
        0,
        "Split the CPU into N logical devices (N >= 2), e.g. to try --distribution_strategy "
        "mirrored without GPUs; 0 leaves it whole.",
        lower_bound=0,
    )
    jit_compile: bool = option(
        False,
        "Compile the training step with XLA. Off by default: on CPU it measured 1.6-15x slower; "
        "try it on a GPU.",
    )


@dataclasses.dataclass(frozen=True)
class EvaluationConfig(_Group):
    """When and how the test set is evaluated, and where results go."""

    evaluate_testing_every_N_epochs: int = option(
        4, "Evaluate every N epochs; the last epoch always is (FlipReID: 10).", lower_bound=1
    )
    evaluate_before_training: bool = option(
        True, "Evaluate the untrained model first, as a baseline for the trained one."
    )
    use_horizontal_flipping_in_evaluation: bool = option(
        True,
        "Average each test embedding with that of the flipped image (FlipReID's flag defaults "
        "to off).",
    )
    evaluation_precision: str = option(
        "float32",
        "Precision of feature extraction in evaluation: float32 (also after bfloat16 training: "
        "the trained weights are copied into a float32 twin of the inference model, so "
        "evaluation numbers compare with float32 runs) or bfloat16 (the layers compute in "
        "bfloat16, the embeddings and distances stay float32; faster on a CPU with native "
        "bfloat16, see README, Speed).",
        choices=EVALUATION_PRECISIONS,
    )
    distance_metric: str = option(
        "cosine", "Distance between embeddings.", choices=DISTANCE_METRIC_NAMES
    )
    use_re_ranking: bool = option(
        False, "Also report metrics after k-reciprocal re-ranking (k1=20, k2=6)."
    )
    cmc_config: str = option(
        "market1501",
        "CMC protocol: market1501 (standard), cuhk03 (single gallery shot) or allshots.",
        choices=CMC_CONFIG_NAMES,
    )
    testing_batch_size: int = option(
        64, "Images per forward pass during evaluation.", lower_bound=1
    )
    evaluation_only: bool = option(
        False, "Skip training: evaluate the weights of --pretrained_model_file_path."
    )
    pretrained_model_file_path: str | None = option(
        None,
        "An h5 weights file written by this project (training_model.h5 or inference_model.h5) "
        "to start from, or to evaluate with --evaluation_only.",
        rule=(
            lambda value: not value or os.path.isfile(value),
            "must name an existing h5 file written by this project",
        ),
    )
    save_data_to_disk: bool = option(
        False, "Write query and gallery features, identities and cameras to features.npz."
    )
    output_folder_path: str = option(
        os.path.join(REPOSITORY_FOLDER_PATH, "outputs"),
        "Results go to <output_folder_path>/<dataset>_<backbone>/; an existing folder is never "
        "overwritten: a numbered folder beside it is used instead.",
    )
    visualize_ranked_lists: int = option(
        0,
        "After the final evaluation, draw the ranked lists of N queries spread over the query "
        "list (the query and its top-10 gallery images; green correct, red wrong, grey junk, "
        "with distances) into <run>/ranked_lists/, and the CMC curve (ranks 1-50) into "
        "<run>/cmc_curve.png and cmc_curve.csv. 0: none.",
        lower_bound=0,
    )
    export_folder_path: str | None = option(
        None,
        "At the end of training (or of --evaluation_only), export the inference model with the "
        "saved weights for serving into this folder: saved_model/ (TF Serving) and model.onnx "
        "(onnxruntime), taking uint8 RGB images of any size. Both are checked against "
        "TensorFlow on real images (max abs difference <= 1e-4).",
        rule=(
            lambda value: (
                not value
                or not any(
                    os.path.exists(os.path.join(value, name))
                    for name in ("saved_model", "model.onnx", "export_config.json")
                )
            ),
            "must not already hold an export (saved_model/, model.onnx, export_config.json); "
            "pass a new folder",
        ),
    )
    export_with_flipping: bool = option(
        True,
        "Put flip averaging (each embedding averaged with the mirrored image's) into the "
        "exported graph, as --use_horizontal_flipping_in_evaluation does; twice the serving cost.",
    )


@dataclasses.dataclass(frozen=True)
class CrossFieldRule:
    """A rule over several flags.

    Attributes:
        names: tuple of str, the flags it reads.
        check: callable dict name -> value -> bool, True when the combination is allowed.
        message: str, the error, naming the flags and the fix.
    """

    names: tuple[str, ...]
    check: Callable[[dict], bool]
    message: str


CROSS_FIELD_RULES = (
    CrossFieldRule(
        ("resume", "resume_from", "evaluation_only"),
        lambda v: not (v["resume"] or v["resume_from"]) or not v["evaluation_only"],
        "--resume and --resume_from continue a training run; --evaluation_only trains nothing. "
        "To evaluate a run's best weights, pass its training_model.h5 as "
        "--pretrained_model_file_path.",
    ),
    CrossFieldRule(
        ("evaluation_only", "pretrained_model_file_path"),
        lambda v: not v["evaluation_only"] or bool(v["pretrained_model_file_path"]),
        "--evaluation_only needs --pretrained_model_file_path (an h5 written by this project, "
        "e.g. outputs/<run>/training_model.h5).",
    ),
    CrossFieldRule(
        ("evaluation_only", "testing_size"),
        lambda v: not v["evaluation_only"] or v["testing_size"] != 0,
        "--evaluation_only evaluates on the test set, which --testing_size 0 turns off: pass a "
        "--testing_size above 0.",
    ),
    CrossFieldRule(
        ("visualize_ranked_lists", "testing_size"),
        lambda v: not v["visualize_ranked_lists"] or v["testing_size"] != 0,
        "--visualize_ranked_lists draws test-set rankings, which --testing_size 0 turns off: "
        "pass a --testing_size above 0 or --visualize_ranked_lists 0.",
    ),
    CrossFieldRule(
        ("model_num", "evaluation_only", "pretrained_model_file_path"),
        lambda v: (
            v["model_num"] == 1 or not (v["evaluation_only"] or v["pretrained_model_file_path"])
        ),
        "--model_num above 1 trains new models jointly; to evaluate or start from saved weights, "
        "pass one model's file (e.g. outputs/<run>/model_1/training_model.h5) with --model_num 1.",
    ),
    CrossFieldRule(
        ("model_num", "export_folder_path", "visualize_ranked_lists"),
        lambda v: (
            v["model_num"] == 1 or not (v["export_folder_path"] or v["visualize_ranked_lists"])
        ),
        "--export_folder_path and --visualize_ranked_lists work on one model: after training with "
        "--model_num above 1, rerun with --model_num 1 --evaluation_only "
        "--pretrained_model_file_path outputs/<run>/model_<i>/training_model.h5.",
    ),
    CrossFieldRule(
        ("learning_rate_mode", "epoch_num", "exponential_decay_start_epoch"),
        lambda v: (
            v["learning_rate_mode"] != "exponential"
            or v["epoch_num"] >= v["exponential_decay_start_epoch"]
        ),
        "--learning_rate_mode exponential needs --epoch_num at least "
        "--exponential_decay_start_epoch (AlignedReID: 150 and 76).",
    ),
    CrossFieldRule(
        ("learning_rate_mode", "learning_rate_start", "learning_rate_end"),
        lambda v: (
            v["learning_rate_mode"] != "cosine" or v["learning_rate_start"] > v["learning_rate_end"]
        ),
        "--learning_rate_mode cosine decays from --learning_rate_start down to "
        "--learning_rate_end: pass a --learning_rate_start above --learning_rate_end (the "
        "flipreid recipe sets both to 2e-4 for its default mode).",
    ),
    CrossFieldRule(
        ("learning_rate_mode", "learning_rate_start", "learning_rate_end"),
        lambda v: (
            v["learning_rate_mode"] != "constant"
            or v["learning_rate_start"] == v["learning_rate_end"]
        ),
        "--learning_rate_mode constant keeps one rate: pass the same --learning_rate_start and "
        "--learning_rate_end.",
    ),
    CrossFieldRule(
        ("learning_rate_mode", "epoch_num"),
        lambda v: v["learning_rate_mode"] != "linear" or v["epoch_num"] >= 2,
        "--learning_rate_mode linear goes from --learning_rate_start to --learning_rate_end over "
        "--epoch_num: pass an --epoch_num of at least 2.",
    ),
    CrossFieldRule(
        ("learning_rate_mode", "learning_rate_steady_epochs"),
        lambda v: v["learning_rate_mode"] != "default" or v["learning_rate_steady_epochs"] > 0,
        "--learning_rate_mode default drops the rate every --learning_rate_steady_epochs: pass "
        "a --learning_rate_steady_epochs above 0 (FlipReID: 30).",
    ),
    CrossFieldRule(
        (
            "learning_rate_mode",
            "learning_rate_drop_factor",
            "epoch_num",
            "learning_rate_warmup_epochs",
        ),
        lambda v: (
            v["learning_rate_mode"] != "default"
            or v["learning_rate_drop_factor"] != 0
            or v["epoch_num"] > max(1, 2 * v["learning_rate_warmup_epochs"])
        ),
        "--learning_rate_mode default with --learning_rate_drop_factor 0 warms up, then decays "
        "linearly to the end: it needs an --epoch_num above 2 x --learning_rate_warmup_epochs "
        "(and at least 2).",
    ),
    CrossFieldRule(
        ("use_feature_clipping", "min_value", "max_value"),
        lambda v: not v["use_feature_clipping"] or v["min_value"] < v["max_value"],
        "--min_value must be below --max_value (or pass --nouse_feature_clipping).",
    ),
)

# Flag groups in the order --helpfull lists them: (group name, dataclass).
GROUPS = (
    ("data", DataConfig),
    ("model", ModelConfig),
    ("losses", LossesConfig),
    ("training", TrainingConfig),
    ("evaluation", EvaluationConfig),
)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything one run of solution.py needs, grouped like the flags."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    losses: LossesConfig = dataclasses.field(default_factory=LossesConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)

    def __post_init__(self):
        values = self.to_flat()
        for rule in CROSS_FIELD_RULES:
            if not rule.check(values):
                raise ValueError(rule.message)

    def to_flat(self):
        """Every field by its flag name.

        Returns:
            dict str -> value, JSON-serialisable (tuples become lists when dumped).
        """
        return {
            field.name: getattr(getattr(self, group_name), field.name)
            for group_name, group_class in GROUPS
            for field in dataclasses.fields(group_class)
        }


def resume_matching_flag_names():
    """The settings a resumed run must share with the run it continues.

    They shape the model, the data or the data stream (fields with `must_match_on_resume`);
    others (epoch_num, learning rates, evaluation settings) may change on resume, and the run
    says which did.

    Returns:
        tuple of str, flag names in flag order.
    """
    return tuple(
        field.name for _, field, _ in flag_fields() if field.metadata["must_match_on_resume"]
    )


def flag_fields():
    """Every field with its group, in flag order.

    Returns:
        list of (group name: str, dataclasses.Field, annotation).
    """
    result = []
    for group_name, group_class in GROUPS:
        hints = typing.get_type_hints(group_class)
        for field in dataclasses.fields(group_class):
            result.append((group_name, field, hints[field.name]))
    return result


def with_recipe_defaults(values):
    """The given flag-named values and the recipe's defaults of the others (no rule checked).

    Args:
        values: dict flag name -> value, the flags given.

    Returns:
        dict: `values`, backbone_model_name (resolved when not given) and the recipe's
        defaults (RECIPE_DEFAULTS) of the flags not given; fields in neither keep their own
        default.

    Raises:
        ValueError: an unknown recipe.
    """
    given_recipe = values.get("recipe", "auto")
    if "backbone_model_name" not in values:
        dataset_name = values.get("dataset_name", DataConfig.dataset_name)
        backbone_model_name = resolve_backbone_model_name(given_recipe, dataset_name)
        values = {**values, "backbone_model_name": backbone_model_name}
    recipe = resolve_recipe(given_recipe, values["backbone_model_name"])
    if recipe not in RECIPE_DEFAULTS:
        raise ValueError(f"--recipe must be one of {', '.join(RECIPE_NAMES)}, got {recipe!r}.")
    return {**RECIPE_DEFAULTS[recipe], **values}


def build_experiment_config(**values):
    """An ExperimentConfig from flag-named values; the rest take the recipe's defaults.

    Values not given come from the recipe (`--recipe`, see RECIPE_DEFAULTS), then from the
    fields' own defaults. Without a backbone_model_name, `resolve_backbone_model_name` picks it
    (from the recipe, or with "auto" from the dataset), and "auto" then follows that backbone:
    no flags at all is the Synthetic demo on resnet18 (random_init), and FlipReID's command
    lines, which name a real dataset and no backbone, train resnet50 with the flipreid recipe.

    Args:
        **values: flag name -> value, e.g. epoch_num=2, dataset_name="Synthetic".

    Returns:
        ExperimentConfig.

    Raises:
        ValueError: an unknown name or a value that breaks a rule (the message names the flag).
    """
    groups = {}
    remaining = with_recipe_defaults(values)
    for group_name, group_class in GROUPS:
        names = [field.name for field in dataclasses.fields(group_class)]
        group_values = {name: remaining.pop(name) for name in names if name in remaining}
        groups[group_name] = group_class(**group_values)
    if remaining:
        raise ValueError(f"Unknown option(s): {', '.join(sorted(remaining))}.")
    return ExperimentConfig(**groups)
