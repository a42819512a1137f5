"""Deep mutual learning (AlignedReID's --num_models): N models trained jointly on the same batches.

Each model keeps its own losses (triplet, identity, flipping, local triplet, regularisation) and
adds the mutual losses of ``applications.aligned_losses``, in which the other models' outputs
are constants (stop-gradient), as in AlignedReID's train_ml.py:

    loss_i = own_i + probability_mutual_loss_weight * sum_heads KL(p_j || p_i) term
                   + global_distance_mutual_loss_weight * sum_branches distance term
                   + local_distance_mutual_loss_weight * local distance term

The KL term takes log p_i as the log-softmax of model i's logits; the local distance term is
computed only when the local triplet loss mines its own hard samples (see
``MutualLearningModel.uses_local_distance_mutual_loss``), both as in train_ml.py.

With one global branch and no regions (AlignedReID's model) the sums have one term. The
gradient of loss_1 + ... + loss_N with respect to model i's weights is that of loss_i alone (the
others see model i only through stop-gradients), so one tape and one optimizer over all weights
train each model on its own loss; Adam keeps per-variable state, so this equals N optimizers with
the same settings. With several GPUs and no distribution strategy, model i's forward pass is
placed on GPU i mod the count.
"""

import os

from applications.aligned_losses import distance_mutual_loss, probability_mutual_loss
from applications.core.atomic_files import atomic_save_weights
from applications.core.backend import tf
from applications.training_base import LossTrackingModel

MUTUAL_LOSS_NAMES = (
    "probability_mutual_loss",
    "global_distance_mutual_loss",
    "local_distance_mutual_loss",
)


def model_prefix(model_index):
    """Log and folder prefix of the 0-based model_index: "model_1_", "model_2_", ..."""
    return f"model_{model_index + 1}_"


def softmax_logits(probabilities):
    """The logits a Keras softmax output was computed from.

    Keras' softmax activation keeps its input on the output tensor (``_keras_logits``, what
    Keras' own cross-entropy reads to work from logits), in eager and in graph mode; the heads
    of applications.heads end in such a softmax layer (float32 also under mixed precision).

    Args:
        probabilities: float tensor (B, K), the output of a Keras softmax layer.

    Returns:
        float32 tensor (B, K).

    Raises:
        ValueError: the tensor does not come from a Keras softmax layer.
    """
    logits = getattr(probabilities, "_keras_logits", None)
    if logits is None:
        raise ValueError(
            "The probability mutual loss needs the logits of a Keras softmax output; this "
            "tensor has none (was it computed by another operation?)."
        )
    return tf.cast(logits, tf.float32)


def compute_mutual_losses(outputs, model_index, *, use_local_distance=True):
    """Model model_index's three mutual losses against all the other models.

    Args:
        outputs: list of N dicts from FlipReIDTrainingModel.compute_losses_and_outputs.
        model_index: int, the model whose losses these are.
        use_local_distance: bool, compute the local-distance term (AlignedReID's train_ml.py
            does only when the local triplet loss is on and mines its own hard samples); False
            gives 0.

    Returns:
        dict with the keys of MUTUAL_LOSS_NAMES, float32 scalars (local: 0 without a local
        branch or without use_local_distance).
    """
    mine = outputs[model_index]
    others = [output for index, output in enumerate(outputs) if index != model_index]
    probability = tf.add_n(
        [
            probability_mutual_loss(
                softmax_logits(head), [other["probabilities"][index] for other in others]
            )
            for index, head in enumerate(mine["probabilities"])
        ]
    )
    global_distance = tf.add_n(
        [
            distance_mutual_loss(distances, [other["distances"][index] for other in others])
            for index, distances in enumerate(mine["distances"])
        ]
    )
    if mine["local_distances"] is None or not use_local_distance:
        local_distance = tf.constant(0.0, tf.float32)
    else:
        local_distance = distance_mutual_loss(
            mine["local_distances"], [other["local_distances"] for other in others]
        )
    return {
        "probability_mutual_loss": probability,
        "global_distance_mutual_loss": global_distance,
        "local_distance_mutual_loss": local_distance,
    }


