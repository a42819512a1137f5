"""One experiment from a typed configuration: data, models, training, evaluation, outputs.

`run_experiment(config)` is what `python solution.py` runs after parsing its flags; tests call it
directly with `applications.config.build_experiment_config(...)`. It reads as its steps, each a
function below that calls packages' public functions with keyword arguments named like the
flags:

1. `applications.run_folder.guarded_run`: the block of the run (stop signals, the global
   policy, the run folder marked failed on an error).
2. `_set_up_process`: the recipe and precision lines, the distribution strategy, the checks that
   need no data, the seed and the training policy.
3. `load_run_data`: `datasets.load_dataset` -> `datasets.select_testing_subset` (and Combined's
   other test sets).
4. `build_models`: `applications.model.build_flipreid_models` (or
   `applications.mutual_learning.build_mutual_learning_models`) compiled with the optimizer of
   `applications.optimizers`, as a `Models` record; `applications.weights.load_pretrained_weights`.
5. `_open_run`: `applications.run_state.open_run_folder` (a new folder, or the run to resume),
   model_config.json.
6. `_build_evaluator`: `applications.aligned_model_evaluation.evaluate_models` on the test sets,
   at --evaluation_precision.
7. `_evaluate_baseline`: the untrained (or --evaluation_only) metrics.
8. `_train`: `datasets.pipeline.build_training_dataset` -> `applications.training.fit_in_stages`
   (callbacks: NaN guard, learning rate, evaluation, GeM powers, history, checkpoint with the
   best weights, TensorBoard, stop at a step boundary); `_report_training` prints the result.
9. `_write_results`: pictures, metrics.json, the serving export, the run marked completed.
"""

import dataclasses
import functools
import os
import re
import time

from applications.aligned_model_evaluation import (
    TEST_SET_SEPARATOR,
    evaluate_models,
    format_evaluation,
    metrics_for_json,
)
from applications.config import resolve_recipe
from applications.core.atomic_files import atomic_save_weights, atomic_write_json
from applications.core.backend import keras, tf
from applications.distribution import (
    build_strategy,
    check_batch_composition,
    configure_cpu_logical_devices,
    describe_strategy,
    is_chief,
    prepare_dataset_for_strategy,
)
from applications.export import export_for_serving
from applications.flag_effects import FLAGS_READ_BY
from applications.learning_rate import build_learning_rate_function
from applications.model import build_flipreid_models
from applications.model_evaluation import SKIPPED_GALLERY_KEY, SKIPPED_QUERY_KEY
from applications.mutual_learning import build_mutual_learning_models, save_each_model_weights
from applications.optimizers import REGULARIZATION_FACTOR_NAMES, regularization_settings
from applications.precision import (
    build_precision_twin,
    evaluation_policy,
    num_visible_gpus,
    read_cpu_flags,
    resolve_mixed_precision_policy,
)
from applications.result_pictures import write_result_pictures
from applications.run_folder import guarded_run, run_name
from applications.run_state import (
    RunState,
    check_file_manifest,
    check_output_folder_writable,
    file_manifest,
)
from applications.training import count_epochs, fit_in_stages, stage_name
from applications.weights import load_model_weights, load_pretrained_weights
from applications.weights_file import check_weights_file_readable
from callbacks import EvaluationCallback, GeMPowerLogger, HistoryLogger
from callbacks.interruption import StopAtStepBoundary
from callbacks.nan_guard import NaNGuard
from callbacks.resume_checkpoint import RunStateCheckpoint
from datasets import evaluation_test_sets, load_dataset, select_testing_subset
from datasets.alignedreid import identity_steps_per_epoch
from datasets.image_files import SkippedImageLog
from datasets.pipeline import build_training_dataset, compute_steps_per_epoch

# Counts and speed are printed with each evaluation but kept out of the per-epoch logs.
_UNLOGGED_KEYS = (
    "num_valid_queries",
    "num_excluded_queries",
    "feature_extraction_images_per_second",
)
_MODEL_PREFIX = re.compile(r"^model_\d+_")


@dataclasses.dataclass(frozen=True)
class ExperimentOutcome:
    """What a run produced.

    Attributes:
        output_folder_path: str, the run's fresh output folder.
        results: dict, the content of metrics.json: dataset_notes, before_training /
            evaluation_only / final metrics (dict str -> float), best_epoch, wall_time_seconds.
    """

    output_folder_path: str
    results: dict


