"""One experiment from a typed configuration: data, model, training, evaluation, outputs.

`run_experiment(config)` is what `python solution.py` runs after parsing its flags; tests call it
directly with `applications.config.build_experiment_config(...)`. Each step is a call of one
package's public function with keyword arguments named like the flags:

    datasets.load_dataset -> datasets.select_testing_subset
    -> applications.model.build_flipreid_models -> datasets.pipeline.build_training_dataset
    -> applications.training.fit_in_stages (callbacks: learning rate, evaluation, best
       weights, GeM powers, history, TensorBoard)
    -> applications.model_evaluation.evaluate_model -> evaluation (NumPy) -> metrics.json
"""

import dataclasses
import functools
import os
import time

from applications.aligned_model_evaluation import (
    TEST_SET_SEPARATOR,
    evaluate_models,
    format_evaluation,
    metrics_for_json,
)
from applications.backend import keras, tf
from applications.config import resolve_recipe
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
from applications.interruption import RunInterrupted, StopRequest, handle_stop_signals
from applications.learning_rate import build_learning_rate_function
from applications.model import build_flipreid_models
from applications.model_evaluation import SKIPPED_GALLERY_KEY, SKIPPED_QUERY_KEY
from applications.mutual_learning import build_mutual_learning_models, save_each_model_weights
from applications.precision import (
    build_precision_twin,
    evaluation_policy,
    num_visible_gpus,
    read_cpu_flags,
    resolve_mixed_precision_policy,
    restored_global_policy,
)
from applications.result_pictures import write_result_pictures
from applications.run_state import (
    RunState,
    atomic_save_weights,
    atomic_write_json,
    check_file_manifest,
    check_output_folder_writable,
    file_manifest,
    open_run_folder,
)
from applications.training import count_epochs, fit_in_stages, stage_name
from applications.weights import load_model_weights
from applications.weights_file import check_weights_file, check_weights_file_readable
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
_REGULARIZATION_FACTOR_NAMES = (
    "kernel_regularization_factor",
    "bias_regularization_factor",
    "gamma_regularization_factor",
    "beta_regularization_factor",
)


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


