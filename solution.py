"""Trains and evaluates a FlipReID person re-identification model.

With no flags it runs a short demonstration on the built-in Synthetic dataset with a small
backbone; `python solution.py --helpfull` lists every flag by group. This file only defines the
flags and wires the components together.
"""

import json
import os
import sys
import time

from absl import app, flags, logging

# Project modules import TensorFlow only through applications.backend, which selects legacy
# Keras first; nothing above imports TensorFlow.
from applications.backbones import BACKBONE_MODEL_NAMES
from applications.backend import keras, tf
from applications.layers import POOLING_LAYER_BUILDERS
from applications.learning_rate import LEARNING_RATE_FUNCTIONS, build_learning_rate_function
from applications.model import build_flipreid_models, load_model_weights
from applications.training import fit_in_stages
from callbacks import BestWeightsCheckpoint, EvaluationCallback, GeMPowerLogger, HistoryLogger
from datasets import DATASET_NAMES, load_dataset, select_testing_subset
from datasets.pipeline import build_training_dataset, compute_steps_per_epoch
from evaluation.distances import DISTANCE_METRICS
from evaluation.features import evaluate_model
from evaluation.metrics import CMC_CONFIGS
from evaluation.report import format_metrics

REPOSITORY_FOLDER_PATH = os.path.dirname(os.path.abspath(__file__))
# Flags are listed by these groups in --helpfull.
_DATA_FLAGS = "data"
_MODEL_FLAGS = "model"
_LOSSES_FLAGS = "losses"
_TRAINING_FLAGS = "training"
_EVALUATION_FLAGS = "evaluation"

# --- Data ---------------------------------------------------------------------------------------
flags.DEFINE_string(
    "root_folder_path",
    os.path.join(REPOSITORY_FOLDER_PATH, "data"),
    "Folder that holds the dataset folders (e.g. Market-1501-v15.09.15/). The Synthetic "
    "dataset is generated here on first use.",
    module_name=_DATA_FLAGS,
)
flags.DEFINE_string(
    "dataset_name",
    "Synthetic",
    f"One of {', '.join(DATASET_NAMES)}, or the path of your own folder with "
    "bounding_box_train, bounding_box_test and query in Market1501 naming.",
    module_name=_DATA_FLAGS,
)
flags.DEFINE_enum(
    "cuhk03_variant",
    "detected",
    ["detected", "labeled"],
    "CUHK03 (new protocol) bounding boxes: detected or hand-labeled.",
    module_name=_DATA_FLAGS,
)
flags.DEFINE_list(
    "combined_dataset_names",
    ["Market1501", "DukeMTMC_reID"],
    "With --dataset_name Combined: the datasets whose training sets are joined.",
    module_name=_DATA_FLAGS,
)
flags.DEFINE_string(
    "evaluation_dataset_name",
    "Market1501",
    "With --dataset_name Combined: the dataset whose query and gallery are evaluated.",
    module_name=_DATA_FLAGS,
)
flags.DEFINE_integer(
    "synthetic_identity_num",
    200,
    "Synthetic dataset: identities in all, half for training and half for testing.",
    module_name=_DATA_FLAGS,
)
flags.DEFINE_integer(
    "synthetic_camera_num", 4, "Synthetic dataset: number of cameras.", module_name=_DATA_FLAGS
)
flags.DEFINE_integer(
    "synthetic_image_num_per_identity",
    12,
    "Synthetic dataset: images drawn per identity.",
    module_name=_DATA_FLAGS,
)
flags.DEFINE_bool(
    "verify_images",
    False,
    "Decode every image while loading and skip (and count) the ones that fail. Takes minutes "
    "on a large dataset; without it a corrupt image stops training with its file name.",
    module_name=_DATA_FLAGS,
)
flags.DEFINE_float(
    "testing_size",
    1.0,
    "Part of the test set to evaluate on: a proportion in (0, 1] of the test identities, or an "
    "absolute number of identities when above 1. Query and gallery images of the chosen "
    "identities are kept together; the choice is deterministic.",
    module_name=_DATA_FLAGS,
)

