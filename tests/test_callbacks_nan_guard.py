"""The NaN guard stops at the first non-finite step, before any epoch-end callback runs."""

import math

import numpy as np
import pytest

from applications.core.backend import keras, tf
from callbacks.nan_guard import NaNGuard, TrainingDivergedError, format_divergence_message


def _model(learning_rate):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return model


def _dataset():
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, x.sum(axis=1, keepdims=True) * 10)).batch(8)


class _EpochEnds(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch + 1)


def _first_non_finite_step(learning_rate, steps_per_epoch):
    """Reference: a plain loop over train_on_batch, 1-based (epoch, step) of the first bad loss."""
    model = _model(learning_rate)
    batches = list(_dataset())
    for epoch in range(1, 20):
        for step, (x, y) in enumerate(batches[:steps_per_epoch], start=1):
            if not math.isfinite(model.train_on_batch(x, y)):
                return epoch, step
    raise AssertionError("never diverged")


def test_huge_learning_rate_stops_at_the_first_non_finite_step_with_a_clear_message():
    learning_rate, steps_per_epoch = 3.0, 8
    expected_epoch, expected_step = _first_non_finite_step(learning_rate, steps_per_epoch)
    assert (expected_epoch, expected_step) != (1, 1)  # the check below is not trivial
    model = _model(learning_rate)
    epoch_ends = _EpochEnds()
    guard = NaNGuard(recovery_note_fn=lambda: "The last good checkpoint is kept.")
    with pytest.raises(TrainingDivergedError) as raised:
        model.fit(
            _dataset().repeat(),
            steps_per_epoch=steps_per_epoch,
            epochs=20,
            callbacks=[guard, epoch_ends],
            verbose=0,
        )
    message = str(raised.value)
    global_step = (expected_epoch - 1) * steps_per_epoch + expected_step
    assert (
        f"at step {expected_step} of {steps_per_epoch} of epoch {expected_epoch} "
        f"(global step {global_step})" in message
    )
    assert "learning rate too high" in message and "it was 3" in message
    assert message.endswith("The last good checkpoint is kept.")
    # No epoch-end callback saw the diverged epoch (no evaluation or checkpoint of NaN weights).
    assert epoch_ends.epochs == list(range(1, expected_epoch))


def test_non_finite_weights_after_the_last_step_are_caught_at_the_epoch_end():
    model = _model(0.01)
    guard = NaNGuard(mixed_precision_policy="mixed_float16")
    guard.set_model(model)
    guard.set_params({"steps": 5})
    guard.on_epoch_begin(2)
    guard.on_epoch_end(2, {"loss": 1.0})  # finite weights: nothing happens
    kernel = model.layers[1].kernel
    kernel.assign(tf.fill(kernel.shape, np.inf))
    with pytest.raises(TrainingDivergedError) as raised:
        guard.on_epoch_end(2, {"loss": 1.0})
    message = str(raised.value)
    assert "during epoch 3" in message and "1 weight tensors" in message
    assert kernel.name in message
    assert "mixed_bfloat16 or float32" in message


def test_message_without_mixed_precision_names_only_the_learning_rate():
    message = format_divergence_message(
        what="the loss was nan",
        epoch=1,
        step=3,
        steps_per_epoch=None,
        learning_rate=1e6,
        mixed_precision_policy="float32",
    )
    assert message.startswith("Training diverged at step 3 of epoch 1: the loss was nan.")
    assert "1e+06" in message and "float16" not in message
