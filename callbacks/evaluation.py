"""Periodic evaluation during training."""

from absl import logging

from applications.core.backend import keras


class EvaluationCallback(keras.callbacks.Callback):
    """Calls an evaluation function every N epochs and at the last epoch.

    The callback knows nothing about how evaluation works: `evaluate_fn` returns a flat dict of
    floats, which is written into the epoch's logs under `prefix + key`, so the progress bar,
    the history CSV, TensorBoard and checkpointing all see the same stable names.
    """

    def __init__(self, evaluate_fn, *, every_N_epochs, epoch_num, prefix="test_"):
        """Initialises the callback.

        Args:
            evaluate_fn: callable () -> dict str -> float.
            every_N_epochs: int >= 1, evaluate after epochs N, 2N, ... (1-based).
            epoch_num: int, the last epoch (1-based) of the whole run; always evaluated.
            prefix: str, put before every key in the logs.
        """
        super().__init__()
        if every_N_epochs < 1:
            raise ValueError(f"every_N_epochs must be at least 1, got {every_N_epochs}.")
        self.evaluate_fn = evaluate_fn
        self.every_N_epochs = every_N_epochs
        self.epoch_num = epoch_num
        self.prefix = prefix
        self.last_metrics = None

    def should_evaluate(self, epoch):
        """Whether to evaluate after the 0-based `epoch`."""
        return (epoch + 1) % self.every_N_epochs == 0 or epoch + 1 == self.epoch_num

    def on_epoch_end(self, epoch, logs=None):
        if not self.should_evaluate(epoch):
            return
        metrics = self.evaluate_fn()
        self.last_metrics = {self.prefix + key: value for key, value in metrics.items()}
        logging.debug("Epoch %d evaluation: %s", epoch + 1, self.last_metrics)
        if logs is not None:
            logs.update(self.last_metrics)