# --- Model --------------------------------------------------------------------------------------
flags.DEFINE_enum(
    "backbone_model_name",
    "resnet18",
    list(BACKBONE_MODEL_NAMES),
    "Backbone from tf2cv. FlipReID uses resnet50, ibn_resnet50 or resnesta50; resnet18 is the "
    "small backbone for CPU runs.",
    module_name=_MODEL_FLAGS,
)
flags.DEFINE_bool(
    "pretrained",
    False,
    "Start from tf2cv's ImageNet weights (downloaded on first use, needs the internet).",
    module_name=_MODEL_FLAGS,
)
flags.DEFINE_string(
    "pretrained_root",
    None,
    "Folder of tf2cv's pretrained weight files (default: tf2cv's ~/.tensorflow/models).",
    module_name=_MODEL_FLAGS,
)
flags.DEFINE_integer(
    "image_height",
    64,
    "Height the images are resized to, in pixels (FlipReID: 384; the demo's 64 keeps it fast "
    "on a CPU).",
    module_name=_MODEL_FLAGS,
)
flags.DEFINE_integer(
    "image_width",
    32,
    "Width the images are resized to, in pixels (FlipReID: 128).",
    module_name=_MODEL_FLAGS,
)
flags.DEFINE_integer(
    "region_num",
    2,
    "Number of horizontal stripes in the regional branch (0 disables it).",
    module_name=_MODEL_FLAGS,
)
flags.DEFINE_enum(
    "pooling_mode",
    "GeM",
    list(POOLING_LAYER_BUILDERS),
    "Global pooling of every branch.",
    module_name=_MODEL_FLAGS,
)
flags.DEFINE_float(
    "gem_initial_power",
    1.0,
    "Starting value of the trainable GeM power p; 1.0 (FlipReID) starts as average pooling, "
    "3.0 is the usual GeM start.",
    module_name=_MODEL_FLAGS,
)
flags.DEFINE_bool(
    "use_feature_clipping",
    True,
    "Clip the pooled features to [--min_value, --max_value], as FlipReID does.",
    module_name=_MODEL_FLAGS,
)
flags.DEFINE_float(
    "min_value",
    0.0,
    "Lower bound of the feature embeddings when clipping.",
    module_name=_MODEL_FLAGS,
)
flags.DEFINE_float(
    "max_value",
    1.0,
    "Upper bound of the feature embeddings when clipping.",
    module_name=_MODEL_FLAGS,
)
flags.DEFINE_float(
    "kernel_regularization_factor", 0.0005, "L2 factor of kernels.", module_name=_MODEL_FLAGS
)
flags.DEFINE_float(
    "bias_regularization_factor", 0.0005, "L2 factor of biases.", module_name=_MODEL_FLAGS
)
flags.DEFINE_float(
    "gamma_regularization_factor",
    0.0005,
    "L2 factor of batch-norm gammas.",
    module_name=_MODEL_FLAGS,
)
flags.DEFINE_float(
    "beta_regularization_factor", 0.0005, "L2 factor of batch-norm betas.", module_name=_MODEL_FLAGS
)
flags.DEFINE_bool(
    "use_horizontal_flipping_inside_model",
    True,
    "The FlipReID structure: train on the average embedding of each image and its horizontal "
    "flip, and add the flipping loss (MSE between the two embeddings). FlipReID's flag "
    "defaults to off; its published results use it.",
    module_name=_MODEL_FLAGS,
)

# --- Losses -------------------------------------------------------------------------------------
flags.DEFINE_float(
    "triplet_margin",
    None,
    "Margin of the batch-hard triplet loss; unset means the soft margin log(1 + exp(d_ap - d_an)).",
    module_name=_LOSSES_FLAGS,
)
flags.DEFINE_float(
    "label_smoothing",
    0.0,
    "Label smoothing of the softmax ID loss, in [0, 1).",
    module_name=_LOSSES_FLAGS,
)
flags.DEFINE_float(
    "triplet_loss_weight", 1.0, "Weight of the triplet loss.", module_name=_LOSSES_FLAGS
)
flags.DEFINE_float(
    "cross_entropy_loss_weight", 1.0, "Weight of the softmax ID loss.", module_name=_LOSSES_FLAGS
)
flags.DEFINE_float(
    "flipping_loss_weight", 1.0, "Weight of the flipping loss.", module_name=_LOSSES_FLAGS
)