@dataclasses.dataclass(frozen=True)
class Models:
    """The models of a run.

    Attributes:
        training_model: the compiled training model (a MutualLearningModel with several).
        inference_models: list of the inference models sharing its weights, one per model
            (--model_num).
        model_config: dict, the settings that shape the weights (model_config.json), the
            keyword arguments of build_flipreid_models that rebuild one inference model.
    """

    training_model: keras.Model
    inference_models: list
    model_config: dict

    def save_weights(self, folder_path, *, is_chief=True):
        """Writes every weights file atomically; returns their manifest (sizes, SHA-256).

        One model writes training_model.h5 and inference_model.h5; several write them under
        model_<i>/ each.
        """
        if len(self.inference_models) > 1:
            file_names = save_each_model_weights(
                self.training_model, self.inference_models, folder_path, is_chief=is_chief
            )
        else:
            file_names = ["training_model.h5", "inference_model.h5"]
            saved_models = (self.training_model, self.inference_models[0])
            for saved_model, file_name in zip(saved_models, file_names, strict=True):
                atomic_save_weights(
                    saved_model, os.path.join(folder_path, file_name), is_chief=is_chief
                )
        # Other workers write into a temporary folder that is gone by now.
        return file_manifest(folder_path, file_names) if is_chief else {}

    def first_inference_weights_file_path(self, folder_path):
        """str, where `save_weights` writes the first model's inference_model.h5."""
        model_folder_name = "model_1" if len(self.inference_models) > 1 else ""
        return os.path.join(folder_path, model_folder_name, "inference_model.h5")


@dataclasses.dataclass(frozen=True)
class RunData:
    """The dataset of a run and the test sets it evaluates.

    Attributes:
        dataset: datasets.Dataset.
        query: DataFrame of the query images evaluated, or None with --testing_size 0.
        gallery: DataFrame of the gallery images evaluated, or None with --testing_size 0.
        other_test_sets: dict label -> (query, gallery), Combined's other test sets.
        skipped_images: dict split name ("train", "query", "gallery") -> SkippedImageLog of the
            images that pass the load-time check but fail to decode, met while running.
    """

    dataset: object
    query: object
    gallery: object
    other_test_sets: dict
    skipped_images: dict


def _write_json(file_path, content):
    # Atomic: a run killed while writing never leaves half a file.
    atomic_write_json(file_path, content)


def run_experiment(config):
    """Trains and/or evaluates as the configuration says, printing progress and results.

    A run folder that an error stopped keeps RUN_INCOMPLETE.txt (so --resume can continue it)
    and gets RUN_FAILED.txt with the reason. An interruption (Ctrl-C, a kill) leaves it marked
    incomplete only.

    Args:
        config: applications.config.ExperimentConfig.

    Returns:
        ExperimentOutcome.

    Raises:
        ValueError, FileNotFoundError, RuntimeError: bad data, weights or settings found while
            running; the message names the file or flag and the fix. Nothing is written before
            data, model and weights have loaded.
        applications.interruption.RunInterrupted: SIGINT or SIGTERM stopped the run (at a step
            boundary while training, see applications.interruption); it names the run folder
            and the epoch of the checkpoint kept.
    """
    with guarded_run() as guard:
        start_time = time.perf_counter()
        strategy = _set_up_process(config)
        data = load_run_data(config.data, config.training.seed)
        if not config.evaluation.evaluation_only:
            check_batch_composition(
                identity_num_per_batch=config.training.identity_num_per_batch,
                image_num_per_identity=config.training.image_num_per_identity,
                num_replicas=strategy.num_replicas_in_sync,
                num_train_identities=data.dataset.num_train_identities,
            )
        models = build_models(config, data.dataset.num_train_identities, strategy)
        if config.evaluation.pretrained_model_file_path:
            load_pretrained_weights(
                models.training_model,
                models.inference_models[0],
                config.evaluation.pretrained_model_file_path,
            )
        # Opened only once data, model and weights are in place, so a run stopped by bad input
        # leaves no half-empty folder behind.
        run = _open_run(guard, config, models, is_chief(strategy))
        evaluation_models, evaluate = _build_evaluator(config, data, models, run)
        results = _evaluate_baseline(config, data, run, evaluate)
        if not config.evaluation.evaluation_only:
            final_metrics, results["best_epoch"] = _train(
                config, data, models, run, strategy, evaluate, guard.stop_request
            )
            _report_training(config, data, results, final_metrics)
        _write_results(config, data, models, run, evaluation_models, results, start_time)
        return ExperimentOutcome(run.writing_folder_path, results)


def _set_up_process(config):
    """Prints the recipe and precision, sets up the strategy, the seed and the training policy.

    Returns:
        the tf.distribute strategy to build and train the models under.
    """
    model, evaluation = config.model, config.evaluation
    recipe = resolve_recipe(model.recipe, model.backbone_model_name)
    print(
        f"Recipe {recipe} for {model.backbone_model_name}: the defaults of the flags not given "
        "(--recipe; "
        + {"flipreid": "FlipReID", "alignedreid": "AlignedReID"}.get(
            recipe, "training from random weights"
        )
        + ")."
    )
    training_policy, policy_reason = resolve_mixed_precision_policy(
        config.training.mixed_precision_policy,
        recipe,
        cpu_flags=read_cpu_flags(),
        num_gpus=num_visible_gpus(),
    )
    print(
        f"Precision: training in {training_policy} because {policy_reason}. Evaluation features "
        f"in {evaluation.evaluation_precision} (--evaluation_precision)."
    )
    # Before any TensorFlow operation: logical devices and multi-worker set-up need it.
    strategy = _distribution_strategy(config.training)
    # Checks that need no data: found now rather than after minutes of loading.
    if is_chief(strategy):
        check_output_folder_writable(evaluation.output_folder_path)
    if evaluation.pretrained_model_file_path:
        check_weights_file_readable(evaluation.pretrained_model_file_path)
    keras.utils.set_random_seed(config.training.seed)
    keras.mixed_precision.set_global_policy(training_policy)
    return strategy


