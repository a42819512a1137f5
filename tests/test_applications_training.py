"""The staged fit loop on a tiny dense model: freezing, one epoch count, shared callbacks."""

import os

import numpy as np
import pandas as pd
import pytest

from applications.core.backend import keras, tf
from applications.learning_rate import build_learning_rate_function
from applications.training import count_epochs, fit_in_stages
from callbacks import EvaluationCallback, HistoryLogger


class TinyModel(keras.Model):
    """A 'backbone' dense layer and a 'head' dense layer, with the staging hook of FlipReID."""

    def __init__(self):
        super().__init__()
        self.backbone = keras.layers.Dense(4, activation="relu")
        self.head = keras.layers.Dense(1)

    def call(self, inputs, training=False):
        return self.head(self.backbone(inputs))

    def set_backbone_trainable(self, trainable):
        # tf_keras' fit restores the trainable state seen at compile time: recompile, keeping
        # the optimizer object (and so its state).
        self.backbone.trainable = trainable
        self.compile(optimizer=self.optimizer, loss="mse")


def _dataset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    y = x.sum(axis=1, keepdims=True)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()


def _compiled_tiny_model():
    keras.utils.set_random_seed(0)
    model = TinyModel()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model(np.zeros((1, 3), np.float32))
    return model


def test_fit_in_stages_freezes_then_trains_with_one_epoch_count(tmp_path):
    model = _compiled_tiny_model()
    backbone_before = [w.numpy().copy() for w in model.backbone.weights]
    head_before = [w.numpy().copy() for w in model.head.weights]
    scheduled_epochs = []
    frozen_snapshots = {}

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            frozen_snapshots[epoch] = [w.numpy().copy() for w in model.backbone.weights]

    evaluate_calls = []
    history_logger = HistoryLogger(str(tmp_path))
    history = fit_in_stages(
        model,
        _dataset(),
        steps_per_epoch=4,
        epoch_num=5,
        freeze_backbone_for_N_epochs=2,
        callbacks=[
            keras.callbacks.LearningRateScheduler(
                lambda epoch: scheduled_epochs.append(epoch) or 0.01
            ),
            EvaluationCallback(
                lambda: evaluate_calls.append(1) or {"mAP": 0.5}, every_N_epochs=2, epoch_num=5
            ),
            history_logger,
            Snapshot(),
        ],
        verbose=0,
    )
    # One continuous epoch count: the schedule sees 0..4 once each, never a restart.
    assert scheduled_epochs == [0, 1, 2, 3, 4]
    assert len(history["loss"]) == 5
    # Frozen for the first two epochs, trained afterwards; the head trains throughout.
    for frozen_epoch in (0, 1):
        for before, after in zip(backbone_before, frozen_snapshots[frozen_epoch]):
            np.testing.assert_array_equal(before, after)
    assert any(
        not np.array_equal(before, after)
        for before, after in zip(backbone_before, frozen_snapshots[4])
    )
    assert any(
        not np.array_equal(before, w.numpy()) for before, w in zip(head_before, model.head.weights)
    )
    # The history spans both stages; evaluation columns are empty where no evaluation ran.
    csv = pd.read_csv(history_logger.csv_file_path)
    assert csv["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert csv["test_mAP"].isna().tolist() == [True, False, True, False, False]
    assert np.allclose(csv["learning_rate"], 0.01)
    assert len(evaluate_calls) == 3
    assert (tmp_path / "plots" / "losses.png").stat().st_size > 0
    assert (tmp_path / "plots" / "test_metrics.png").stat().st_size > 0


@pytest.mark.parametrize("freeze", [0, 7])
def test_fit_in_stages_single_stage_cases(freeze):
    model = _compiled_tiny_model()
    fit_calls = []
    original_fit = model.fit

    def recording_fit(*args, **kwargs):
        fit_calls.append((model.backbone.trainable, kwargs["initial_epoch"], kwargs["epochs"]))
        return original_fit(*args, **kwargs)

    model.fit = recording_fit
    history = fit_in_stages(
        model,
        _dataset(),
        steps_per_epoch=2,
        epoch_num=3,
        freeze_backbone_for_N_epochs=freeze,
        verbose=0,
    )
    assert fit_calls == [(freeze == 0, 0, 3)]
    assert len(history["loss"]) == 3


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(epoch_num=0), "^epoch_num must be at least 1"),
        (dict(steps_per_epoch=0), "^steps_per_epoch must be at least 1"),
        (dict(freeze_backbone_for_N_epochs=-1), "^freeze_backbone_for_N_epochs must be 0 or more"),
    ],
)
def test_fit_in_stages_rejects_bad_counts(kwargs, argument):
    arguments = dict(steps_per_epoch=1, epoch_num=1, freeze_backbone_for_N_epochs=0)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=argument):
        fit_in_stages(_compiled_tiny_model(), _dataset(), **arguments)