# --- Training -----------------------------------------------------------------------------------
flags.DEFINE_integer(
    "freeze_backbone_for_N_epochs",
    0,
    "Train only the heads for the first N epochs (FlipReID: 20, with --pretrained).",
    module_name=_TRAINING_FLAGS,
)
flags.DEFINE_integer(
    "identity_num_per_batch", 16, "Identities per batch (P).", module_name=_TRAINING_FLAGS
)
flags.DEFINE_integer(
    "image_num_per_identity", 4, "Images per identity in a batch (K).", module_name=_TRAINING_FLAGS
)
flags.DEFINE_integer(
    "steps_per_epoch",
    0,
    "Steps per epoch; 0 means one pass over the training images (FlipReID: 200).",
    module_name=_TRAINING_FLAGS,
)
flags.DEFINE_integer(
    "epoch_num",
    8,
    "Number of epochs in all (FlipReID trains far longer).",
    module_name=_TRAINING_FLAGS,
)
flags.DEFINE_enum(
    "learning_rate_mode",
    "default",
    list(LEARNING_RATE_FUNCTIONS),
    "Learning-rate schedule over epochs. default: linear warm-up from the lower bound to the "
    "base, then a drop by --learning_rate_drop_factor every --learning_rate_steady_epochs.",
    module_name=_TRAINING_FLAGS,
)
flags.DEFINE_float(
    "learning_rate_start",
    2e-4,
    "Starting learning rate (linear, cosine, warmup).",
    module_name=_TRAINING_FLAGS,
)
flags.DEFINE_float(
    "learning_rate_end",
    2e-4,
    "Ending learning rate (linear, cosine, warmup).",
    module_name=_TRAINING_FLAGS,
)
flags.DEFINE_float(
    "learning_rate_base",
    1e-3,
    "Base learning rate of the default mode (FlipReID: 2e-4, for ImageNet-pretrained "
    "backbones; the demo trains from random weights).",
    module_name=_TRAINING_FLAGS,
)
flags.DEFINE_integer(
    "learning_rate_warmup_epochs", 2, "Warm-up epochs (FlipReID: 10).", module_name=_TRAINING_FLAGS
)
flags.DEFINE_integer(
    "learning_rate_steady_epochs",
    30,
    "Epochs between two drops in the default mode.",
    module_name=_TRAINING_FLAGS,
)
flags.DEFINE_float(
    "learning_rate_drop_factor", 10.0, "Divisor applied at each drop.", module_name=_TRAINING_FLAGS
)
flags.DEFINE_float(
    "learning_rate_lower_bound", 2e-6, "Lowest learning rate.", module_name=_TRAINING_FLAGS
)
flags.DEFINE_bool(
    "use_data_augmentation_in_training",
    True,
    "Random padding and crop, horizontal flip, grayscale patch replacement, random erasing.",
    module_name=_TRAINING_FLAGS,
)
flags.DEFINE_float(
    "random_crop_probability",
    1.0,
    "Probability of the random padding and crop.",
    module_name=_TRAINING_FLAGS,
)
flags.DEFINE_float(
    "horizontal_flip_probability",
    0.5,
    "Probability of a horizontal flip.",
    module_name=_TRAINING_FLAGS,
)
flags.DEFINE_float(
    "patch_replacement_probability",
    0.8,
    "Probability of replacing a random patch with its grayscale version.",
    module_name=_TRAINING_FLAGS,
)
flags.DEFINE_float(
    "random_erasing_probability", 0.8, "Probability of random erasing.", module_name=_TRAINING_FLAGS
)
flags.DEFINE_enum(
    "mixed_precision_policy",
    "float32",
    ["float32", "mixed_float16", "mixed_bfloat16"],
    "Keras mixed-precision policy; mixed_float16 suits NVIDIA GPUs. Losses stay float32.",
    module_name=_TRAINING_FLAGS,
)
flags.DEFINE_integer(
    "seed", 0, "Random seed of weights, sampling and augmentation.", module_name=_TRAINING_FLAGS
)

