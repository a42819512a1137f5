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
import inspect
import json
import os
import time

from absl import logging

from applications.aligned_model_evaluation import (
    evaluate_models,
    format_evaluation,
    metrics_for_json,
)
from applications.backend import keras, tf
from applications.learning_rate import build_learning_rate_function
from applications.model import build_flipreid_models
from applications.mutual_learning import build_mutual_learning_models, save_each_model_weights
from applications.training import fit_in_stages
from callbacks import BestWeightsCheckpoint, EvaluationCallback, GeMPowerLogger, HistoryLogger
from datasets import load_dataset, select_testing_subset
from datasets.pipeline import build_training_dataset, compute_steps_per_epoch

try:  # load_model_weights is moving from applications.model to applications.weights.
    from applications.weights import load_model_weights
except ImportError:  # pragma: no cover - before the move
    from applications.model import load_model_weights

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


def _accepted_keywords(function, **keywords):
    """The keywords `function` accepts: lets options reach builders whose new arguments are
    still being added in parallel, without breaking the older signature."""
    parameters = inspect.signature(function).parameters
    accepted = {name: value for name, value in keywords.items() if name in parameters}
    for name in keywords.keys() - accepted.keys():
        logging.warning("%s does not take %s yet; its default is used.", function.__name__, name)
    return accepted


def _write_json(file_path, content):
    with open(file_path, "w") as file:
        json.dump(content, file, indent=2, sort_keys=True)


def _load_data(data, seed):
    dataset = load_dataset(
        data.dataset_name,
        data.root_folder_path,
        cuhk03_variant=data.cuhk03_variant,
        combined_dataset_names=list(data.combined_dataset_names),
        evaluation_dataset_name=data.evaluation_dataset_name,
        verify_images=data.verify_images,
        synthetic_options=dict(
            num_identities=data.synthetic_identity_num,
            num_cameras=data.synthetic_camera_num,
            num_images_per_identity=data.synthetic_image_num_per_identity,
            seed=seed,
        ),
    )
    summary = f"{dataset.name}: {len(dataset.train)} training images of "
    summary += f"{dataset.num_train_identities} identities; "
    if data.testing_size == 0:
        query = gallery = None
        summary += "test evaluation is off (--testing_size 0)."
    else:
        query, gallery = select_testing_subset(dataset.query, dataset.gallery, data.testing_size)
        summary += f"testing on {len(query)} query and {len(gallery)} gallery images."
    print(summary)
    for message in dataset.messages:
        print(f"  note: {message}")
    return dataset, query, gallery


def _distribution_strategy(identity_num_per_batch):
    strategy = tf.distribute.get_strategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        strategy = tf.distribute.MirroredStrategy()
        print(f"Training on {strategy.num_replicas_in_sync} GPUs.")
        if identity_num_per_batch % strategy.num_replicas_in_sync:
            # Each replica takes a contiguous slice of the batch; batch-hard mining needs every
            # identity's K images inside one slice.
            raise ValueError(
                f"--identity_num_per_batch ({identity_num_per_batch}) must be a multiple "
                f"of the number of GPUs ({strategy.num_replicas_in_sync})."
            )
    return strategy


def _build_models(config, num_identities):
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
    )
    model_config.update(_accepted_keywords(build_flipreid_models, last_stride=model.last_stride))
    if model.use_local_branch:
        model_config.update(use_local_branch=True, local_feature_dim=model.local_feature_dim)
    with _distribution_strategy(config.training.identity_num_per_batch).scope():
        # The optimizer too: its slots must be created under the strategy's scope.
        factors, optimizer = regularization_settings(
            model.regularization_mode,
            **{name: getattr(model, name) for name in _REGULARIZATION_FACTOR_NAMES},
        )
        build_options = dict(
            **model_config,
            pretrained=model.pretrained and not config.evaluation.evaluation_only,
            pretrained_root=model.pretrained_root,
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
            local_triplet_loss_weight=losses.local_triplet_loss_weight,
            local_triplet_margin=losses.local_triplet_margin,
            local_distance_own_hard_samples=losses.local_distance_own_hard_samples,
            normalize_feature=losses.normalize_feature,
            **mutual_options,
        )
    return training_model, inference_model, model_config