def _distribution_strategy(training):
    """Logical CPU devices and the strategy: set up before TensorFlow's first operation."""
    configure_cpu_logical_devices(training.cpu_logical_devices)
    strategy = build_strategy(training.distribution_strategy)
    if training.distribution_strategy != "default":
        print(f"Distributed training: {describe_strategy(strategy)}.")
    elif len(tf.config.list_logical_devices("GPU")) > 1:
        print("Several GPUs are visible; --distribution_strategy mirrored trains on all of them.")
    return strategy


def load_run_data(data, seed):
    """Loads the dataset and selects the test sets a run evaluates; prints what it found.

    Args:
        data: applications.config.DataConfig.
        seed: int, the Synthetic dataset's seed (--seed).

    Returns:
        RunData.
    """
    dataset = load_dataset(
        data.dataset_name,
        data.root_folder_path,
        cuhk03_variant=data.cuhk03_variant,
        combined_dataset_names=list(data.combined_dataset_names),
        evaluation_dataset_name=data.evaluation_dataset_name,
        verify_images=data.verify_images,
        trainset_part=data.trainset_part,
        synthetic_options=dict(
            num_identities=data.synthetic_identity_num,
            num_cameras=data.synthetic_camera_num,
            num_images_per_identity=data.synthetic_image_num_per_identity,
            seed=seed,
        ),
    )
    summary = f"{dataset.name}: {len(dataset.train)} training images of "
    summary += f"{dataset.num_train_identities} identities; "
    # Combined: the test sets of its other datasets, each evaluated and reported on its own.
    other_test_sets = {}
    if data.testing_size == 0:
        query = gallery = None
        summary += "test evaluation is off (--testing_size 0)."
    else:
        query, gallery = select_testing_subset(dataset.query, dataset.gallery, data.testing_size)
        summary += f"testing on {len(query)} query and {len(gallery)} gallery images"
        for label, (other_query, other_gallery) in list(evaluation_test_sets(dataset).items())[1:]:
            other_test_sets[label] = select_testing_subset(
                other_query, other_gallery, data.testing_size
            )
            summary += (
                f", and on {label}'s {len(other_test_sets[label][0])} query and "
                f"{len(other_test_sets[label][1])} gallery images"
            )
        summary += "."
    print(summary)
    for message in dataset.messages:
        print(f"  note: {message}")
    skipped_images = {
        split_name: SkippedImageLog(f"{dataset.name} {split_name}")
        for split_name in ("train", "query", "gallery")
    }
    return RunData(dataset, query, gallery, other_test_sets, skipped_images)


def _model_config(model, num_identities):
    """The settings that shape the weights: model_config.json, and what rebuilds a model."""
    model_config = dict(
        backbone_name=model.backbone_model_name,
        image_height=model.image_height,
        image_width=model.image_width,
        num_identities=num_identities,
        region_num=model.region_num,
        pooling_mode=model.pooling_mode,
        gem_initial_power=model.gem_initial_power,
        min_value=model.min_value if model.use_feature_clipping else None,
        max_value=model.max_value if model.use_feature_clipping else None,
        use_horizontal_flipping_inside_model=model.use_horizontal_flipping_inside_model,
        last_stride=model.last_stride,
    )
    if model.use_local_branch:
        model_config.update(use_local_branch=True, local_feature_dim=model.local_feature_dim)
    if model.identity_head != "bn_neck":
        # Only when not the default, so model_config.json of earlier runs still rebuilds.
        model_config.update(identity_head=model.identity_head)
    return model_config


