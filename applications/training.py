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
    initial_epoch=0,
):
    """Trains `training_model` for `epoch_num` epochs in total, or the epochs left of them.

    The first `freeze_backbone_for_N_epochs` epochs train only the heads (and pooling); the rest
    train everything. Both stages share one epoch count (the second `fit` starts at
    `initial_epoch`), so a learning-rate schedule of the epoch index runs once over the whole
    run, unlike FlipReID, whose second stage restarts at epoch 0 and warms up again. The same
    callback objects serve both stages, so histories and best-checkpoint state carry over.

    A resumed run passes `initial_epoch` (the number of epochs already done): it starts in the
    stage that epoch belongs to, with the learning-rate schedule at that epoch.

    Args:
        training_model: a model built by applications.model.build_flipreid_models, compiled.
        dataset: tf.data.Dataset yielding (images, labels) forever, or a callable
            (initial_batch_index: int) -> such a dataset. A callable is called at the start of
            each stage with the number of batches consumed before it (epochs done times
            steps_per_epoch), so the data stream continues where it stopped instead of
            restarting: each `fit` call starts a new iterator of a plain dataset.
        steps_per_epoch: int >= 1.
        epoch_num: int >= 1, total epochs.
        freeze_backbone_for_N_epochs: int >= 0; values >= epoch_num freeze it throughout.
        callbacks: sequence of keras callbacks.
        verbose: int, Keras fit verbosity (1 = progress bar, 2 = one line per epoch).
        initial_epoch: int in [0, epoch_num], epochs already done (0 for a new run).

    Returns:
        dict str -> list of float: the Keras history of the epochs run here, concatenated.
    """
    if epoch_num < 1:
        raise ValueError(f"--epoch_num must be at least 1, got {epoch_num}.")
    if steps_per_epoch < 1:
        raise ValueError(f"--steps_per_epoch must be at least 1, got {steps_per_epoch}.")
    if freeze_backbone_for_N_epochs < 0:
        raise ValueError(
            f"--freeze_backbone_for_N_epochs must be 0 or more, got {freeze_backbone_for_N_epochs}."
        )
    if not 0 <= initial_epoch <= epoch_num:
        raise ValueError(
            f"initial_epoch must be in [0, --epoch_num={epoch_num}], got {initial_epoch}."
        )
    stages = [
        (backbone_trainable, max(start, initial_epoch), end)
        for backbone_trainable, start, end in compute_stages(
            epoch_num, freeze_backbone_for_N_epochs
        )
        if end > initial_epoch
    ]

    # The optimizer must know every variable before the first step: one built on the head
    # variables alone refuses the backbone's when it is unfrozen.
    optimizer = training_model.optimizer
    if hasattr(optimizer, "build") and not getattr(optimizer, "_built", False):
        training_model.set_backbone_trainable(True)
        optimizer.build(training_model.trainable_variables)

    history = {}
    for backbone_trainable, stage_initial_epoch, final_epoch in stages:
        logging.info(
            "Epochs %d-%d: backbone %s.",
            stage_initial_epoch + 1,
            final_epoch,
            "trainable" if backbone_trainable else "frozen",
        )
        training_model.set_backbone_trainable(backbone_trainable)
        stage_dataset = (
            dataset(stage_initial_epoch * steps_per_epoch) if callable(dataset) else dataset
        )
        stage_history = training_model.fit(
            stage_dataset,
            steps_per_epoch=steps_per_epoch,
            initial_epoch=stage_initial_epoch,
            epochs=final_epoch,
            callbacks=list(callbacks),
            verbose=verbose,
        )
        for key, values in stage_history.history.items():
            history.setdefault(key, []).extend(values)
    return history


def compute_stages(epoch_num, freeze_backbone_for_N_epochs):
    """The training stages as (backbone_trainable, first epoch, end epoch), 0-based, end excluded.

    Args:
        epoch_num: int >= 1, total epochs.
        freeze_backbone_for_N_epochs: int >= 0.

    Returns:
        list of one or two (bool, int, int) tuples covering [0, epoch_num).
    """
    frozen_epoch_num = min(freeze_backbone_for_N_epochs, epoch_num)
    stages = []
    if frozen_epoch_num > 0:
        stages.append((False, 0, frozen_epoch_num))
    if frozen_epoch_num < epoch_num:
        stages.append((True, frozen_epoch_num, epoch_num))
    return stages


def stage_name(epoch, freeze_backbone_for_N_epochs):
    """ "frozen" or "trainable": the backbone's stage during the 0-based `epoch`."""
    return "frozen" if epoch < freeze_backbone_for_N_epochs else "trainable"