# --- Evaluation ---------------------------------------------------------------------------------
flags.DEFINE_integer(
    "evaluate_testing_every_N_epochs",
    4,
    "Evaluate every N epochs; the last epoch always is (FlipReID: 10).",
    module_name=_EVALUATION_FLAGS,
)
flags.DEFINE_bool(
    "evaluate_before_training",
    True,
    "Evaluate the untrained model first, as a baseline for the trained one.",
    module_name=_EVALUATION_FLAGS,
)
flags.DEFINE_bool(
    "use_horizontal_flipping_in_evaluation",
    True,
    "Average each test embedding with that of the flipped image (FlipReID's flag defaults to off).",
    module_name=_EVALUATION_FLAGS,
)
flags.DEFINE_enum(
    "distance_metric",
    "cosine",
    list(DISTANCE_METRICS),
    "Distance between embeddings.",
    module_name=_EVALUATION_FLAGS,
)
flags.DEFINE_bool(
    "use_re_ranking",
    False,
    "Also report metrics after k-reciprocal re-ranking (k1=20, k2=6).",
    module_name=_EVALUATION_FLAGS,
)
flags.DEFINE_enum(
    "cmc_config",
    "market1501",
    list(CMC_CONFIGS),
    "CMC protocol: market1501 (standard), cuhk03 (single gallery shot) or allshots.",
    module_name=_EVALUATION_FLAGS,
)
flags.DEFINE_integer(
    "testing_batch_size",
    64,
    "Images per forward pass during evaluation.",
    module_name=_EVALUATION_FLAGS,
)
flags.DEFINE_bool(
    "evaluation_only",
    False,
    "Skip training: evaluate the weights of --pretrained_model_file_path.",
    module_name=_EVALUATION_FLAGS,
)
flags.DEFINE_string(
    "pretrained_model_file_path",
    None,
    "An h5 weights file written by this project (training_model.h5 or inference_model.h5) to "
    "start from, or to evaluate with --evaluation_only.",
    module_name=_EVALUATION_FLAGS,
)
flags.DEFINE_bool(
    "save_data_to_disk",
    False,
    "Write query and gallery features, identities and cameras to features.npz.",
    module_name=_EVALUATION_FLAGS,
)
flags.DEFINE_string(
    "output_folder_path",
    os.path.join(REPOSITORY_FOLDER_PATH, "outputs"),
    "Results go to <output_folder_path>/<dataset>_<backbone>/; an existing folder is never "
    "overwritten: a numbered folder beside it is used instead.",
    module_name=_EVALUATION_FLAGS,
)

FLAGS = flags.FLAGS
_FLAG_NAMES = [
    flag.name
    for group in (_DATA_FLAGS, _MODEL_FLAGS, _LOSSES_FLAGS, _TRAINING_FLAGS, _EVALUATION_FLAGS)
    for flag in FLAGS.get_flags_for_module(group)
]
# --help lists the key flags of the main module: all of the above (--helpfull groups them).
for _name in _FLAG_NAMES:
    flags.declare_key_flag(_name)


def _register_validators():
    """Cross-flag and range rules, checked by absl when the flags are parsed."""
    rules = [
        (
            "testing_size",
            lambda v: v > 0 and (v <= 1 or float(v).is_integer()),
            "--testing_size must be a proportion in (0, 1] or a whole number of identities "
            "above 1.",
        ),
        (
            "identity_num_per_batch",
            lambda v: v >= 2,
            "--identity_num_per_batch must be at least 2.",
        ),
        (
            "image_num_per_identity",
            lambda v: v >= 2,
            "--image_num_per_identity must be at least 2.",
        ),
        ("epoch_num", lambda v: v >= 1, "--epoch_num must be at least 1."),
        ("steps_per_epoch", lambda v: v >= 0, "--steps_per_epoch must be 0 (one pass) or more."),
        (
            "freeze_backbone_for_N_epochs",
            lambda v: v >= 0,
            "--freeze_backbone_for_N_epochs must be 0 or more.",
        ),
        (
            "evaluate_testing_every_N_epochs",
            lambda v: v >= 1,
            "--evaluate_testing_every_N_epochs must be at least 1.",
        ),
        ("image_height", lambda v: v >= 32, "--image_height must be at least 32 pixels."),
        ("image_width", lambda v: v >= 32, "--image_width must be at least 32 pixels."),
        ("region_num", lambda v: v >= 0, "--region_num must be 0 or more."),
        ("gem_initial_power", lambda v: v > 0, "--gem_initial_power must be above 0."),
        ("label_smoothing", lambda v: 0 <= v < 1, "--label_smoothing must be in [0, 1)."),
        ("testing_batch_size", lambda v: v >= 1, "--testing_batch_size must be at least 1."),
        (
            "pretrained_model_file_path",
            lambda v: not v or os.path.isfile(v),
            "--pretrained_model_file_path must name an existing h5 file written by this project.",
        ),
        (
            "dataset_name",
            lambda v: v in DATASET_NAMES or os.path.isdir(v),
            f"--dataset_name must be one of {', '.join(DATASET_NAMES)} or an existing folder in "
            "Market1501 layout.",
        ),
    ]
    for name in (
        "random_crop_probability",
        "horizontal_flip_probability",
        "patch_replacement_probability",
        "random_erasing_probability",
    ):
        rules.append((name, lambda v: 0 <= v <= 1, f"--{name} must be in [0, 1]."))
    for name, checker, message in rules:
        flags.register_validator(name, checker, message=message)
    flags.register_multi_flags_validator(
        ["evaluation_only", "pretrained_model_file_path"],
        lambda v: not v["evaluation_only"] or bool(v["pretrained_model_file_path"]),
        message="--evaluation_only needs --pretrained_model_file_path (an h5 written by this "
        "project, e.g. outputs/<run>/training_model.h5).",
    )
    flags.register_multi_flags_validator(
        ["use_feature_clipping", "min_value", "max_value"],
        lambda v: not v["use_feature_clipping"] or v["min_value"] < v["max_value"],
        message="--min_value must be below --max_value (or pass --nouse_feature_clipping).",
    )