def build_models(config, num_identities, strategy):
    """Builds and compiles the models of a run under `strategy`.

    Args:
        config: applications.config.ExperimentConfig.
        num_identities: int, the training set's identities (the classifier's width).
        strategy: the tf.distribute strategy.

    Returns:
        Models.
    """
    model, losses = config.model, config.losses
    model_config = _model_config(model, num_identities)
    with strategy.scope():
        # The optimizer too: its slots must be created under the strategy's scope.
        factors, optimizer = regularization_settings(
            model.regularization_mode,
            **{name: getattr(model, name) for name in REGULARIZATION_FACTOR_NAMES},
        )
        build_options = dict(
            **model_config,
            pretrained=model.pretrained and not config.evaluation.evaluation_only,
            pretrained_root=model.pretrained_root,
            # Training only: how the flip structure's passes meet batch normalisation.
            flip_batch_norm_mode=model.flip_batch_norm_mode,
            **factors,
        )
        mutual_options = {}
        if model.model_num > 1:
            training_model, inference_models = build_mutual_learning_models(
                model.model_num, build_flipreid_models, **build_options
            )
            mutual_options = dict(
                probability_mutual_loss_weight=losses.probability_mutual_loss_weight,
                global_distance_mutual_loss_weight=losses.global_distance_mutual_loss_weight,
                local_distance_mutual_loss_weight=losses.local_distance_mutual_loss_weight,
            )
        else:
            training_model, inference_model = build_flipreid_models(**build_options)
            inference_models = [inference_model]
        training_model.compile(
            optimizer,
            triplet_margin=losses.triplet_margin,
            label_smoothing=losses.label_smoothing,
            triplet_loss_weight=losses.triplet_loss_weight,
            cross_entropy_loss_weight=losses.cross_entropy_loss_weight,
            flipping_loss_weight=losses.flipping_loss_weight,
            **({"jit_compile": True} if config.training.jit_compile else {}),
            local_triplet_loss_weight=losses.local_triplet_loss_weight,
            local_triplet_margin=losses.local_triplet_margin,
            local_distance_own_hard_samples=losses.local_distance_own_hard_samples,
            normalize_feature=losses.normalize_feature,
            **mutual_options,
        )
    return Models(training_model, inference_models, model_config)


def _open_run(guard, config, models, chief):
    """Opens the run folder (a new one, or the run to resume, restored into the models).

    Returns:
        applications.run_state.RunFolder; a new run's folder holds flags.json and
        model_config.json.
    """
    # flags.json records the policy --mixed_precision_policy auto chose on this machine, so that
    # resuming where auto chooses another one stops with the difference instead of changing it.
    flag_values = {
        **config.to_flat(),
        "mixed_precision_policy": keras.mixed_precision.global_policy().name,
    }
    run = guard.open(
        config.evaluation.output_folder_path,
        run_name(config.data.dataset_name, config.model.backbone_model_name),
        flag_values,
        training_model=models.training_model,
        resume=config.training.resume,
        resume_from=config.training.resume_from,
        is_chief=chief,
    )
    if run.state is None:
        # Only the chief writes the run's files; other workers write into a temporary folder.
        _write_json(os.path.join(run.writing_folder_path, "model_config.json"), models.model_config)
    return run


class _TestSetEvaluator:
    """Evaluates the current weights on the run's test sets: callable () -> metrics dict."""

    def __init__(self, config, data, evaluation_models, output_folder_path):
        self.config, self.data = config, data
        self.evaluation_models = evaluation_models
        self.output_folder_path = output_folder_path
        self.features_file_path = (
            os.path.join(output_folder_path, "features.npz")
            if config.evaluation.save_data_to_disk
            else None
        )

    def __call__(self):
        data = self.data
        metrics = self._evaluate_test_set(data.query, data.gallery, self.features_file_path)
        # Combined's other test sets: "<label>/<metric>" (see format_evaluation).
        for label, (other_query, other_gallery) in data.other_test_sets.items():
            other_features_file_path = self.features_file_path and os.path.join(
                self.output_folder_path, f"features_{label}.npz"
            )
            other = self._evaluate_test_set(
                other_query, other_gallery, other_features_file_path, f"{label}'s "
            )
            metrics.update({f"{label}{TEST_SET_SEPARATOR}{k}": v for k, v in other.items()})
        _record_skipped_testing_images(metrics, data.skipped_images)
        return metrics

    def _evaluate_test_set(self, query, gallery, features_file_path, label=""):
        model, evaluation = self.config.model, self.config.evaluation
        print(f"\nEvaluating on {label}{len(query)} query and {len(gallery)} gallery images ...")
        return evaluate_models(
            self.evaluation_models(),
            query,
            gallery,
            image_height=model.image_height,
            image_width=model.image_width,
            batch_size=evaluation.testing_batch_size,
            use_horizontal_flipping=evaluation.use_horizontal_flipping_in_evaluation,
            distance_metric=evaluation.distance_metric,
            use_re_ranking=evaluation.use_re_ranking,
            cmc_config=evaluation.cmc_config,
            features_file_path=features_file_path,
            normalize_feature=self.config.losses.normalize_feature,
        )


