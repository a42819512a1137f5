"""Logging of the trainable GeM pooling powers."""

from applications.core.backend import keras


class GeMPowerLogger(keras.callbacks.Callback):
    """Writes every GeM power p into the logs as `gem_power_<name>` at each epoch end."""

    def __init__(self, get_power_values_fn):
        """Initialises the callback.

        Args:
            get_power_values_fn: callable () -> dict str -> float, e.g.
                training_model.gem_power_values.
        """
        super().__init__()
        self.get_power_values_fn = get_power_values_fn

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for name, value in self.get_power_values_fn().items():
            logs[f"gem_power_{name}"] = float(value)
