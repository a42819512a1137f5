"""Per-epoch history as CSV and three PNG figures: losses, test metrics, training state."""

import os

import matplotlib

matplotlib.use("Agg")  # files only; training machines usually have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from applications.core.backend import keras  # noqa: E402

# Figure file name -> which history columns it shows.
LOSSES_FIGURE_FILE_NAME = "losses.png"
TEST_METRICS_FIGURE_FILE_NAME = "test_metrics.png"
TRAINING_STATE_FIGURE_FILE_NAME = "training_state.png"


def group_history_columns(columns):
    """Splits history column names into (loss terms, test metrics, the rest); `epoch` is left out.

    Loss terms are `loss` and every `*_loss`; test metrics every `test_*`; order is kept.
    """
    keys = [key for key in columns if key != "epoch"]
    loss_keys = [key for key in keys if key == "loss" or key.endswith("_loss")]
    test_keys = [key for key in keys if key.startswith("test_")]
    other_keys = [key for key in keys if key not in loss_keys and key not in test_keys]
    return loss_keys, test_keys, other_keys


def _numeric_columns(history, keys):
    """(key, epochs, values) of each key that has at least one number, NaN rows dropped."""
    columns = []
    for key in keys:
        series = pd.to_numeric(history[key], errors="coerce")
        mask = series.notna().to_numpy()
        if mask.any():
            columns.append((key, history["epoch"].to_numpy()[mask], series.to_numpy()[mask]))
    return columns


def _finish_axes(axes, last_epoch):
    axes.set_xlim(0.5, max(last_epoch, 1) + 0.5)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(True, alpha=0.3)


def _save(figure, file_path):
    figure.tight_layout()
    figure.savefig(file_path, dpi=90)
    plt.close(figure)


def _plot_panels(columns, last_epoch, file_path, title):
    """One small panel per column (each with its own scale), sharing the epoch axis."""
    num_columns = min(3, len(columns))
    num_rows = -(-len(columns) // num_columns)
    figure, axes_grid = plt.subplots(
        num_rows,
        num_columns,
        figsize=(4.2 * num_columns, 2.8 * num_rows),
        squeeze=False,
    )
    for axes, (key, epochs, values) in zip(axes_grid.flat, columns):
        axes.plot(epochs, values, marker="o", markersize=3)
        axes.set_title(key, fontsize=10)
        axes.set_xlabel("epoch")
        _finish_axes(axes, last_epoch)
    for axes in list(axes_grid.flat)[len(columns) :]:
        axes.set_visible(False)
    figure.suptitle(title)
    _save(figure, file_path)


def _plot_test_metrics(columns, last_epoch, file_path):
    """Every test metric in percent on one axes; re-ranked ones dashed in their metric's colour."""
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    colors = {}
    for key, epochs, values in columns:
        name = key.removeprefix("test_").removeprefix("re_ranking_")
        re_ranked = key.startswith("test_re_ranking_")
        if name not in colors:
            colors[name] = f"C{len(colors) % 10}"
        label = name + (" (re-ranked)" if re_ranked else "")
        axes.plot(
            epochs,
            100 * values,
            linestyle="--" if re_ranked else "-",
            marker="o",
            color=colors[name],
            label=f"{label}: {100 * values[-1]:.1f}",
        )
    axes.set_xlabel("epoch")
    axes.set_ylabel("%")
    axes.set_ylim(0, 100)
    axes.set_title("Test metrics (last value in the legend)")
    _finish_axes(axes, last_epoch)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    _save(figure, file_path)


def plot_history(history, output_folder_path):
    """Writes three figures of the per-epoch history.

    - losses.png: one panel per loss term (`loss` and every `*_loss` column), each on its own
      scale, since the terms differ by orders of magnitude;
    - test_metrics.png: every `test_*` metric in percent on one plot over the whole epoch axis,
      with markers where an evaluation ran (evaluations are every N epochs, so lines join
      those points only); re-ranked metrics dashed;
    - training_state.png: the remaining columns (accuracy, learning rate, GeM powers, ...).

    Args:
        history: pandas DataFrame with an `epoch` column (1-based) and one column per logged key;
            missing values (epochs without evaluation) are allowed.
        output_folder_path: str, folder for the PNG files, created if needed.

    Returns:
        list of str, the written file paths (a figure without data is not written).
    """
    os.makedirs(output_folder_path, exist_ok=True)
    loss_keys, test_keys, other_keys = group_history_columns(history.columns)
    last_epoch = int(pd.to_numeric(history["epoch"]).max()) if len(history) else 1
    file_paths = []
    for columns, file_name, draw in (
        (
            _numeric_columns(history, loss_keys),
            LOSSES_FIGURE_FILE_NAME,
            lambda columns, path: _plot_panels(columns, last_epoch, path, "Training losses"),
        ),
        (
            _numeric_columns(history, test_keys),
            TEST_METRICS_FIGURE_FILE_NAME,
            lambda columns, path: _plot_test_metrics(columns, last_epoch, path),
        ),
        (
            _numeric_columns(history, other_keys),
            TRAINING_STATE_FIGURE_FILE_NAME,
            lambda columns, path: _plot_panels(columns, last_epoch, path, "Training state"),
        ),
    ):
        if columns:
            file_path = os.path.join(output_folder_path, file_name)
            draw(columns, file_path)
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