def _build_evaluator(config, data, models, run):
    """The evaluation models and the test-set evaluation of a run.

    Evaluation and export compute at --evaluation_precision, whatever the training policy: a
    twin inference model under that policy gets the trained weights at each use.

    Returns:
        (callable () -> list of the inference models to evaluate, one per model;
        callable () -> metrics dict, or None when test evaluation is off).
    """
    evaluation_models = build_precision_twin(
        models.inference_models,
        lambda: build_flipreid_models(**models.model_config)[1],
        evaluation_policy(config.evaluation.evaluation_precision),
    )
    if data.query is None:
        return evaluation_models, None
    return evaluation_models, _TestSetEvaluator(
        config, data, evaluation_models, run.writing_folder_path
    )


def _evaluate_baseline(config, data, run, evaluate):
    """The run's results so far, with the untrained (or --evaluation_only) metrics.

    Returns:
        dict, the results metrics.json will hold; also the run's `extra`, saved with each
        checkpoint.
    """
    evaluation = config.evaluation
    # Skipped files and count mismatches travel with the metrics they may have changed.
    results = {"dataset_notes": list(data.dataset.messages)}
    # A resumed run carries the results saved with its checkpoint (the untrained baseline).
    results.update(run.extra)
    run.extra = results
    if (
        evaluate is not None
        and run.state is None
        and (evaluation.evaluation_only or evaluation.evaluate_before_training)
    ):
        label = "Evaluation" if evaluation.evaluation_only else "Before training"
        metrics = evaluate()
        print(format_evaluation(metrics, f"{label} on {data.dataset.name}:"))
        results["evaluation_only" if evaluation.evaluation_only else "before_training"] = metrics
    return results


def _train(config, data, models, run, strategy, evaluate, stop_request):
    """Fits the models; returns the final test metrics (None without testing) and best epoch.

    A resumed run starts after its restored epoch, and every epoch ends with a checkpoint to
    resume from. Undecodable training images are replaced in their batch and recorded in
    `data.skipped_images["train"]`. `stop_request` (applications.interruption.StopRequest)
    stops training at a step boundary after a stop signal.
    """
    training = config.training
    steps_per_epoch = _steps_per_epoch(config, data.dataset)
    # FlipReID's procedure: N frozen epochs, then --epoch_num more on a restarted schedule.
    restart = training.restart_schedule_after_freezing
    epoch_num = count_epochs(training.epoch_num, training.freeze_backbone_for_N_epochs, restart)
    save_weights = functools.partial(
        models.save_weights, run.writing_folder_path, is_chief=run.is_chief
    )
    best_value, best_epoch, best_weights = _check_best_weights(run, save_weights)
    monitor = None
    if evaluate is not None:
        monitor = "test_re_ranking_mAP" if config.evaluation.use_re_ranking else "test_mAP"
    history_logger = _history_logger(run)
    record = _EpochRecord(
        run,
        save_weights,
        best_weights,
        history_logger,
        monitor=monitor,
        freeze_backbone_for_N_epochs=training.freeze_backbone_for_N_epochs,
        steps_per_epoch=steps_per_epoch,
    )
    checkpoint_callback = RunStateCheckpoint(
        record.save_state,
        save_best_fn=record.save_best if monitor else None,
        monitor=monitor,
        best_value=best_value if monitor else None,
        best_epoch=best_epoch if monitor else None,
    )
    evaluation_callback = _evaluation_callback(config, evaluate, epoch_num)
    callbacks = _training_callbacks(
        config,
        run,
        models.training_model,
        evaluation_callback,
        history_logger,
        checkpoint_callback,
        stop_request,
    )
    with stop_request.deferred():
        fit_in_stages(
            models.training_model,
            _training_images_function(config, data, strategy),
            steps_per_epoch=steps_per_epoch,
            epoch_num=training.epoch_num,
            freeze_backbone_for_N_epochs=training.freeze_backbone_for_N_epochs,
            callbacks=callbacks,
            initial_epoch=run.initial_epoch,
            restart_schedule_after_freezing=restart,
        )
    return _training_result(evaluation_callback, checkpoint_callback, save_weights, epoch_num)


def _history_logger(run):
    """The history.csv writer of the run, holding a resumed run's rows so far."""
    history_logger = HistoryLogger(run.writing_folder_path)
    if run.state is not None:
        history_logger.rows = [dict(row) for row in run.state.history_rows]
    return history_logger


def _evaluation_callback(config, evaluate, epoch_num):
    """The test-set evaluation every --evaluate_testing_every_N_epochs, or None without it."""
    if evaluate is None:
        return None
    return EvaluationCallback(
        functools.partial(_evaluate_during_training, evaluate),
        every_N_epochs=config.evaluation.evaluate_testing_every_N_epochs,
        epoch_num=epoch_num,
    )


def _steps_per_epoch(config, dataset):
    """--steps_per_epoch, or the steps of one epoch in --epoch_unit."""
    training = config.training
    if training.steps_per_epoch:
        return training.steps_per_epoch
    if training.epoch_unit == "identities":
        # AlignedReID's epoch: train.py (one model) drops the last incomplete batch of
        # identities, train_ml.py (mutual learning) keeps it.
        return identity_steps_per_epoch(
            dataset.num_train_identities,
            training.identity_num_per_batch,
            keep_final_batch=config.model.model_num > 1,
        )
    return compute_steps_per_epoch(
        len(dataset.train), training.identity_num_per_batch, training.image_num_per_identity
    )


