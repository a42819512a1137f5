"""The FlipReID training model: flip averaging, batch-hard triplet, ID, flipping and L2 losses.

The training model runs every image and its horizontal flip through the same branch network,
averages the two embeddings of each branch for the triplet and identity losses, and adds the
mean squared error between them as the flipping loss.
"""

from applications.aligned_losses import (
    batch_local_distances,
    local_triplet_loss,
    normalize_features,
)
from applications.branches import as_output_list, has_local_branch
from applications.core.backend import tf
from applications.layers import GlobalGeMPooling2D
from applications.losses import (
    batch_hard_triplet_loss,
    cross_entropy_loss,
    flipping_loss,
    l2_regularization_loss,
    pairwise_euclidean_distances,
)
from applications.training_base import LossTrackingModel

LOGGED_NAMES = (
    "loss",
    "triplet_loss",
    "cross_entropy_loss",
    "flipping_loss",
    "regularization_loss",
    "accuracy",
)
# Logged in addition with the local branch (AlignedReID's local triplet loss).
LOCAL_LOGGED_NAMES = ("local_triplet_loss",)
# AlignedReID's loss settings of compile, with their defaults.
_ALIGNED_LOSS_DEFAULTS = dict(
    local_triplet_loss_weight=1.0,
    local_triplet_margin=None,
    local_distance_own_hard_samples=False,
    normalize_feature=False,
)
# How the flip structure's original and flipped passes meet batch normalisation in training:
# "shared" runs one doubled batch (one set of statistics over the 2B images), "separate" runs two
# passes of B images (statistics per pass, as FlipReID, which calls its inference model twice).
FLIP_BATCH_NORM_MODES = ("shared", "separate")
# Attribute name of a variable on its layer -> which regularization factor applies to it.
_REGULARIZED_ATTRIBUTES = {
    "kernel": "kernel",
    "depthwise_kernel": "kernel",
    "pointwise_kernel": "kernel",
    "bias": "bias",
    "gamma": "gamma",
    "beta": "beta",
}


def collect_regularized_variables(
    models,
    kernel_regularization_factor,
    bias_regularization_factor,
    gamma_regularization_factor,
    beta_regularization_factor,
):
    """Lists the variables under L2 regularization with their factors.

    Variables are found by the attribute that holds them on their layer (kernel,
    depthwise_kernel, pointwise_kernel, bias, gamma, beta), not by layer class, because tf2cv
    wraps tf_keras layers in its own classes.

    Args:
        models: keras layers or models to search, nested layers included.
        kernel_regularization_factor: factor of convolution and dense kernels.
        bias_regularization_factor: factor of biases.
        gamma_regularization_factor: factor of normalization scales.
        beta_regularization_factor: factor of normalization offsets.

    Returns:
        List of (variable, factor) pairs, each variable once; pairs with factor 0 are left out.
    """
    factors = {
        "kernel": kernel_regularization_factor,
        "bias": bias_regularization_factor,
        "gamma": gamma_regularization_factor,
        "beta": beta_regularization_factor,
    }
    seen, pairs = set(), []
    for model in models:
        for layer in [model, *model.submodules]:
            for attribute_name, group in _REGULARIZED_ATTRIBUTES.items():
                variable = getattr(layer, attribute_name, None)
                if not isinstance(variable, tf.Variable) or variable.ref() in seen:
                    continue
                seen.add(variable.ref())
                if factors[group]:
                    pairs.append((variable, factors[group]))
    return pairs


def _mean_accuracy(probabilities, labels):
    """The heads' mean top-1 accuracy, float32 scalar.

    Args:
        probabilities: list of float32 (B, num_identities), one per head.
        labels: int32 (B,).
    """
    accuracies = []
    for branch_probabilities in probabilities:
        predicted = tf.argmax(branch_probabilities, axis=-1, output_type=tf.int32)
        accuracies.append(tf.reduce_mean(tf.cast(tf.equal(predicted, labels), tf.float32)))
    return tf.reduce_mean(accuracies)


