"""The fit loop: an optional frozen-backbone stage, then the whole model.

Two ways to count the epochs: by default the frozen epochs are part of --epoch_num; with
--restart_schedule_after_freezing (FlipReID's procedure) they come before --epoch_num epochs of
training the whole model, and the learning-rate schedule restarts when the backbone is unfrozen
(`applications.learning_rate.schedule_epoch_index`).
"""

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
    restart_schedule_after_freezing=False,
):
    """Trains `training_model` for `count_epochs(...)` epochs in all, or the epochs left of them.

    The first `freeze_backbone_for_N_epochs` epochs train only the heads (and pooling); the rest
    train everything. Both stages share one epoch count for Keras and the callbacks (the second
    `fit` starts at `initial_epoch`), so histories and best-checkpoint state carry over. Without
    `restart_schedule_after_freezing` the run has `epoch_num` epochs in all; with it (FlipReID's
    procedure) it has freeze_backbone_for_N_epochs + epoch_num, and the learning-rate callback
    is expected to restart its schedule at the unfreezing epoch (build it with
    restart_epoch=freeze_backbone_for_N_epochs).

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
        epoch_num: int >= 1, total epochs, or with restart_schedule_after_freezing the epochs
            after unfreezing.
        freeze_backbone_for_N_epochs: int >= 0; without restart_schedule_after_freezing, values
            >= epoch_num freeze it throughout.
        callbacks: sequence of keras callbacks.
        verbose: int, Keras fit verbosity (1 = progress bar, 2 = one line per epoch).
        initial_epoch: int in [0, total epochs], epochs already done (0 for a new run).
        restart_schedule_after_freezing: bool, FlipReID's epoch count (see above).

    Returns:
        dict str -> list of float: the Keras history of the epochs run here, concatenated.
    """
    if epoch_num < 1:
        raise ValueError(f"epoch_num must be at least 1, got {epoch_num}.")
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}.")
    if freeze_backbone_for_N_epochs < 0:
        raise ValueError(
            f"freeze_backbone_for_N_epochs must be 0 or more, got {freeze_backbone_for_N_epochs}."
        )
    total_epoch_num = count_epochs(
        epoch_num, freeze_backbone_for_N_epochs, restart_schedule_after_freezing
    )
    if not 0 <= initial_epoch <= total_epoch_num:
        raise ValueError(
            f"initial_epoch must be in [0, {total_epoch_num}] (the run's epochs), got "
            f"{initial_epoch}."
        )
    stages = _stages_left(total_epoch_num, freeze_backbone_for_N_epochs, initial_epoch)
    _build_optimizer_on_every_variable(training_model)
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


def _stages_left(total_epoch_num, freeze_backbone_for_N_epochs, initial_epoch):
    """compute_stages' stages that end after initial_epoch, the first one starting there."""
    return [
        (backbone_trainable, max(start, initial_epoch), end)
        for backbone_trainable, start, end in compute_stages(
            total_epoch_num, freeze_backbone_for_N_epochs
        )
        if end > initial_epoch
    ]


def _build_optimizer_on_every_variable(training_model):
    """Builds a not yet built optimizer on every variable, the backbone's included.

    The optimizer must know every variable before the first step: one built on the head
    variables alone refuses the backbone's when it is unfrozen.
    """
    optimizer = training_model.optimizer
    if hasattr(optimizer, "build") and not getattr(optimizer, "_built", False):
        training_model.set_backbone_trainable(True)
        optimizer.build(training_model.trainable_variables)


def count_epochs(epoch_num, freeze_backbone_for_N_epochs, restart_schedule_after_freezing=False):
    """The number of epochs a run trains in all.

    Args:
        epoch_num: int >= 1, --epoch_num.
        freeze_backbone_for_N_epochs: int >= 0.
        restart_schedule_after_freezing: bool; FlipReID's procedure trains the frozen epochs
            before --epoch_num more (--freeze_backbone_for_N_epochs 20 --epoch_num 200: 220).

    Returns:
        int: epoch_num, or freeze_backbone_for_N_epochs + epoch_num.
    """
    if restart_schedule_after_freezing:
        return freeze_backbone_for_N_epochs + epoch_num
    return epoch_num


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