def _training_images_function(config, data, strategy):
    """callable initial_batch_index -> the training tf.data.Dataset from that batch on.

    Built per training stage at its position in the stream (see fit_in_stages).
    """
    training, dataset = config.training, data.dataset
    make_training_images = functools.partial(
        build_training_dataset,
        dataset.train["image_file_path"].to_numpy(dtype=str),
        dataset.label_encoder.transform(dataset.train["identity_ID"]),
        identity_num_per_batch=training.identity_num_per_batch,
        image_num_per_identity=training.image_num_per_identity,
        image_height=config.model.image_height,
        image_width=config.model.image_width,
        use_data_augmentation=training.use_data_augmentation_in_training,
        random_crop_probability=training.random_crop_probability,
        horizontal_flip_probability=training.horizontal_flip_probability,
        patch_replacement_probability=training.patch_replacement_probability,
        random_erasing_probability=training.random_erasing_probability,
        crop_ratio=training.crop_ratio,
        ratio_crop_probability=training.ratio_crop_probability,
        seed=training.seed,
        num_workers=training.workers,
        skipped_images=data.skipped_images["train"],
        sampling_mode=training.sampling_mode,
    )

    def training_images(initial_batch_index):
        return prepare_dataset_for_strategy(
            make_training_images(initial_batch_index=initial_batch_index), strategy
        )

    return training_images


def _learning_rate_function(training):
    """The learning rate of each epoch index: --learning_rate_mode and its settings."""
    restart = training.restart_schedule_after_freezing
    return build_learning_rate_function(
        training.learning_rate_mode,
        epoch_num=training.epoch_num,
        learning_rate_start=training.learning_rate_start,
        learning_rate_end=training.learning_rate_end,
        learning_rate_base=training.learning_rate_base,
        learning_rate_warmup_epochs=training.learning_rate_warmup_epochs,
        learning_rate_steady_epochs=training.learning_rate_steady_epochs,
        learning_rate_drop_factor=training.learning_rate_drop_factor,
        learning_rate_lower_bound=training.learning_rate_lower_bound,
        exponential_decay_start_epoch=training.exponential_decay_start_epoch,
        staircase_decay_epochs=[int(epoch) for epoch in training.staircase_decay_epochs],
        staircase_decay_factor=training.staircase_decay_factor,
        restart_epoch=training.freeze_backbone_for_N_epochs if restart else 0,
    )


def _training_callbacks(
    config,
    run,
    training_model,
    evaluation_callback,
    history_logger,
    checkpoint_callback,
    stop_request,
):
    """The callbacks of training, in the order they must run at each epoch's end."""
    training_model_callbacks = [
        # The guard first: its epoch-end weight check must run before evaluation and saving.
        NaNGuard(
            # The policy resolved from --mixed_precision_policy (auto names none).
            mixed_precision_policy=keras.mixed_precision.global_policy().name,
            recovery_note_fn=functools.partial(
                _recovery_note, run, config.training.learning_rate_mode
            ),
        ),
        keras.callbacks.LearningRateScheduler(_learning_rate_function(config.training)),
    ]
    if evaluation_callback is not None:
        training_model_callbacks.append(evaluation_callback)
    return training_model_callbacks + [
        GeMPowerLogger(training_model.gem_power_values),
        # After the history logger, so that each checkpoint holds its epoch's history row.
        history_logger,
        checkpoint_callback,
        keras.callbacks.TensorBoard(os.path.join(run.writing_folder_path, "tensorboard")),
        # Last: a stop signal ends the run after a step, or after the epoch's checkpoint.
        StopAtStepBoundary(stop_request.check),
    ]


def _recovery_note(run, learning_rate_mode):
    """What NaNGuard adds to its error: the checkpoint to resume from, with which flags."""
    saved = run.manager.list_checkpoints()
    if not saved:
        return "No epoch had completed, so there is no checkpoint to resume from."
    # Name the flags this mode reads: a lower --learning_rate_base changes nothing in cosine.
    if "learning_rate_base" in FLAGS_READ_BY["learning_rate_mode"][learning_rate_mode]:
        lower = "--learning_rate_base <lower>"
    else:
        lower = "--learning_rate_start <lower> --learning_rate_end <lower>"
    return (
        f"The last good checkpoint (epoch {saved[-1][0]}) is kept in {saved[-1][1]}, and "
        f"history.csv holds the completed epochs. To continue from it with a lower learning "
        f"rate: python solution.py --resume_from {run.run_folder_path} {lower} (and the "
        "run's other flags)."
    )


