"""Stopping at once when training diverges (a NaN or infinite loss or weight)."""

import math

import numpy as np

from applications.core.backend import keras


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN or infinite; the message says where and why."""


def format_divergence_message(
    *,
    what,
    epoch,
    step,
    steps_per_epoch,
    learning_rate,
    mixed_precision_policy,
    recovery_note="",
):
    """The one-paragraph explanation a user reads when training diverges.

    Args:
        what: str, what became non-finite, e.g. "the loss was nan (triplet_loss=nan, ...)".
        epoch: int, 1-based epoch.
        step: int or None, 1-based step within the epoch (None: found at the epoch's end).
        steps_per_epoch: int or None.
        learning_rate: float or None, the optimizer's learning rate at that epoch.
        mixed_precision_policy: str, the Keras global policy name.
        recovery_note: str, what was kept (checkpoint, history) and how to resume.

    Returns:
        str.
    """
    if step is None:
        where = f"during epoch {epoch} (found at its end)"
    else:
        global_step = (epoch - 1) * steps_per_epoch + step if steps_per_epoch else None
        where = f"at step {step}" + (f" of {steps_per_epoch}" if steps_per_epoch else "")
        where += f" of epoch {epoch}" + (f" (global step {global_step})" if global_step else "")
    causes = []
    if learning_rate is not None:
        causes.append(
            f"a learning rate too high for this model (it was {learning_rate:.3g}; lower "
            "--learning_rate_base, or --learning_rate_start and --learning_rate_end)"
        )
    if mixed_precision_policy == "mixed_float16":
        causes.append(
            "float16 overflow under --mixed_precision_policy mixed_float16 (try mixed_bfloat16 "
            "or float32)"
        )
    elif mixed_precision_policy == "mixed_bfloat16":
        causes.append(
            "bfloat16's short mantissa under --mixed_precision_policy mixed_bfloat16 (try float32)"
        )
    message = f"Training diverged {where}: {what}. Training stopped there."
    if causes:
        message += " Likely cause: " + "; or ".join(causes) + "."
    if recovery_note:
        message += " " + recovery_note
    return message


def _non_finite_items(logs):
    return {
        key: value
        for key, value in (logs or {}).items()
        if isinstance(value, int | float | np.floating) and not math.isfinite(float(value))
    }


class NaNGuard(keras.callbacks.Callback):
    """Raises TrainingDivergedError at the first non-finite loss, or non-finite weights.

    Keras' TerminateOnNaN only ends the epoch, after which the epoch-end callbacks run on the
    broken weights (an evaluation fails on NaN features, a checkpoint saves NaN weights). This
    raises from the step instead, so no epoch-end callback runs: the last checkpoint and the
    history of the completed epochs stay as they were. Put it first in the callback list, so
    that its epoch-end weight check runs before evaluation and checkpointing; the last step's
    update can break the weights while its own loss (computed before it) is finite.

    The loss in the step logs is the epoch's running mean, which becomes non-finite at the
    first non-finite step and stays so; the step named is therefore the first bad one.
    """

    def __init__(self, *, mixed_precision_policy="float32", recovery_note_fn=None):
        """Initialises the guard.

        Args:
            mixed_precision_policy: str, the policy in use, for the likely-cause hint.
            recovery_note_fn: callable () -> str or None, says what was kept and how to resume.
        """
        super().__init__()
        self.mixed_precision_policy = mixed_precision_policy
        self.recovery_note_fn = recovery_note_fn
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _learning_rate(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None or not hasattr(optimizer, "learning_rate"):
            return None
        return float(keras.backend.get_value(optimizer.learning_rate))

    def _raise(self, what, step):
        raise TrainingDivergedError(
            format_divergence_message(
                what=what,
                epoch=self._epoch + 1,
                step=step,
                steps_per_epoch=(self.params or {}).get("steps"),
                learning_rate=self._learning_rate(),
                mixed_precision_policy=self.mixed_precision_policy,
                recovery_note=self.recovery_note_fn() if self.recovery_note_fn else "",
            )
        )

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        parts = ", ".join(
            f"{key}={float(value):.4g}"
            for key, value in sorted((logs or {}).items())
            if key != "loss" and isinstance(value, int | float | np.floating)
        )
        self._raise(f"the loss was {float(loss)}" + (f" ({parts})" if parts else ""), batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        bad_names = [
            weight.name
            for weight in self.model.weights
            if weight.dtype.is_floating and not np.isfinite(weight.numpy()).all()
        ]
        if bad_names:
            shown = ", ".join(bad_names[:3]) + (" ..." if len(bad_names) > 3 else "")
            self._raise(f"{len(bad_names)} weight tensors became NaN or infinite ({shown})", None)