class MutualLearningModel(LossTrackingModel):
    """N FlipReID training models trained jointly, each with its own and the mutual losses.

    Offers what the fit loop and callbacks use of a FlipReIDTrainingModel: compile with the same
    loss settings (given to every model) plus the three mutual-loss weights,
    set_backbone_trainable, gem_power_values. Logs ``loss`` (the sum over models) and, for each
    model i (1-based), ``model_i_<name>`` for each of its logged names (``model_i_loss``
    includes its weighted mutual losses) and of MUTUAL_LOSS_NAMES.
    """

    def __init__(self, training_models, **kwargs):
        super().__init__(**kwargs)
        if len(training_models) < 2:
            raise ValueError(
                f"mutual learning needs at least 2 models (model_num), got {len(training_models)}."
            )
        self.training_models = list(training_models)
        names = ["loss"]
        for index, model in enumerate(self.training_models):
            names += [model_prefix(index) + name for name in model.logged_names]
            names += [model_prefix(index) + name for name in MUTUAL_LOSS_NAMES]
        self.track_losses(names)
        self._mutual_loss_weights = dict.fromkeys(MUTUAL_LOSS_NAMES, 0.0)
        self._loss_settings = {}
        self._compile_kwargs = {}
        self.built = True

    def compile(
        self,
        optimizer="adam",
        *,
        probability_mutual_loss_weight=0.0,
        global_distance_mutual_loss_weight=0.0,
        local_distance_mutual_loss_weight=0.0,
        **kwargs,
    ):
        """Configures the optimizer, every model's loss settings and the mutual-loss weights.

        Args:
            optimizer: a keras optimizer or its name, shared by all models' variables.
            probability_mutual_loss_weight: weight of the KL term (AlignedReID -pmlw).
            global_distance_mutual_loss_weight: weight of the global distance term (-gdmlw).
            local_distance_mutual_loss_weight: weight of the local distance term (-ldmlw).
            **kwargs: FlipReIDTrainingModel.compile's loss settings (triplet_margin, ...),
                given to every model; the rest go to keras.Model.compile.
        """
        model = self.training_models[0]
        loss_settings = {
            name: kwargs.pop(name) for name in list(kwargs) if name in model._loss_settings
        }
        super().compile(optimizer=optimizer, **kwargs)
        self._compile_kwargs = dict(kwargs)
        self._loss_settings = loss_settings
        for training_model in self.training_models:
            training_model.configure_losses(**loss_settings)
        self._mutual_loss_weights = {
            "probability_mutual_loss": float(probability_mutual_loss_weight),
            "global_distance_mutual_loss": float(global_distance_mutual_loss_weight),
            "local_distance_mutual_loss": float(local_distance_mutual_loss_weight),
        }
        self.build_optimizer_slots()

    @property
    def uses_local_distance_mutual_loss(self):
        """Whether the local-distance mutual loss is computed, as in AlignedReID's train_ml.py.

        Only when the local triplet loss is on and mines its own hard samples (its
        --local_dist_own_hard_sample): otherwise AlignedReID computes no local distance matrix
        to compare, and the term is 0.
        """
        # Every model has the same settings (compile gives them to all).
        settings = self.training_models[0]._loss_settings
        return bool(settings["local_distance_own_hard_samples"]) and (
            settings["local_triplet_loss_weight"] > 0
        )

    def set_backbone_trainable(self, trainable):
        """Freezes or unfreezes every model's backbone; keeps the optimizer state."""
        for training_model in self.training_models:
            training_model.set_backbone_trainable(trainable)
        if getattr(self, "optimizer", None) is not None:
            self.compile(
                self.optimizer,
                **{f"{name}_weight": weight for name, weight in self._mutual_loss_weights.items()},
                **self._loss_settings,
                **self._compile_kwargs,
            )

    def gem_power_values(self):
        """{"model_i_<GeM layer>": power} over all models."""
        values = {}
        for index, training_model in enumerate(self.training_models):
            for name, value in training_model.gem_power_values().items():
                values[model_prefix(index) + name] = value
        return values

    def compute_losses(self, images, labels, training):
        """Every logged quantity for one batch (see the class docstring).

        Args:
            images: (B, H, W, 3) uint8 or float in [0, 255], the same batch for every model.
            labels: integer (B,).
            training: BatchNormalization mode.

        Returns:
            dict name -> float32 scalar.
        """
        # Model i on GPU i (mod the count), as AlignedReID places them; a distribution
        # strategy places replicas itself, so its placement is left alone.
        devices = tf.config.list_logical_devices("GPU")
        place = len(devices) > 1 and not tf.distribute.has_strategy()
        per_model, outputs = [], []
        for index, training_model in enumerate(self.training_models):
            device = devices[index % len(devices)].name if place else None
            with tf.device(device):
                model_values, model_outputs = training_model.compute_losses_and_outputs(
                    images, labels, training
                )
            per_model.append(model_values)
            outputs.append(model_outputs)
        values, total = {}, tf.constant(0.0, tf.float32)
        for index, model_values in enumerate(per_model):
            mutual = compute_mutual_losses(
                outputs, index, use_local_distance=self.uses_local_distance_mutual_loss
            )
            model_loss = model_values["loss"] + tf.add_n(
                [weight * mutual[name] for name, weight in self._mutual_loss_weights.items()]
            )
            total += model_loss
            prefix = model_prefix(index)
            values.update({prefix + name: value for name, value in model_values.items()})
            values.update({prefix + name: value for name, value in mutual.items()})
            values[prefix + "loss"] = model_loss
        values["loss"] = total
        return values