def _evaluate_during_training(evaluate):
    """Evaluates, prints the metrics and returns those that go into the epoch's logs."""
    metrics = evaluate()
    print(format_evaluation(metrics, "Test metrics:"))
    return {
        key: value
        for key, value in metrics.items()
        # Also those of Combined's other test sets ("<label>/num_valid_queries") and of each
        # mutual-learning model ("model_2_feature_extraction_images_per_second").
        if _MODEL_PREFIX.sub("", key.rpartition(TEST_SET_SEPARATOR)[2]) not in _UNLOGGED_KEYS
    }


class _EpochRecord:
    """Writes what each epoch leaves: the best weights when they improve, then the checkpoint.

    Args:
        run: applications.run_state.RunFolder.
        save_weights: callable () -> manifest, writes every weights file.
        best_weights: dict {"files": manifest} of the best-weights files written so far.
        history_logger: callbacks.HistoryLogger, whose rows each checkpoint holds.
        monitor: str or None, the logs key of the best record ("test_mAP").
        freeze_backbone_for_N_epochs: int, the frozen epochs (the stage of each epoch).
        steps_per_epoch: int, to record the data stream's position.
    """

    def __init__(
        self,
        run,
        save_weights,
        best_weights,
        history_logger,
        *,
        monitor,
        freeze_backbone_for_N_epochs,
        steps_per_epoch,
    ):
        self.run, self.save_weights = run, save_weights
        self.best_weights, self.history_logger = best_weights, history_logger
        self.monitor = monitor
        self.freeze_backbone_for_N_epochs = freeze_backbone_for_N_epochs
        self.steps_per_epoch = steps_per_epoch

    def save_best(self, epoch, value):
        self.best_weights["files"] = self.save_weights()
        print(f"\nEpoch {epoch}: {self.monitor} {value:.2%} is the best so far; weights saved.")

    def save_state(self, epoch, best_value, best_epoch):
        self.run.manager.save(
            RunState(
                epoch=epoch,
                stage=stage_name(epoch - 1, self.freeze_backbone_for_N_epochs),
                stream_batch_index=epoch * self.steps_per_epoch,
                monitor=self.monitor or "",
                best_value=best_value,
                best_epoch=best_epoch,
                history_rows=self.history_logger.rows,
                extra=self.run.extra,
                best_weights_files=self.best_weights["files"],
            )
        )


def _check_best_weights(run, save_weights):
    """The best record a run continues with, once its best-weights files are checked.

    A resumed run's checkpoint holds the sizes and SHA-256 of the best-weights files as they
    were written. A file that differs (damaged, or rewritten by a newer best epoch when the run
    was stopped before that epoch's checkpoint) is rewritten when the checkpoint is of the
    best epoch itself; otherwise the best record restarts, so that the next evaluation writes
    every weights file again.

    Args:
        run: applications.run_state.RunFolder.
        save_weights: callable () -> manifest, writes the weights files of the current model.

    Returns:
        (best_value, best_epoch, {"files": manifest}) to continue with.
    """
    restored = run.state
    if restored is None:
        return None, None, {"files": {}}
    problems = check_file_manifest(run.run_folder_path, restored.best_weights_files)
    if not problems:
        return restored.best_value, restored.best_epoch, {"files": restored.best_weights_files}
    found = "; ".join(problems)
    if restored.best_epoch == restored.epoch:
        print(
            f"Rewrote the best weights of epoch {restored.best_epoch} from its checkpoint "
            f"({found})."
        )
        return restored.best_value, restored.best_epoch, {"files": save_weights()}
    print(
        f"The best weights of epoch {restored.best_epoch} are not as written ({found}); the best "
        "record restarts, so the next evaluation writes the weights files again."
    )
    return None, None, {"files": {}}


def _training_result(evaluation_callback, checkpoint_callback, save_weights, epoch_num):
    """(final test metrics or None without testing, best epoch) once training has ended."""
    if evaluation_callback is None:
        # As FlipReID does without testing: the last epoch's weights are the result.
        save_weights()
        print(f"\nTest evaluation is off: saved the weights of epoch {epoch_num}.")
        return None, epoch_num
    if evaluation_callback.last_metrics is None:
        # Resumed after the last epoch's checkpoint: only the final evaluation was missing.
        evaluation_callback.on_epoch_end(epoch_num - 1, {})
    final_metrics = {
        key[len("test_") :]: value for key, value in evaluation_callback.last_metrics.items()
    }
    return final_metrics, checkpoint_callback.best_epoch


def _report_training(config, data, results, final_metrics):
    """Prints the trained metrics and adds them to the results (nothing without testing)."""
    if final_metrics is None:
        return
    results["final"] = final_metrics
    training = config.training
    epoch_num = count_epochs(
        training.epoch_num,
        training.freeze_backbone_for_N_epochs,
        training.restart_schedule_after_freezing,
    )
    print(format_evaluation(final_metrics, f"After {epoch_num} epochs on {data.dataset.name}:"))
    if config.model.use_local_branch or config.model.model_num > 1 or data.other_test_sets:
        # AlignedReID's table: one entry per row (and per model, the best marked).
        results["final_rows"] = metrics_for_json(final_metrics)
    if "before_training" in results:
        print(
            f"mAP went from {results['before_training']['mAP']:.2%} (untrained) to "
            f"{final_metrics['mAP']:.2%} (trained)."
        )


