"""Callbacks: each calls the function it is given and writes flat, stable keys into logs."""

import pytest

from callbacks import EvaluationCallback, GeMPowerLogger
from callbacks.resume_checkpoint import RunStateCheckpoint


def test_evaluation_callback_runs_every_n_epochs_and_at_the_end():
    calls = []

    def evaluate():
        calls.append(len(calls))
        return {"mAP": 0.1 * len(calls), "rank1": 0.5}

    callback = EvaluationCallback(evaluate, every_N_epochs=3, epoch_num=7)
    evaluated_epochs = []
    for epoch in range(7):
        logs = {"loss": 1.0}
        callback.on_epoch_end(epoch, logs)
        if "test_mAP" in logs:
            evaluated_epochs.append(epoch + 1)
            assert logs["test_rank1"] == 0.5
    assert evaluated_epochs == [3, 6, 7]
    assert callback.last_metrics == {"test_mAP": pytest.approx(0.3), "test_rank1": 0.5}


def test_evaluation_callback_rejects_zero_interval():
    with pytest.raises(ValueError, match="every_N_epochs must be at least 1"):
        EvaluationCallback(dict, every_N_epochs=0, epoch_num=3)


def test_run_state_checkpoint_saves_best_weights_on_improvement_and_a_state_every_epoch():
    saved, states = [], []
    callback = RunStateCheckpoint(
        lambda epoch, best_value, best_epoch: states.append((epoch, best_value, best_epoch)),
        save_best_fn=lambda epoch, value: saved.append((epoch, value)),
        monitor="test_mAP",
    )
    for epoch, logs in enumerate(
        [
            {"loss": 1.0},
            {"test_mAP": 0.2},
            {"test_mAP": 0.1},
            {},
            {"test_mAP": 0.2},
            {"test_mAP": 0.5},
        ]
    ):
        callback.on_epoch_end(epoch, logs)
    # Epochs without the key (no evaluation) and ties save no weights.
    assert saved == [(2, 0.2), (6, 0.5)]
    assert states == [
        (1, None, None),
        (2, 0.2, 2),
        (3, 0.2, 2),
        (4, 0.2, 2),
        (5, 0.2, 2),
        (6, 0.5, 6),
    ]
    # A resumed run starts from its restored best: a lower value saves nothing.
    resumed = RunStateCheckpoint(
        lambda *state: None,
        save_best_fn=lambda epoch, value: saved.append((epoch, value)),
        monitor="test_mAP",
        best_value=0.5,
        best_epoch=6,
    )
    resumed.on_epoch_end(6, {"test_mAP": 0.4})
    assert saved[-1] == (6, 0.5) and resumed.best_epoch == 6


def test_gem_power_logger_writes_flat_keys():
    callback = GeMPowerLogger(lambda: {"global": 3.25, "region_0": 2.5})
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs == {"gem_power_global": 3.25, "gem_power_region_0": 2.5}