def test_flipreid_procedure_trains_N_frozen_epochs_then_epoch_num_more_on_a_restarted_schedule():
    model = _compiled_tiny_model()
    fit_calls, scheduled = [], []
    original_fit = model.fit

    def recording_fit(*args, **kwargs):
        fit_calls.append((model.backbone.trainable, kwargs["initial_epoch"], kwargs["epochs"]))
        return original_fit(*args, **kwargs)

    model.fit = recording_fit
    schedule = build_learning_rate_function(
        "warmup",
        learning_rate_start=0.001,
        learning_rate_end=0.004,
        learning_rate_warmup_epochs=4,
        restart_epoch=2,
    )
    history = fit_in_stages(
        model,
        _dataset(),
        steps_per_epoch=2,
        epoch_num=3,
        freeze_backbone_for_N_epochs=2,
        restart_schedule_after_freezing=True,
        callbacks=[
            keras.callbacks.LearningRateScheduler(
                lambda epoch: scheduled.append(schedule(epoch)) or schedule(epoch)
            )
        ],
        verbose=0,
    )
    # --freeze_backbone_for_N_epochs 2 --epoch_num 3: 2 + 3 epochs, as FlipReID's two fits.
    assert count_epochs(3, 2, restart_schedule_after_freezing=True) == 5
    assert count_epochs(3, 2) == 3
    assert fit_calls == [(False, 0, 2), (True, 2, 5)]
    assert len(history["loss"]) == 5
    # The warm-up ramp (0.001 + 0.001 per epoch) starts again after unfreezing.
    assert scheduled == pytest.approx([0.001, 0.002, 0.001, 0.002, 0.003])
    assert history["lr"] == pytest.approx(scheduled)  # what the optimizer used


@pytest.mark.slow  # a whole (tiny) run: 36-44 s on 2 busy cores
def test_a_run_with_flipreids_procedure_trains_the_frozen_epochs_first_on_a_restarted_schedule(
    tmp_path,
):
    """solution.py's path: the config's restart and sampler reach the fit loop and the data."""
    from applications.experiment import run_experiment
    from tests.config_fixtures import tiny_config

    # No test set (testing_size 0), so the fixture's testing_batch_size reads nothing here.
    config = tiny_config(
        root_folder_path=str(tmp_path / "data"),
        output_folder_path=str(tmp_path / "outputs"),
        steps_per_epoch=1,
        epoch_num=1,
        freeze_backbone_for_N_epochs=1,
        restart_schedule_after_freezing=True,
        sampling_mode="flipreid",
        learning_rate_mode="warmup",
        learning_rate_start=1e-4,
        learning_rate_end=3e-4,
        learning_rate_warmup_epochs=3,
        testing_size=0,
        mixed_precision_policy="float32",
    )
    outcome = run_experiment(config)
    history = pd.read_csv(os.path.join(outcome.output_folder_path, "history.csv"))
    # 1 frozen + 1 epoch (one in all without the restart); the warm-up (1e-4, 2e-4, 3e-4)
    # starts again after unfreezing (one schedule would give 2e-4 at epoch 2).
    assert history["epoch"].tolist() == [1, 2]
    assert history["learning_rate"].tolist() == pytest.approx([1e-4, 1e-4])
