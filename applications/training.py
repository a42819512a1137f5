"""The fit loop: an optional frozen-backbone stage, then the whole model, on one epoch count."""

from absl import logging


def fit_in_stages(
    training_model,
    dataset,
    *,
    steps_per_epoch,
    epoch_num,
    freeze_backbone_for_N_epochs=0,
    callbacks=(),
    verbose=1,
):
    """Trains `training_model` for `epoch_num` epochs in total.

    The first `freeze_backbone_for_N_epochs` epochs train only the heads (and pooling); the rest
    train everything. Both stages share one epoch count (the second `fit` starts at
    `initial_epoch`), so a learning-rate schedule of the epoch index runs once over the whole
    run, unlike FlipReID, whose second stage restarts at epoch 0 and warms up again. The same
    callback objects serve both stages, so histories and best-checkpoint state carry over.

    Args:
        training_model: a model built by applications.model.build_flipreid_models, compiled.
        dataset: tf.data.Dataset yielding (images, labels) forever.
        steps_per_epoch: int >= 1.
        epoch_num: int >= 1, total epochs.
        freeze_backbone_for_N_epochs: int >= 0; values >= epoch_num freeze it throughout.
        callbacks: sequence of keras callbacks.
        verbose: int, Keras fit verbosity (1 = progress bar, 2 = one line per epoch).

    Returns:
        dict str -> list of float: the Keras history of both stages, concatenated.
    """
    if epoch_num < 1:
        raise ValueError(f"--epoch_num must be at least 1, got {epoch_num}.")
    if steps_per_epoch < 1:
        raise ValueError(f"--steps_per_epoch must be at least 1, got {steps_per_epoch}.")
    if freeze_backbone_for_N_epochs < 0:
        raise ValueError(
            f"--freeze_backbone_for_N_epochs must be 0 or more, got {freeze_backbone_for_N_epochs}."
        )
    frozen_epoch_num = min(freeze_backbone_for_N_epochs, epoch_num)
    stages = []
    if frozen_epoch_num > 0:
        stages.append((False, 0, frozen_epoch_num))
    if frozen_epoch_num < epoch_num:
        stages.append((True, frozen_epoch_num, epoch_num))

    # The optimizer must know every variable before the first step: one built on the head
    # variables alone refuses the backbone's when it is unfrozen.
    optimizer = training_model.optimizer
    if hasattr(optimizer, "build") and not getattr(optimizer, "_built", False):
        training_model.set_backbone_trainable(True)
        optimizer.build(training_model.trainable_variables)

    history = {}
    for backbone_trainable, initial_epoch, final_epoch in stages:
        logging.info(
            "Epochs %d-%d: backbone %s.",
            initial_epoch + 1,
            final_epoch,
            "trainable" if backbone_trainable else "frozen",
        )
        training_model.set_backbone_trainable(backbone_trainable)
        stage_history = training_model.fit(
            dataset,
            steps_per_epoch=steps_per_epoch,
            initial_epoch=initial_epoch,
            epochs=final_epoch,
            callbacks=list(callbacks),
            verbose=verbose,
        )
        for key, values in stage_history.history.items():
            history.setdefault(key, []).extend(values)
    return history
