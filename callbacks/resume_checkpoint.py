"""Saving the best weights and a resumable checkpoint at the end of every epoch."""

import math

from absl import logging

from applications.core.backend import keras


class RunStateCheckpoint(keras.callbacks.Callback):
    """Calls `save_best_fn` when the monitored value improves, then `save_state_fn`, each epoch.

    The best record starts from the restored one on resume, and the best weights are written
    before the epoch's state, so a state never names a best epoch whose weights are not on
    disk. Place it after the callbacks that write into the epoch's logs (evaluation) and after
    the history logger, so the saved state holds the epoch's row.
    """

    def __init__(self, save_state_fn, *, save_best_fn, monitor, best_value=None, best_epoch=None):
        """Initialises the callback.

        Args:
            save_state_fn: callable (epoch: int, best_value: float | None,
                best_epoch: int | None) -> None, writes the checkpoint of the 1-based epoch just
                completed.
            save_best_fn: callable (epoch: int, value: float) -> None, writes the best weights.
            monitor: str, the logs key to maximise, e.g. "test_mAP".
            best_value: float or None, the best value of a resumed run.
            best_epoch: int or None, the 1-based epoch of best_value.
        """
        super().__init__()
        self.save_state_fn = save_state_fn
        self.save_best_fn = save_best_fn
        self.monitor = monitor
        self.best_value = -math.inf if best_value is None else float(best_value)
        self.best_epoch = best_epoch

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best_value:
            logging.debug("%s improved to %.5f at epoch %d.", self.monitor, value, epoch + 1)
            self.best_value = float(value)
            self.best_epoch = epoch + 1
            self.save_best_fn(epoch + 1, float(value))
        best_value = None if self.best_epoch is None else self.best_value
        self.save_state_fn(epoch + 1, best_value, self.best_epoch)
