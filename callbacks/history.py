"""Per-epoch history as CSV and PNG plots."""

import os

import matplotlib

matplotlib.use("Agg")  # files only; training machines usually have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from applications.backend import keras  # noqa: E402


def plot_history(history, output_folder_path):
    """Writes one PNG line plot per numeric column of `history`.

    Args:
        history: pandas DataFrame with an `epoch` column (1-based) and one column per logged key;
            missing values (epochs without evaluation) are allowed.
        output_folder_path: str, folder for the PNG files, created if needed.

    Returns:
        list of str, the written file paths.
    """
    os.makedirs(output_folder_path, exist_ok=True)
    file_paths = []
    for key in history.columns:
        if key == "epoch":
            continue
        series = pd.to_numeric(history[key], errors="coerce")
        mask = series.notna()
        if not mask.any():
            continue
        figure, axes = plt.subplots(figsize=(6, 4))
        axes.plot(history["epoch"][mask], series[mask], marker="o")
        axes.set_xlabel("epoch")
        axes.set_ylabel(key)
        axes.set_title(key)
        axes.grid(True, alpha=0.3)
        file_path = os.path.join(output_folder_path, f"{key}.png")
        figure.tight_layout()
        figure.savefig(file_path, dpi=80)
        plt.close(figure)
        file_paths.append(file_path)
    return file_paths


class HistoryLogger(keras.callbacks.Callback):
    """Appends every epoch's logs to a CSV file and redraws the plots.

    The rows persist across several `fit` calls (the frozen-backbone stage and the full stage
    share one history), and keys that appear only on some epochs (evaluation metrics) get empty
    cells elsewhere.
    """

    def __init__(
        self, output_folder_path, *, csv_file_name="history.csv", plot_folder_name="plots"
    ):
        super().__init__()
        self.csv_file_path = os.path.join(output_folder_path, csv_file_name)
        self.plot_folder_path = os.path.join(output_folder_path, plot_folder_name)
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1}
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and hasattr(optimizer, "learning_rate"):
            row["learning_rate"] = float(keras.backend.get_value(optimizer.learning_rate))
        row.update({key: float(value) for key, value in (logs or {}).items()})
        # LearningRateScheduler's "lr" repeats the optimizer's rate read above.
        row.pop("lr", None)
        self.rows.append(row)
        history = pd.DataFrame(self.rows)
        history.to_csv(self.csv_file_path, index=False)
        plot_history(history, self.plot_folder_path)