def make_output_folder(output_folder_path, run_name):
    """Creates a fresh output folder, never reusing (or deleting) an existing one.

    Args:
        output_folder_path: str, the parent folder (created when missing).
        run_name: str, the folder name wanted.

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
    """Loads a training-model or an inference-model weights file written by this project.

    Args:
        training_model: the FlipReID training model.
        inference_model: the inference model sharing its weights.
        file_path: str, training_model.h5 or inference_model.h5 of an earlier run.

    Raises:
        ValueError: the file fits neither model; the message says which flags must match.
    """
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


def regularization_settings(regularization_mode, **factors):
    """The model's L2 factors and the optimizer of a regularization mode.

    Args:
        regularization_mode: "l2" (FlipReID's L2 term in the loss, the four factors as given),
            "decoupled" (no L2 term; AdamW weight decay of kernel_regularization_factor) or
            "none".
        **factors: the four *_regularization_factor values by name.

    Returns:
        (dict of the four factors for build_flipreid_models, keras optimizer).
    """
    if regularization_mode == "l2":
        return dict(factors), keras.optimizers.Adam()
    zeros = {name: 0.0 for name in _REGULARIZATION_FACTOR_NAMES}
    if regularization_mode == "decoupled":
        weight_decay = factors["kernel_regularization_factor"]
        return zeros, keras.optimizers.AdamW(weight_decay=weight_decay)
    if regularization_mode == "none":
        return zeros, keras.optimizers.Adam()
    raise ValueError(
        f"Unknown regularization_mode {regularization_mode!r}; valid names: l2, decoupled, none."
    )


def _write_json(file_path, content):
    # Atomic: a run killed while writing never leaves half a file.
    atomic_write_json(file_path, content)


def _load_data(data, seed):
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
    return dataset, query, gallery, other_test_sets


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


def _distribution_strategy(training):
    """Logical CPU devices and the strategy: set up before TensorFlow's first operation."""
    configure_cpu_logical_devices(training.cpu_logical_devices)
    strategy = build_strategy(training.distribution_strategy)
    if training.distribution_strategy != "default":
        print(f"Distributed training: {describe_strategy(strategy)}.")
    elif len(tf.config.list_logical_devices("GPU")) > 1:
        print("Several GPUs are visible; --distribution_strategy mirrored trains on all of them.")
    return strategy


def _build_models(config, num_identities, strategy):
    """Builds and compiles the models; returns them and the settings that shape the weights."""
    model, losses = config.model, config.losses
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
    with strategy.scope():
        # The optimizer too: its slots must be created under the strategy's scope.
        factors, optimizer = regularization_settings(
            model.regularization_mode,
            **{name: getattr(model, name) for name in _REGULARIZATION_FACTOR_NAMES},
        )
        build_options = dict(
            **model_config,
            pretrained=model.pretrained and not config.evaluation.evaluation_only,
            pretrained_root=model.pretrained_root,
            # Training only: how the flip structure's passes meet batch normalisation.
            flip_batch_norm_mode=model.flip_batch_norm_mode,
            **factors,
        )
        # Mutual learning: inference_model is then the list of the models' inference models.
        mutual_options = {}
        if model.model_num > 1:
            training_model, inference_model = build_mutual_learning_models(
                model.model_num, build_flipreid_models, **build_options
            )
            mutual_options = dict(
                probability_mutual_loss_weight=losses.probability_mutual_loss_weight,
                global_distance_mutual_loss_weight=losses.global_distance_mutual_loss_weight,
                local_distance_mutual_loss_weight=losses.local_distance_mutual_loss_weight,
            )
        else:
            training_model, inference_model = build_flipreid_models(**build_options)
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
    return training_model, inference_model, model_config


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


def _train(
    config,
    dataset,
    training_model,
    inference_model,
    output_folder_path,
    evaluate,
    run,
    strategy,
    skipped_training_images=None,
    stop_request=None,
):
    """Fits the model; returns the final test metrics (None without testing) and best epoch.

    `run` is the applications.run_state.RunFolder: a resumed run starts after its restored
    epoch, and every epoch ends with a checkpoint to resume from. Undecodable training images
    are replaced in their batch and recorded in `skipped_training_images` (a SkippedImageLog).
    `stop_request` (applications.interruption.StopRequest) stops training at a step boundary
    after a stop signal.
    """
    stop_request = stop_request or StopRequest()
    training, evaluation = config.training, config.evaluation
    # Built per training stage at its position in the stream (see fit_in_stages).
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
        skipped_images=skipped_training_images,
        sampling_mode=training.sampling_mode,
    )

    def training_images(initial_batch_index):
        return prepare_dataset_for_strategy(
            make_training_images(initial_batch_index=initial_batch_index), strategy
        )

    if training.steps_per_epoch:
        steps_per_epoch = training.steps_per_epoch
    elif training.epoch_unit == "identities":
        # AlignedReID's epoch: train.py (one model) drops the last incomplete batch of
        # identities, train_ml.py (mutual learning) keeps it.
        steps_per_epoch = identity_steps_per_epoch(
            dataset.num_train_identities,
            training.identity_num_per_batch,
            keep_final_batch=config.model.model_num > 1,
        )
    else:
        steps_per_epoch = compute_steps_per_epoch(
            len(dataset.train), training.identity_num_per_batch, training.image_num_per_identity
        )
    # FlipReID's procedure: N frozen epochs, then --epoch_num more on a restarted schedule.
    restart = training.restart_schedule_after_freezing
    epoch_num = count_epochs(training.epoch_num, training.freeze_backbone_for_N_epochs, restart)
    learning_rate_function = build_learning_rate_function(
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

    def save_weights():
        """Writes every weights file atomically; returns their manifest (sizes, SHA-256)."""
        if isinstance(inference_model, list):
            file_names = save_each_model_weights(
                training_model, inference_model, output_folder_path, is_chief=run.is_chief
            )
        else:
            file_names = ["training_model.h5", "inference_model.h5"]
            for saved_model, file_name in zip((training_model, inference_model), file_names):
                saved_path = os.path.join(output_folder_path, file_name)
                atomic_save_weights(saved_model, saved_path, is_chief=run.is_chief)
        # Other workers write into a temporary folder that is gone by now.
        return file_manifest(output_folder_path, file_names) if run.is_chief else {}

    def recovery_note():
        saved = run.manager.list_checkpoints()
        if not saved:
            return "No epoch had completed, so there is no checkpoint to resume from."
        # Name the flags this mode reads: a lower --learning_rate_base changes nothing in cosine.
        if "learning_rate_base" in FLAGS_READ_BY["learning_rate_mode"][training.learning_rate_mode]:
            lower = "--learning_rate_base <lower>"
        else:
            lower = "--learning_rate_start <lower> --learning_rate_end <lower>"
        return (
            f"The last good checkpoint (epoch {saved[-1][0]}) is kept in {saved[-1][1]}, and "
            f"history.csv holds the completed epochs. To continue from it with a lower learning "
            f"rate: python solution.py --resume_from {run.run_folder_path} {lower} (and the "
            "run's other flags)."
        )

    def save_state(epoch, best_value, best_epoch):
        run.manager.save(
            RunState(
                epoch=epoch,
                stage=stage_name(epoch - 1, training.freeze_backbone_for_N_epochs),
                stream_batch_index=epoch * steps_per_epoch,
                monitor=checkpoint_callback.monitor or "",
                best_value=best_value,
                best_epoch=best_epoch,
                history_rows=history_logger.rows,
                extra=run.extra,
                best_weights_files=best_weights["files"],
            )
        )

    # The guard first: its epoch-end weight check must run before evaluation and saving.
    callbacks = [
        NaNGuard(
            # The policy resolved from --mixed_precision_policy (auto names none).
            mixed_precision_policy=keras.mixed_precision.global_policy().name,
            recovery_note_fn=recovery_note,
        ),
        keras.callbacks.LearningRateScheduler(learning_rate_function),
    ]
    evaluation_callback = checkpoint_callback = None
    restored = run.state
    best_value, best_epoch, best_weights = _check_best_weights(run, save_weights)
    if evaluate is not None:
        monitor = "test_re_ranking_mAP" if evaluation.use_re_ranking else "test_mAP"

        def save_best(epoch, value):
            best_weights["files"] = save_weights()
            print(f"\nEpoch {epoch}: {monitor} {value:.2%} is the best so far; weights saved.")

        def evaluate_during_training():
            metrics = evaluate()
            print(format_evaluation(metrics, "Test metrics:"))
            return {
                key: value
                for key, value in metrics.items()
                # Also those of Combined's other test sets ("<label>/num_valid_queries").
                if key.rpartition(TEST_SET_SEPARATOR)[2] not in _UNLOGGED_KEYS
            }

        evaluation_callback = EvaluationCallback(
            evaluate_during_training,
            every_N_epochs=evaluation.evaluate_testing_every_N_epochs,
            epoch_num=epoch_num,
        )
        checkpoint_callback = RunStateCheckpoint(
            save_state,
            save_best_fn=save_best,
            monitor=monitor,
            best_value=best_value,
            best_epoch=best_epoch,
        )
        callbacks += [evaluation_callback]
    callbacks += [GeMPowerLogger(training_model.gem_power_values)]
    history_logger = HistoryLogger(output_folder_path)
    if restored:
        history_logger.rows = [dict(row) for row in restored.history_rows]
    if checkpoint_callback is None:
        checkpoint_callback = RunStateCheckpoint(save_state, save_best_fn=None, monitor=None)
    # After the history logger, so that each checkpoint holds its epoch's history row.
    callbacks += [
        history_logger,
        checkpoint_callback,
        keras.callbacks.TensorBoard(os.path.join(output_folder_path, "tensorboard")),
        # Last: a stop signal ends the run after a step, or after the epoch's checkpoint.
        StopAtStepBoundary(stop_request.check),
    ]
    with stop_request.deferred():
        fit_in_stages(
            training_model,
            training_images,
            steps_per_epoch=steps_per_epoch,
            epoch_num=training.epoch_num,
            freeze_backbone_for_N_epochs=training.freeze_backbone_for_N_epochs,
            callbacks=callbacks,
            initial_epoch=run.initial_epoch,
            restart_schedule_after_freezing=restart,
        )
    if evaluation_callback is not None and evaluation_callback.last_metrics is None:
        # Resumed after the last epoch's checkpoint: only the final evaluation was missing.
        evaluation_callback.on_epoch_end(epoch_num - 1, {})
    if evaluation_callback is None:
        # As FlipReID does without testing: the last epoch's weights are the result.
        save_weights()
        print(f"\nTest evaluation is off: saved the weights of epoch {epoch_num}.")
        return None, epoch_num
    final_metrics = {
        key[len("test_") :]: value for key, value in evaluation_callback.last_metrics.items()
    }
    return final_metrics, checkpoint_callback.best_epoch


def run_experiment(config):
    """Runs `_run_experiment`, marking a run folder that an error stopped as failed.

    The folder keeps RUN_INCOMPLETE.txt (so --resume can continue it) and gets RUN_FAILED.txt
    with the reason. An interruption (Ctrl-C, a kill) leaves it marked incomplete only.

    Raises:
        applications.interruption.RunInterrupted: SIGINT or SIGTERM stopped the run (at a step
            boundary while training, see applications.interruption); it names the run folder
            and the epoch of the checkpoint kept.
    """
    opened = {}
    with handle_stop_signals() as stop_request:
        opened["stop_request"] = stop_request
        try:
            # A run's policy (e.g. mixed_bfloat16) must not outlive it in the process.
            with restored_global_policy():
                return _run_experiment(config, opened)
        except RunInterrupted as interruption:
            if "run" in opened and opened["run"].is_chief:
                interruption.run_folder_path = opened["run"].run_folder_path
                interruption.checkpoint_epoch = opened["run"].manager.newest_whole_epoch()
            raise
        except Exception as error:
            if "run" in opened:
                opened["run"].mark_failed(f"{type(error).__name__}: {error}")
            raise
        finally:
            if "run" in opened:
                opened["run"].close()


def _run_experiment(config, opened):
    """Trains and/or evaluates as the configuration says, printing progress and results.

    Args:
        config: applications.config.ExperimentConfig.

    Returns:
        ExperimentOutcome.

    Raises:
        ValueError, FileNotFoundError, RuntimeError: bad data, weights or settings found while
            running; the message names the file or flag and the fix. Nothing is written before
            data, model and weights have loaded.
    """
    start_time = time.perf_counter()
    data, model, evaluation = config.data, config.model, config.evaluation
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
    chief = is_chief(strategy)
    # Checks that need no data: found now rather than after minutes of loading.
    if chief:
        check_output_folder_writable(evaluation.output_folder_path)
    if evaluation.pretrained_model_file_path:
        check_weights_file_readable(evaluation.pretrained_model_file_path)
    keras.utils.set_random_seed(config.training.seed)
    keras.mixed_precision.set_global_policy(training_policy)

    dataset, query, gallery, other_test_sets = _load_data(data, config.training.seed)
    # Images that pass the load-time check but fail to decode, met while running: skipped,
    # counted, and reported at the end.
    skipped_images = {
        split_name: SkippedImageLog(f"{dataset.name} {split_name}")
        for split_name in ("train", "query", "gallery")
    }
    if not evaluation.evaluation_only:
        check_batch_composition(
            identity_num_per_batch=config.training.identity_num_per_batch,
            image_num_per_identity=config.training.image_num_per_identity,
            num_replicas=strategy.num_replicas_in_sync,
            num_train_identities=dataset.num_train_identities,
        )
    training_model, inference_model, model_config = _build_models(
        config, dataset.num_train_identities, strategy
    )
    if evaluation.pretrained_model_file_path:
        if not isinstance(inference_model, list):
            # One line for a file of another model, before Keras' long error.
            check_weights_file(
                evaluation.pretrained_model_file_path,
                {"training model": training_model, "inference model": inference_model},
            )
        load_weights_into_either(
            training_model, inference_model, evaluation.pretrained_model_file_path
        )

    # Created only once data, model and weights are in place, so a run stopped by bad input
    # leaves no half-empty folder behind.
    run_name = (
        f"{os.path.basename(os.path.normpath(data.dataset_name))}_{model.backbone_model_name}"
    )
    # A new folder, or the run to resume (restored into training_model here).
    run = opened["run"] = open_run_folder(
        evaluation.output_folder_path,
        run_name,
        config.to_flat(),
        training_model=training_model,
        make_output_folder=make_output_folder,
        resume=config.training.resume,
        resume_from=config.training.resume_from,
        is_chief=chief,
    )
    # Only the chief writes the run's files; other workers write into a temporary folder.
    output_folder_path = run.writing_folder_path
    if run.state is None:
        _write_json(os.path.join(output_folder_path, "model_config.json"), model_config)

    # Evaluation and export compute at --evaluation_precision, whatever the training policy:
    # a twin inference model under that policy gets the trained weights at each use.
    evaluation_models = build_precision_twin(
        inference_model,
        lambda: build_flipreid_models(**model_config)[1],
        evaluation_policy(evaluation.evaluation_precision),
    )
    evaluate = None
    if query is not None:
        features_file_path = (
            os.path.join(output_folder_path, "features.npz")
            if evaluation.save_data_to_disk
            else None
        )

        def evaluate_test_set(test_query, test_gallery, test_features_file_path, label=""):
            print(
                f"\nEvaluating on {label}{len(test_query)} query and {len(test_gallery)} gallery "
                "images ..."
            )
            return evaluate_models(
                evaluation_models(),
                test_query,
                test_gallery,
                image_height=model.image_height,
                image_width=model.image_width,
                batch_size=evaluation.testing_batch_size,
                use_horizontal_flipping=evaluation.use_horizontal_flipping_in_evaluation,
                distance_metric=evaluation.distance_metric,
                use_re_ranking=evaluation.use_re_ranking,
                cmc_config=evaluation.cmc_config,
                features_file_path=test_features_file_path,
                normalize_feature=config.losses.normalize_feature,
            )

        def evaluate():
            metrics = evaluate_test_set(query, gallery, features_file_path)
            # Combined's other test sets: "<label>/<metric>" (see format_evaluation).
            for label, (other_query, other_gallery) in other_test_sets.items():
                other_features_file_path = features_file_path and os.path.join(
                    output_folder_path, f"features_{label}.npz"
                )
                other = evaluate_test_set(
                    other_query, other_gallery, other_features_file_path, f"{label}'s "
                )
                metrics.update({f"{label}{TEST_SET_SEPARATOR}{k}": v for k, v in other.items()})
            _record_skipped_testing_images(metrics, skipped_images)
            return metrics

    # Skipped files and count mismatches travel with the metrics they may have changed.
    results = {"dataset_notes": list(dataset.messages)}
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
        print(format_evaluation(metrics, f"{label} on {dataset.name}:"))
        results["evaluation_only" if evaluation.evaluation_only else "before_training"] = metrics

    if not evaluation.evaluation_only:
        final_metrics, results["best_epoch"] = _train(
            config,
            dataset,
            training_model,
            inference_model,
            output_folder_path,
            evaluate,
            run,
            strategy,
            skipped_training_images=skipped_images["train"],
            stop_request=opened["stop_request"],
        )
        if final_metrics is not None:
            results["final"] = final_metrics
            training = config.training
            epoch_num = count_epochs(
                training.epoch_num,
                training.freeze_backbone_for_N_epochs,
                training.restart_schedule_after_freezing,
            )
            print(format_evaluation(final_metrics, f"After {epoch_num} epochs on {dataset.name}:"))
            if config.model.use_local_branch or config.model.model_num > 1 or other_test_sets:
                # AlignedReID's table: one entry per row (and per model, the best marked).
                results["final_rows"] = metrics_for_json(final_metrics)
            if "before_training" in results:
                print(
                    f"mAP went from {results['before_training']['mAP']:.2%} (untrained) to "
                    f"{final_metrics['mAP']:.2%} (trained)."
                )

    # Pictures and export show one model: the first one of a --model_num run.
    shown_models = evaluation_models()
    shown_model = shown_models[0] if isinstance(shown_models, list) else shown_models
    if chief and evaluation.visualize_ranked_lists and query is not None:
        pictures = write_result_pictures(
            shown_model,
            query,
            gallery,
            output_folder_path,
            visualize_ranked_lists=evaluation.visualize_ranked_lists,
            image_height=model.image_height,
            image_width=model.image_width,
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

    _report_skipped_images(dataset, skipped_images, results)
    results["wall_time_seconds"] = time.perf_counter() - start_time
    _write_json(os.path.join(output_folder_path, "metrics.json"), results)
    if chief and evaluation.export_folder_path:
        # After metrics.json, so that a failed export never loses the run's results.
        saved_weights_file_path = os.path.join(
            output_folder_path,
            "model_1" if isinstance(inference_model, list) else "",
            "inference_model.h5",
        )
        if not evaluation.evaluation_only and os.path.isfile(saved_weights_file_path):
            # Serve what the run saved (the best epoch's weights), not the last epoch's.
            load_model_weights(shown_model, saved_weights_file_path)
        results["export"] = export_for_serving(
            shown_model,
            evaluation.export_folder_path,
            image_height=model.image_height,
            image_width=model.image_width,
            export_with_flipping=evaluation.export_with_flipping,
            parity_image_file_paths=(dataset.train if query is None else query)["image_file_path"],
        )
        _write_json(os.path.join(output_folder_path, "metrics.json"), results)
    run.mark_completed()
    print(f"Done in {results['wall_time_seconds']:.0f} s. Results: {run.run_folder_path}")
    return ExperimentOutcome(output_folder_path, results)
