"""History figures: loss terms together, test metrics together, the rest apart."""

import os

import cv2
import numpy as np
import pandas as pd

from callbacks.history import HistoryLogger, group_history_columns, plot_history


def _history(num_epochs, evaluated_epochs):
    epochs = np.arange(1, num_epochs + 1)
    history = pd.DataFrame(
        {
            "epoch": epochs,
            "learning_rate": np.full(num_epochs, 2e-4),
            "loss": 3.0 / epochs,
            "triplet_loss": 1.0 / epochs,
            "cross_entropy_loss": 2.0 / epochs,
            "flipping_loss": 0.01 / epochs,
            "regularization_loss": np.full(num_epochs, 0.4),
            "accuracy": 1 - 1.0 / epochs,
            "gem_power_global": 1 + epochs / 10,
        }
    )
    test_mAP = np.full(num_epochs, np.nan)
    test_mAP[np.asarray(evaluated_epochs) - 1] = 0.5
    history["test_mAP"] = test_mAP
    history["test_re_ranking_mAP"] = test_mAP + 0.1
    return history


def test_columns_are_grouped_by_kind():
    losses, test_metrics, rest = group_history_columns(_history(3, [3]).columns)
    assert losses == [
        "loss",
        "triplet_loss",
        "cross_entropy_loss",
        "flipping_loss",
        "regularization_loss",
    ]
    assert test_metrics == ["test_mAP", "test_re_ranking_mAP"]
    assert rest == ["learning_rate", "accuracy", "gem_power_global"]


def test_three_figures_replace_one_png_per_column(tmp_path):
    # Evaluated on 2 of 6 epochs, as with --evaluate_testing_every_N_epochs.
    file_paths = plot_history(_history(6, [3, 6]), str(tmp_path))

    assert sorted(os.listdir(tmp_path)) == ["losses.png", "test_metrics.png", "training_state.png"]
    assert len(file_paths) == 3
    for file_path in file_paths:
        assert cv2.imread(file_path).shape[0] > 200


def test_figures_without_data_are_not_written(tmp_path):
    history = _history(2, [1]).drop(columns=["test_mAP", "test_re_ranking_mAP"])
    history["test_rank1"] = np.nan
    plot_history(history, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["losses.png", "training_state.png"]


def test_history_logger_writes_csv_and_figures_each_epoch(tmp_path):
    logger = HistoryLogger(str(tmp_path))
    logger.on_epoch_end(0, {"loss": 2.0, "triplet_loss": 1.0})
    logger.on_epoch_end(1, {"loss": 1.0, "triplet_loss": 0.5, "test_mAP": 0.25})

    history = pd.read_csv(tmp_path / "history.csv")
    assert history["loss"].tolist() == [2.0, 1.0]
    assert history["test_mAP"].isna().tolist() == [True, False]
    assert sorted(os.listdir(tmp_path / "plots")) == ["losses.png", "test_metrics.png"]