def _train(config, dataset, training_model, inference_model, output_folder_path, evaluate):
    """Fits the model; returns the final test metrics (None without testing) and best epoch."""
    training, evaluation = config.training, config.evaluation
    training_images = build_training_dataset(
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
        seed=training.seed,
        **(
            _accepted_keywords(build_training_dataset, num_workers=training.workers)
            if training.workers is not None
            else {}
        ),
    )
    steps_per_epoch = training.steps_per_epoch or compute_steps_per_epoch(
        len(dataset.train), training.identity_num_per_batch, training.image_num_per_identity
    )
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
    )

    def save_weights():
        if isinstance(inference_model, list):
            save_each_model_weights(training_model, inference_model, output_folder_path)
            return
        training_model.save_weights(os.path.join(output_folder_path, "training_model.h5"))
        inference_model.save_weights(os.path.join(output_folder_path, "inference_model.h5"))

    callbacks = [keras.callbacks.LearningRateScheduler(learning_rate_function)]
    evaluation_callback = checkpoint_callback = None
    if evaluate is not None:
        monitor = "test_re_ranking_mAP" if evaluation.use_re_ranking else "test_mAP"

        def save_best(epoch, value):
            save_weights()
            print(f"\nEpoch {epoch}: {monitor} {value:.2%} is the best so far; weights saved.")

        def evaluate_during_training():
            metrics = evaluate()
            print(format_evaluation(metrics, "Test metrics:"))
            return {key: value for key, value in metrics.items() if key not in _UNLOGGED_KEYS}

        evaluation_callback = EvaluationCallback(
            evaluate_during_training,
            every_N_epochs=evaluation.evaluate_testing_every_N_epochs,
            epoch_num=training.epoch_num,
        )
        checkpoint_callback = BestWeightsCheckpoint(save_best, monitor=monitor)
        callbacks += [evaluation_callback]
    callbacks += [GeMPowerLogger(training_model.gem_power_values)]
    callbacks += [checkpoint_callback] if checkpoint_callback else []
    callbacks += [
        HistoryLogger(output_folder_path),
        keras.callbacks.TensorBoard(os.path.join(output_folder_path, "tensorboard")),
    ]
    fit_in_stages(
        training_model,
        training_images,
        steps_per_epoch=steps_per_epoch,
        epoch_num=training.epoch_num,
        freeze_backbone_for_N_epochs=training.freeze_backbone_for_N_epochs,
        callbacks=callbacks,
    )
    if evaluation_callback is None:
        # As FlipReID does without testing: the last epoch's weights are the result.
        save_weights()
        print(f"\nTest evaluation is off: saved the weights of epoch {training.epoch_num}.")
        return None, training.epoch_num
    final_metrics = {
        key[len("test_") :]: value for key, value in evaluation_callback.last_metrics.items()
    }
    return final_metrics, checkpoint_callback.best_epoch


def run_experiment(config):
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
    keras.utils.set_random_seed(config.training.seed)
    if config.training.mixed_precision_policy != "float32":
        keras.mixed_precision.set_global_policy(config.training.mixed_precision_policy)

    dataset, query, gallery = _load_data(data, config.training.seed)
    training_model, inference_model, model_config = _build_models(
        config, dataset.num_train_identities
    )
    if evaluation.pretrained_model_file_path:
        load_weights_into_either(
            training_model, inference_model, evaluation.pretrained_model_file_path
        )

    # Created only once data, model and weights are in place, so a run stopped by bad input
    # leaves no half-empty folder behind.
    run_name = (
        f"{os.path.basename(os.path.normpath(data.dataset_name))}_{model.backbone_model_name}"
    )
    output_folder_path = make_output_folder(evaluation.output_folder_path, run_name)
    if os.path.basename(output_folder_path) != run_name:
        print(
            f"{run_name} already exists in {evaluation.output_folder_path}; it is left untouched."
        )
    print(f"Writing outputs to {output_folder_path}")
    _write_json(os.path.join(output_folder_path, "flags.json"), config.to_flat())
    _write_json(os.path.join(output_folder_path, "model_config.json"), model_config)

    evaluate = None
    if query is not None:
        features_file_path = (
            os.path.join(output_folder_path, "features.npz")
            if evaluation.save_data_to_disk
            else None
        )

        def evaluate():
            print(f"\nEvaluating on {len(query)} query and {len(gallery)} gallery images ...")
            return evaluate_models(
                inference_model,
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
                normalize_feature=config.losses.normalize_feature,
            )

    # Skipped files and count mismatches travel with the metrics they may have changed.
    results = {"dataset_notes": list(dataset.messages)}
    if evaluate is not None and (evaluation.evaluation_only or evaluation.evaluate_before_training):
        label = "Evaluation" if evaluation.evaluation_only else "Before training"
        metrics = evaluate()
        print(format_evaluation(metrics, f"{label} on {dataset.name}:"))
        results["evaluation_only" if evaluation.evaluation_only else "before_training"] = metrics

    if not evaluation.evaluation_only:
        final_metrics, results["best_epoch"] = _train(
            config, dataset, training_model, inference_model, output_folder_path, evaluate
        )
        if final_metrics is not None:
            results["final"] = final_metrics
            epoch_num = config.training.epoch_num
            print(format_evaluation(final_metrics, f"After {epoch_num} epochs on {dataset.name}:"))
            if config.model.use_local_branch or config.model.model_num > 1:
                # AlignedReID's table: one entry per row (and per model, the best marked).
                results["final_rows"] = metrics_for_json(final_metrics)
            if "before_training" in results:
                print(
                    f"mAP went from {results['before_training']['mAP']:.2%} (untrained) to "
                    f"{final_metrics['mAP']:.2%} (trained)."
                )

    results["wall_time_seconds"] = time.perf_counter() - start_time
    _write_json(os.path.join(output_folder_path, "metrics.json"), results)
    print(f"Done in {results['wall_time_seconds']:.0f} s. Results: {output_folder_path}")
    return ExperimentOutcome(output_folder_path, results)