_register_validators()


_UNLOGGED_KEYS = (
    "num_valid_queries",
    "num_excluded_queries",
    "feature_extraction_images_per_second",
)


def make_output_folder(output_folder_path, run_name):
    """Creates a fresh output folder, never reusing (or deleting) an existing one.

    Returns:
        str, `<output_folder_path>/<run_name>`, or `<run_name>_2`, `_3`, ... when taken.
    """
    candidate = os.path.join(os.path.abspath(output_folder_path), run_name)
    index = 1
    while True:
        try:
            os.makedirs(candidate)
            return candidate
        except FileExistsError:
            index += 1
            candidate = os.path.join(os.path.abspath(output_folder_path), f"{run_name}_{index}")


def load_weights_into_either(training_model, inference_model, file_path):
    """Loads a training-model or an inference-model weights file written by this project."""
    try:
        load_model_weights(training_model, file_path)
        print(f"Loaded the training model's weights from {file_path}")
    except ValueError as training_model_error:
        try:
            load_model_weights(inference_model, file_path)
        except ValueError:
            raise ValueError(
                f"{training_model_error} To evaluate on another dataset than the one trained on "
                "(a different number of identities), pass the inference_model.h5 written beside "
                "it."
            ) from None
        print(f"Loaded the inference model's weights from {file_path}")


def _write_json(file_path, content):
    with open(file_path, "w") as file:
        json.dump(content, file, indent=2, sort_keys=True)


def main(argv):
    del argv
    try:
        run()
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        # Bad data, weights or flag combinations found past flag parsing: the message names the
        # file or flag and the fix; the traceback stays available with --verbosity=1.
        logging.debug("Stopped by an error.", exc_info=True)
        sys.exit(f"Error: {error}")


