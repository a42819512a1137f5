"""Keeping the weights of the best epoch by a logged metric."""

import math

from absl import logging

from applications.backend import keras


class BestWeightsCheckpoint(keras.callbacks.Callback):
    """Calls `save_fn` whenever the monitored log value reaches a new maximum.

    Epochs that did not log the monitored key (no evaluation ran) are skipped, unlike Keras'
    ModelCheckpoint, which warns at every such epoch.
    """

    def __init__(self, save_fn, *, monitor):
        """Initialises the callback.

        Args:
            save_fn: callable (epoch: int, value: float) -> None, writes the files.
            monitor: str, the logs key to maximise, e.g. "test_mAP".
        """
        super().__init__()
        self.save_fn = save_fn
        self.monitor = monitor
        self.best_value = -math.inf
        self.best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not value > self.best_value:
            return
        logging.debug(
            "%s improved from %.5f to %.5f at epoch %d; saving weights.",
            self.monitor,
            self.best_value,
            value,
            epoch + 1,
        )
        self.best_value = float(value)
        self.best_epoch = epoch + 1
        self.save_fn(epoch + 1, float(value))
