"""Stopping training at a step boundary when a stop signal (Ctrl-C, SIGTERM) was received."""

from applications.core.backend import keras


class StopAtStepBoundary(keras.callbacks.Callback):
    """Calls `check_fn` after every training step and at every epoch's end.

    `check_fn` raises to stop (applications.interruption.StopRequest.check). Raising from a
    step's end skips the epoch-end callbacks of the unfinished epoch, so no checkpoint, best
    weights or history row of a partial epoch is written. Put it last in the callback list, so
    that at an epoch's end it runs after the checkpoint of that epoch is written.
    """

    def __init__(self, check_fn):
        """Initialises the callback.

        Args:
            check_fn: callable () -> None, raises when the run must stop.
        """
        super().__init__()
        self.check_fn = check_fn

    def on_train_batch_end(self, batch, logs=None):
        self.check_fn()

    def on_epoch_end(self, epoch, logs=None):
        self.check_fn()