def run():
    """Trains and/or evaluates as the flags say."""
    start_time = time.perf_counter()
    flag_values = {name: FLAGS[name].value for name in _FLAG_NAMES}
    keras.utils.set_random_seed(FLAGS.seed)
    if FLAGS.mixed_precision_policy != "float32":
        keras.mixed_precision.set_global_policy(FLAGS.mixed_precision_policy)

    dataset = load_dataset(
        FLAGS.dataset_name,
        FLAGS.root_folder_path,
        cuhk03_variant=FLAGS.cuhk03_variant,
        combined_dataset_names=FLAGS.combined_dataset_names,
        evaluation_dataset_name=FLAGS.evaluation_dataset_name,
        verify_images=FLAGS.verify_images,
        synthetic_options=dict(
            num_identities=FLAGS.synthetic_identity_num,
            num_cameras=FLAGS.synthetic_camera_num,
            num_images_per_identity=FLAGS.synthetic_image_num_per_identity,
            seed=FLAGS.seed,
        ),
    )
    query, gallery = select_testing_subset(dataset.query, dataset.gallery, FLAGS.testing_size)
    print(
        f"{dataset.name}: {len(dataset.train)} training images of "
        f"{dataset.num_train_identities} identities; testing on {len(query)} query and "
        f"{len(gallery)} gallery images."
    )
    for message in dataset.messages:
        print(f"  note: {message}")

    strategy = tf.distribute.get_strategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        strategy = tf.distribute.MirroredStrategy()
        print(f"Training on {strategy.num_replicas_in_sync} GPUs.")
        if FLAGS.identity_num_per_batch % strategy.num_replicas_in_sync:
            # Each replica takes a contiguous slice of the batch; batch-hard mining needs every
            # identity's K images inside one slice.
            raise ValueError(
                f"--identity_num_per_batch ({FLAGS.identity_num_per_batch}) must be a multiple "
                f"of the number of GPUs ({strategy.num_replicas_in_sync})."
            )
    model_config = dict(
        backbone_name=FLAGS.backbone_model_name,
        image_height=FLAGS.image_height,
        image_width=FLAGS.image_width,
        num_identities=dataset.num_train_identities,
        region_num=FLAGS.region_num,
        pooling_mode=FLAGS.pooling_mode,
        gem_initial_power=FLAGS.gem_initial_power,
        min_value=FLAGS.min_value if FLAGS.use_feature_clipping else None,
        max_value=FLAGS.max_value if FLAGS.use_feature_clipping else None,
        use_horizontal_flipping_inside_model=FLAGS.use_horizontal_flipping_inside_model,
    )
    with strategy.scope():
        training_model, inference_model = build_flipreid_models(
            **model_config,
            pretrained=FLAGS.pretrained and not FLAGS.evaluation_only,
            pretrained_root=FLAGS.pretrained_root,
            kernel_regularization_factor=FLAGS.kernel_regularization_factor,
            bias_regularization_factor=FLAGS.bias_regularization_factor,
            gamma_regularization_factor=FLAGS.gamma_regularization_factor,
            beta_regularization_factor=FLAGS.beta_regularization_factor,
        )
        training_model.compile(
            keras.optimizers.Adam(),
            triplet_margin=FLAGS.triplet_margin,
            label_smoothing=FLAGS.label_smoothing,
            triplet_loss_weight=FLAGS.triplet_loss_weight,
            cross_entropy_loss_weight=FLAGS.cross_entropy_loss_weight,
            flipping_loss_weight=FLAGS.flipping_loss_weight,
        )
    if FLAGS.pretrained_model_file_path:
        load_weights_into_either(training_model, inference_model, FLAGS.pretrained_model_file_path)

    # Created only once data, model and weights are in place, so a run stopped by bad input
    # leaves no half-empty folder behind.
    run_name = (
        f"{os.path.basename(os.path.normpath(FLAGS.dataset_name))}_{FLAGS.backbone_model_name}"
    )
    output_folder_path = make_output_folder(FLAGS.output_folder_path, run_name)
    if os.path.basename(output_folder_path) != run_name:
        print(f"{run_name} already exists in {FLAGS.output_folder_path}; it is left untouched.")
    print(f"Writing outputs to {output_folder_path}")
    _write_json(os.path.join(output_folder_path, "flags.json"), flag_values)
    _write_json(os.path.join(output_folder_path, "model_config.json"), model_config)

    features_file_path = (
        os.path.join(output_folder_path, "features.npz") if FLAGS.save_data_to_disk else None
    )

    def evaluate():
        print(f"\nEvaluating on {len(query)} query and {len(gallery)} gallery images ...")
        return evaluate_model(
            inference_model,
            query,
            gallery,
            image_height=FLAGS.image_height,
            image_width=FLAGS.image_width,
            batch_size=FLAGS.testing_batch_size,
            use_horizontal_flipping=FLAGS.use_horizontal_flipping_in_evaluation,
            distance_metric=FLAGS.distance_metric,
            use_re_ranking=FLAGS.use_re_ranking,
            cmc_config=FLAGS.cmc_config,
            features_file_path=features_file_path,
        )

    # Skipped files and count mismatches travel with the metrics they may have changed.
    results = {"dataset_notes": list(dataset.messages)}
    if FLAGS.evaluation_only or FLAGS.evaluate_before_training:
        label = "Evaluation" if FLAGS.evaluation_only else "Before training"
        metrics = evaluate()
        print(format_metrics(metrics, f"{label} on {dataset.name}:"))
        results["evaluation_only" if FLAGS.evaluation_only else "before_training"] = metrics

    if not FLAGS.evaluation_only:
        training_images = build_training_dataset(
            dataset.train["image_file_path"].to_numpy(dtype=str),
            dataset.label_encoder.transform(dataset.train["identity_ID"]),
            identity_num_per_batch=FLAGS.identity_num_per_batch,
            image_num_per_identity=FLAGS.image_num_per_identity,
            image_height=FLAGS.image_height,
            image_width=FLAGS.image_width,
            use_data_augmentation=FLAGS.use_data_augmentation_in_training,
            random_crop_probability=FLAGS.random_crop_probability,
            horizontal_flip_probability=FLAGS.horizontal_flip_probability,
            patch_replacement_probability=FLAGS.patch_replacement_probability,
            random_erasing_probability=FLAGS.random_erasing_probability,
            seed=FLAGS.seed,
        )
        steps_per_epoch = FLAGS.steps_per_epoch or compute_steps_per_epoch(
            len(dataset.train), FLAGS.identity_num_per_batch, FLAGS.image_num_per_identity
        )
        learning_rate_function = build_learning_rate_function(
            FLAGS.learning_rate_mode,
            epoch_num=FLAGS.epoch_num,
            learning_rate_start=FLAGS.learning_rate_start,
            learning_rate_end=FLAGS.learning_rate_end,
            learning_rate_base=FLAGS.learning_rate_base,
            learning_rate_warmup_epochs=FLAGS.learning_rate_warmup_epochs,
            learning_rate_steady_epochs=FLAGS.learning_rate_steady_epochs,
            learning_rate_drop_factor=FLAGS.learning_rate_drop_factor,
            learning_rate_lower_bound=FLAGS.learning_rate_lower_bound,
        )
        monitor = "test_re_ranking_mAP" if FLAGS.use_re_ranking else "test_mAP"

        def save_best(epoch, value):
            training_model.save_weights(os.path.join(output_folder_path, "training_model.h5"))
            inference_model.save_weights(os.path.join(output_folder_path, "inference_model.h5"))
            print(f"\nEpoch {epoch}: {monitor} {value:.2%} is the best so far; weights saved.")

        def evaluate_during_training():
            metrics = evaluate()
            print(format_metrics(metrics, "Test metrics:"))
            # Counts and speed stay out of the per-epoch logs; they are printed above.
            return {key: value for key, value in metrics.items() if key not in _UNLOGGED_KEYS}

        evaluation_callback = EvaluationCallback(
            evaluate_during_training,
            every_N_epochs=FLAGS.evaluate_testing_every_N_epochs,
            epoch_num=FLAGS.epoch_num,
        )
        checkpoint_callback = BestWeightsCheckpoint(save_best, monitor=monitor)
        fit_in_stages(
            training_model,
            training_images,
            steps_per_epoch=steps_per_epoch,
            epoch_num=FLAGS.epoch_num,
            freeze_backbone_for_N_epochs=FLAGS.freeze_backbone_for_N_epochs,
            callbacks=[
                keras.callbacks.LearningRateScheduler(learning_rate_function),
                evaluation_callback,
                GeMPowerLogger(training_model.gem_power_values),
                checkpoint_callback,
                HistoryLogger(output_folder_path),
                keras.callbacks.TensorBoard(os.path.join(output_folder_path, "tensorboard")),
            ],
        )
        final_metrics = {
            key[len("test_") :]: value for key, value in evaluation_callback.last_metrics.items()
        }
        results["final"] = final_metrics
        results["best_epoch"] = checkpoint_callback.best_epoch
        print(format_metrics(final_metrics, f"After {FLAGS.epoch_num} epochs on {dataset.name}:"))
        if "before_training" in results:
            print(
                f"mAP went from {results['before_training']['mAP']:.2%} (untrained) to "
                f"{final_metrics['mAP']:.2%} (trained)."
            )

    results["wall_time_seconds"] = time.perf_counter() - start_time
    _write_json(os.path.join(output_folder_path, "metrics.json"), results)
    print(f"Done in {results['wall_time_seconds']:.0f} s. Results: {output_folder_path}")


if __name__ == "__main__":
    app.run(main)