def build_mutual_learning_models(model_num, build_models, **model_options):
    """Builds model_num independent models and the wrapper that trains them jointly.

    Args:
        model_num: int >= 2.
        build_models: function(**model_options) -> (training_model, inference_model), e.g.
            applications.model.build_flipreid_models; each call draws fresh initial weights.
        **model_options: passed to every build_models call.

    Returns:
        (MutualLearningModel, list of model_num inference models, in the same order).
    """
    if model_num < 2:
        raise ValueError(f"model_num must be at least 2 for mutual learning, got {model_num}.")
    pairs = [build_models(**model_options) for _ in range(model_num)]
    mutual_model = MutualLearningModel(
        [training_model for training_model, _ in pairs], name="mutual_learning_model"
    )
    return mutual_model, [inference_model for _, inference_model in pairs]


def save_each_model_weights(mutual_model, inference_models, output_folder_path, *, is_chief=True):
    """Writes model_<i>/training_model.h5 and model_<i>/inference_model.h5 for every model.

    Each file is what a single-model run writes, so --model_num 1 reloads any of them. Each is
    written atomically (applications.core.atomic_files.atomic_save_weights): a run stopped
    while saving leaves every file whole, either the previous one or the new one.

    Args:
        mutual_model: MutualLearningModel.
        inference_models: list of its inference models, in the same order.
        output_folder_path: str, the run's folder.
        is_chief: False on the other workers of a multi-worker run (they write nothing).

    Returns:
        list of str, the files written, relative to output_folder_path.

    Raises:
        applications.core.atomic_files.CheckpointWriteError: a file could not be written.
    """
    relative_paths = []
    for index, (training_model, inference_model) in enumerate(
        zip(mutual_model.training_models, inference_models, strict=True)
    ):
        folder_name = f"model_{index + 1}"
        if is_chief:
            os.makedirs(os.path.join(output_folder_path, folder_name), exist_ok=True)
        for model, file_name in (
            (training_model, "training_model.h5"),
            (inference_model, "inference_model.h5"),
        ):
            relative_path = os.path.join(folder_name, file_name)
            atomic_save_weights(
                model, os.path.join(output_folder_path, relative_path), is_chief=is_chief
            )
            relative_paths.append(relative_path)
    return relative_paths