def _write_results(config, data, models, run, evaluation_models, results, start_time):
    """Pictures, the skipped images, metrics.json and the export; marks the run completed."""
    evaluation = config.evaluation
    output_folder_path = run.writing_folder_path
    # Pictures and export show one model: the first one of a --model_num run.
    shown_model = evaluation_models()[0]
    if run.is_chief and evaluation.visualize_ranked_lists and data.query is not None:
        _write_pictures(config, data, shown_model, output_folder_path)
    _report_skipped_images(data.dataset, data.skipped_images, results)
    results["wall_time_seconds"] = time.perf_counter() - start_time
    _write_json(os.path.join(output_folder_path, "metrics.json"), results)
    if run.is_chief and evaluation.export_folder_path:
        # After metrics.json, so that a failed export never loses the run's results.
        saved_weights_file_path = models.first_inference_weights_file_path(output_folder_path)
        if not evaluation.evaluation_only and os.path.isfile(saved_weights_file_path):
            # Serve what the run saved (the best epoch's weights), not the last epoch's.
            load_model_weights(shown_model, saved_weights_file_path)
        test_images = data.dataset.train if data.query is None else data.query
        results["export"] = export_for_serving(
            shown_model,
            evaluation.export_folder_path,
            image_height=config.model.image_height,
            image_width=config.model.image_width,
            export_with_flipping=evaluation.export_with_flipping,
            parity_image_file_paths=test_images["image_file_path"],
        )
        _write_json(os.path.join(output_folder_path, "metrics.json"), results)
    run.mark_completed()
    print(f"Done in {results['wall_time_seconds']:.0f} s. Results: {run.run_folder_path}")


def _write_pictures(config, data, shown_model, output_folder_path):
    """The ranked lists and the CMC curve of the final evaluation (--visualize_ranked_lists)."""
    evaluation = config.evaluation
    pictures = write_result_pictures(
        shown_model,
        data.query,
        data.gallery,
        output_folder_path,
        visualize_ranked_lists=evaluation.visualize_ranked_lists,
        image_height=config.model.image_height,
        image_width=config.model.image_width,
        testing_batch_size=evaluation.testing_batch_size,
        use_horizontal_flipping_in_evaluation=evaluation.use_horizontal_flipping_in_evaluation,
        distance_metric=evaluation.distance_metric,
        cmc_config=evaluation.cmc_config,
        label=os.path.basename(output_folder_path),
    )
    print(
        f"Ranked lists of {len(pictures['ranked_list_file_paths'])} queries: "
        f"{os.path.join(output_folder_path, 'ranked_lists')}; CMC curve: "
        f"{pictures['cmc_curve_file_path']}"
    )


def _record_skipped_testing_images(metrics, skipped_images):
    """Moves the undecodable query and gallery files out of evaluation metrics into the logs.

    Args:
        metrics: dict from evaluate_models; its lists of skipped files (SKIPPED_QUERY_KEY,
            SKIPPED_GALLERY_KEY, also model_<i>_-prefixed with several models) are removed, so
            only numbers reach the logs, the history and metrics.json.
        skipped_images: dict split name ("query", "gallery") -> SkippedImageLog; a file left
            out at every evaluation is counted once.
    """
    for key in list(metrics):
        for suffix, split_name in ((SKIPPED_QUERY_KEY, "query"), (SKIPPED_GALLERY_KEY, "gallery")):
            if key.endswith(suffix):
                for image_file_path in metrics.pop(key):
                    skipped_images[split_name].record(image_file_path)


def _report_skipped_images(dataset, skipped_images, results):
    """Prints the undecodable images met while running; adds their notes to dataset_notes."""
    training_file_paths = set(dataset.train["image_file_path"])
    # Only real files: a log entry for an identity with no decodable image is not a file.
    num_training = sum(
        path in training_file_paths for path in skipped_images["train"].skipped_file_paths
    )
    if num_training:
        print(
            f"Note: skipped {num_training} undecodable training image"
            f"{'s' if num_training != 1 else ''} (each replaced in its batch by another image of "
            "the same identity)."
        )
    num_query, num_gallery = (skipped_images[name].num_skipped for name in ("query", "gallery"))
    if num_query or num_gallery:
        print(
            f"Note: left {num_query} undecodable query and {num_gallery} undecodable gallery "
            "images out of the evaluation."
        )
    notes = results["dataset_notes"]
    for log in skipped_images.values():
        notes.extend(message for message in log.messages() if message not in notes)