class FlipReIDTrainingModel(LossTrackingModel):
    """Training model: flip averaging, batch-hard triplet, cross-entropy and flipping losses.

    `fit` takes a dataset of (images uint8/float (B, H, W, 3), labels int32 (B,)) and logs
    LOGGED_NAMES each epoch: `loss` (total), `triplet_loss` and `cross_entropy_loss` (summed over
    branches), `flipping_loss` (MSE between original and flipped embeddings, summed over
    branches; 0 without the flip structure), `regularization_loss` (L2, float32) and `accuracy`
    (softmax accuracy, averaged over the branch heads). Weighted losses are summed as
    triplet_loss_weight * triplet + cross_entropy_loss_weight * cross_entropy
    + flipping_loss_weight * flipping + regularization.

    With a local branch (AlignedReID), `local_triplet_loss` is logged too and
    local_triplet_loss_weight * local_triplet is added: the batch-hard triplet loss on the
    aligned local distance, its hard samples mined from the global branch's distance unless
    local_distance_own_hard_samples. The local features of an image and its flip are averaged
    like the embeddings; the flipping loss covers the branch embeddings only.

    flip_batch_norm_mode (FLIP_BATCH_NORM_MODES) says how the flip structure's two passes meet
    batch normalisation: "shared" runs the B images and their B flips as one batch of 2B, so
    training-mode statistics (and one moving-average update per layer) come from all 2B;
    "separate" runs two passes of B, each with its own statistics and moving-average update, as
    FlipReID's two calls of its inference model do. In inference mode both give the same
    outputs.
    """

    def __init__(
        self,
        branch_network,
        classification_heads,
        backbone_model_names,
        *,
        use_horizontal_flipping_inside_model,
        kernel_regularization_factor,
        bias_regularization_factor,
        gamma_regularization_factor,
        beta_regularization_factor,
        flip_batch_norm_mode="shared",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if flip_batch_norm_mode not in FLIP_BATCH_NORM_MODES:
            raise ValueError(
                f"flip_batch_norm_mode must be one of {', '.join(FLIP_BATCH_NORM_MODES)}, got "
                f"{flip_batch_norm_mode!r}."
            )
        self.flip_batch_norm_mode = flip_batch_norm_mode
        self.branch_network = branch_network
        self.classification_heads = classification_heads
        # Names, not models: an attribute holding the models would make Keras track (and save)
        # their weights a second time.
        self._backbone_model_names = tuple(backbone_model_names)
        self.use_horizontal_flipping_inside_model = use_horizontal_flipping_inside_model
        self._regularization_factors = dict(
            kernel_regularization_factor=kernel_regularization_factor,
            bias_regularization_factor=bias_regularization_factor,
            gamma_regularization_factor=gamma_regularization_factor,
            beta_regularization_factor=beta_regularization_factor,
        )
        self.has_local_branch = has_local_branch(branch_network)
        self.logged_names = LOGGED_NAMES + (LOCAL_LOGGED_NAMES if self.has_local_branch else ())
        self.track_losses(self.logged_names)
        self._loss_settings = dict(
            triplet_margin=None,
            label_smoothing=0.0,
            triplet_loss_weight=1.0,
            cross_entropy_loss_weight=1.0,
            flipping_loss_weight=1.0,
            **_ALIGNED_LOSS_DEFAULTS,
        )
        # Both sub-models are functional and already built; marking this wrapper built lets
        # save_weights run before the first step.
        self.built = True

    def compile(
        self,
        optimizer="adam",
        *,
        triplet_margin=None,
        label_smoothing=0.0,
        triplet_loss_weight=1.0,
        cross_entropy_loss_weight=1.0,
        flipping_loss_weight=1.0,
        **kwargs,
    ):
        """Configures the optimizer and the loss settings.

        AlignedReID's settings are keyword arguments too (defaults in brackets):
        local_triplet_loss_weight [1.0], local_triplet_margin [None: soft margin],
        local_distance_own_hard_samples [False: mine from the global distance] and
        normalize_feature [False: L2-normalise the embeddings and each stripe before every
        distance]; the first three matter only with a local branch.

        Args:
            optimizer: a keras optimizer or its name.
            triplet_margin: None for the soft margin (softplus), else the hinge margin.
            label_smoothing: label smoothing of the cross-entropy, in [0, 1].
            triplet_loss_weight: weight of the triplet loss in the total.
            cross_entropy_loss_weight: weight of the cross-entropy in the total.
            flipping_loss_weight: weight of the flipping loss in the total.
            **kwargs: passed to keras.Model.compile (e.g. run_eagerly, jit_compile).
        """
        aligned_settings = {
            name: kwargs.pop(name, default) for name, default in _ALIGNED_LOSS_DEFAULTS.items()
        }
        super().compile(optimizer=optimizer, **kwargs)
        self._compile_kwargs = dict(kwargs)
        self.configure_losses(
            triplet_margin=triplet_margin,
            label_smoothing=label_smoothing,
            triplet_loss_weight=triplet_loss_weight,
            cross_entropy_loss_weight=cross_entropy_loss_weight,
            flipping_loss_weight=flipping_loss_weight,
            **aligned_settings,
        )
        self.build_optimizer_slots()

    def configure_losses(self, **settings):
        """Sets loss settings (the keyword arguments of `compile`) without an optimizer.

        Mutual learning compiles one wrapper and configures each model's losses with this.
        """
        unknown = set(settings) - set(self._loss_settings)
        if unknown:
            raise ValueError(f"Unknown loss settings {sorted(unknown)}.")
        self._loss_settings = {**self._loss_settings, **settings}

    def _backbone_models(self):
        return [self.branch_network.get_layer(name) for name in self._backbone_model_names]

    def set_backbone_trainable(self, trainable):
        """Freezes (False) or unfreezes (True) the trunk and every last-stage copy.

        Pooling, regional reductions and classification heads stay trainable. Frozen
        BatchNormalization layers run in inference mode. The caller need not recompile: a
        compiled model recompiles itself with the same optimizer instance (built at compile for
        all variables, frozen ones included), so the optimizer state survives and the next
        `fit` uses the new setting.
        """
        for model in self._backbone_models():
            model.trainable = trainable
        if getattr(self, "optimizer", None) is not None:
            # Keras' fit restores the trainable flags recorded at compile time, so record the new
            # ones by compiling again with the same optimizer instance (its slots and iteration
            # count survive); this also drops the traced step functions.
            self.compile(self.optimizer, **self._loss_settings, **self._compile_kwargs)

    def gem_power_values(self):
        """Returns {GeM layer name: current power p} (empty without GeM pooling)."""
        return {
            layer.name: float(layer.power.numpy())
            for layer in self.branch_network.layers
            if isinstance(layer, GlobalGeMPooling2D)
        }

    def compute_branch_embeddings(self, images, training=False):
        """Runs the branch network, on each image and its flip when the flip structure is on.

        Args:
            images: (B, H, W, 3) uint8 or float in [0, 255].
            training: BatchNormalization mode (with the flip structure, see
                flip_batch_norm_mode).

        Returns:
            (embeddings, flipping_losses): embeddings is a list with one float32 (B, D_b) tensor
            per branch (the average of the original and flipped embeddings with the flip
            structure); flipping_losses is a list of float32 scalars, one per branch (empty
            without the flip structure).
        """
        embeddings, flipping_losses, _ = self.compute_branch_outputs(images, training=training)
        return embeddings, flipping_losses

    def compute_branch_outputs(self, images, training=False):
        """Like compute_branch_embeddings, plus the local branch's features.

        Returns:
            (embeddings, flipping_losses, local_features): the first two as in
            compute_branch_embeddings; local_features is float32 (B, H_map, C_local), averaged
            over each image and its flip with the flip structure (a horizontal flip does not
            move rows), or None without a local branch.
        """
        images = tf.cast(images, tf.float32)
        if not self.use_horizontal_flipping_inside_model:
            outputs = as_output_list(self.branch_network(images, training=training))
            outputs = [tf.cast(output, tf.float32) for output in outputs]
            if self.has_local_branch:
                return outputs[:-1], [], outputs[-1]
            return outputs, [], None
        flipped_images = tf.image.flip_left_right(images)
        if self.flip_batch_norm_mode == "separate":
            pairs = zip(
                as_output_list(self.branch_network(images, training=training)),
                as_output_list(self.branch_network(flipped_images, training=training)),
                strict=True,
            )
        else:
            batch_size = tf.shape(images)[0]
            # One pass over the 2B images: one set of weights and batch statistics.
            both = tf.concat([images, flipped_images], axis=0)
            pairs = [
                (output[:batch_size], output[batch_size:])
                for output in as_output_list(self.branch_network(both, training=training))
            ]
        pairs = [
            (tf.cast(original, tf.float32), tf.cast(flipped, tf.float32))
            for original, flipped in pairs
        ]
        local_features = None
        if self.has_local_branch:
            local_original, local_flipped = pairs.pop()
            local_features = (local_original + local_flipped) / 2.0
        embeddings, flipping_losses = [], []
        for original, flipped in pairs:
            embeddings.append((original + flipped) / 2.0)
            flipping_losses.append(flipping_loss(original, flipped))
        return embeddings, flipping_losses, local_features

    def call(self, images, training=False):
        """Returns {"branch_embeddings": [(B, D_b)], "probabilities": [(B, C)]}, float32."""
        embeddings, _ = self.compute_branch_embeddings(images, training=training)
        probabilities = as_output_list(self.classification_heads(embeddings, training=training))
        return {"branch_embeddings": embeddings, "probabilities": probabilities}

    def regularization_loss(self):
        """Returns the float32 L2 penalty over kernels, biases, gammas and betas."""
        return l2_regularization_loss(
            collect_regularized_variables(
                [self.branch_network, self.classification_heads], **self._regularization_factors
            )
        )

    def compute_losses(self, images, labels, training):
        """Computes every logged quantity for one batch.

        Args:
            images: (B, H, W, 3) uint8 or float in [0, 255].
            labels: integer (B,) identity indices in [0, num_identities).
            training: BatchNormalization mode.

        Returns:
            dict name -> float32 scalar with the keys of `logged_names`.
        """
        return self.compute_losses_and_outputs(images, labels, training)[0]

    def compute_losses_and_outputs(self, images, labels, training):
        """compute_losses, plus what mutual learning compares between models.

        Returns:
            (values, outputs): values as in compute_losses; outputs is a dict with
            "probabilities" (list of float32 (B, num_identities), one per head),
            "distances" (list of float32 (B, B) Euclidean distances of each branch's embedding,
            normalised first with normalize_feature) and "local_distances" (float32 (B, B)
            aligned local distances, or None without a local branch).
        """
        settings = self._loss_settings
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        embeddings, flipping_losses, local_features = self.compute_branch_outputs(
            images, training=training
        )
        probabilities = as_output_list(self.classification_heads(embeddings, training=training))
        # AlignedReID's --normalize_feature: distances of unit-length features. The heads still
        # see the raw embeddings.
        distance_features = (
            [normalize_features(embedding) for embedding in embeddings]
            if settings["normalize_feature"]
            else embeddings
        )
        values = self._global_loss_values(distance_features, probabilities, flipping_losses, labels)
        outputs = {"probabilities": probabilities, "distances": None, "local_distances": None}
        if self.has_local_branch:
            local_triplet, outputs["local_distances"] = self._local_triplet_loss(
                local_features, distance_features[0], labels
            )
            values["local_triplet_loss"] = local_triplet
            values["loss"] = values["loss"] + settings["local_triplet_loss_weight"] * local_triplet
        # Only mutual learning reads these; a traced step prunes them when nothing does.
        outputs["distances"] = [
            pairwise_euclidean_distances(features) for features in distance_features
        ]
        return values, outputs

    def _global_loss_values(self, distance_features, probabilities, flipping_losses, labels):
        """The losses of the branch embeddings and heads, their weighted total and the accuracy.

        Args:
            distance_features: list of float32 (B, D_b), the embeddings the triplet loss sees.
            probabilities: list of float32 (B, num_identities), one per head.
            flipping_losses: list of float32 scalars (empty without the flip structure).
            labels: int32 (B,).

        Returns:
            dict name -> float32 scalar: loss, triplet_loss, cross_entropy_loss, flipping_loss,
            regularization_loss, accuracy.
        """
        settings = self._loss_settings
        triplet = tf.add_n(
            [
                batch_hard_triplet_loss(embedding, labels, settings["triplet_margin"])
                for embedding in distance_features
            ]
        )
        cross_entropy = tf.add_n(
            [
                cross_entropy_loss(labels, branch_probabilities, settings["label_smoothing"])
                for branch_probabilities in probabilities
            ]
        )
        flipping = tf.add_n(flipping_losses) if flipping_losses else tf.constant(0.0)
        regularization = self.regularization_loss()
        accuracy = _mean_accuracy(probabilities, labels)
        total = (
            settings["triplet_loss_weight"] * triplet
            + settings["cross_entropy_loss_weight"] * cross_entropy
            + settings["flipping_loss_weight"] * flipping
            + regularization
        )
        return {
            "loss": total,
            "triplet_loss": triplet,
            "cross_entropy_loss": cross_entropy,
            "flipping_loss": flipping,
            "regularization_loss": regularization,
            "accuracy": accuracy,
        }

    def _local_triplet_loss(self, local_features, global_features, labels):
        """AlignedReID's local triplet loss and the aligned local distances it ranks by.

        Args:
            local_features: float32 (B, H_map, C), normalised here with normalize_feature.
            global_features: float32 (B, D), the global embedding the triplet loss sees; its
                distances pick the hard samples unless local_distance_own_hard_samples.
            labels: int32 (B,).

        Returns:
            (float32 scalar loss, float32 (B, B) local distances).
        """
        settings = self._loss_settings
        if settings["normalize_feature"]:
            local_features = normalize_features(local_features)
        local_distances = batch_local_distances(local_features)
        global_distances = pairwise_euclidean_distances(global_features)
        local_triplet = local_triplet_loss(
            local_features,
            labels,
            margin=settings["local_triplet_margin"],
            global_distances=(
                None if settings["local_distance_own_hard_samples"] else global_distances
            ),
            local_distances=local_distances,
        )
        return local_triplet, local_distances
