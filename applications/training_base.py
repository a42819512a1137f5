"""What every training model of this project shares: its loss trackers, steps and optimizer set-up.

A subclass names what it logs (`track_losses`) and computes it in
`compute_losses(images, labels, training) -> dict name -> float32 scalar` with "loss" the total;
the base class trains on that total (loss scaling included under mixed_float16), evaluates, and
reports each logged quantity averaged over the epoch under its name.
"""

from applications.core.backend import keras, tf


class LossTrackingModel(keras.Model):
    """A keras.Model trained on the "loss" of `compute_losses`, logging every quantity it returns.

    A subclass defines `compute_losses(images, labels, training)`: images (B, H, W, 3) uint8 or
    float in [0, 255], labels integer (B,), training the BatchNormalization mode; it returns a
    dict name -> float32 scalar with a value for every tracked name. Used by
    applications.training_model.FlipReIDTrainingModel (one model) and
    applications.mutual_learning.MutualLearningModel (several trained jointly).
    """

    def track_losses(self, logged_names):
        """Creates one Mean tracker per logged name (call once, in the subclass's __init__).

        Args:
            logged_names: sequence of str, the keys of `compute_losses` that `fit` reports.
        """
        self.loss_trackers = [keras.metrics.Mean(name=name) for name in logged_names]

    # Keras resets these at the start of every epoch and reports them under their names.
    @property
    def metrics(self):
        return list(self.loss_trackers)

    def build_optimizer_slots(self):
        """Gives the optimizer slots for every variable that can ever be trained.

        Frozen backbone included, so unfreezing later needs no recompile and keeps the
        optimizer state. Call after keras.Model.compile.
        """
        inner_optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        if isinstance(inner_optimizer, keras.optimizers.Optimizer):
            inner_optimizer.build([variable for variable in self.weights if variable.trainable])

    def _update_trackers(self, values):
        for tracker in self.loss_trackers:
            tracker.update_state(values[tracker.name])
        return {tracker.name: tracker.result() for tracker in self.loss_trackers}

    def train_step(self, data):
        images, labels = data[0], data[1]
        with tf.GradientTape() as tape:
            values = self.compute_losses(images, labels, training=True)
            loss = values["loss"]
            if isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer):
                loss = self.optimizer.get_scaled_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(loss, variables)
        if isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer):
            gradients = self.optimizer.get_unscaled_gradients(gradients)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._update_trackers(values)

    def test_step(self, data):
        images, labels = data[0], data[1]
        return self._update_trackers(self.compute_losses(images, labels, training=False))
