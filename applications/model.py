"""The FlipReID model: a multi-branch embedding network and its flip-averaging training model.

Structure (Ni & Rahtu, FlipReID):
- images (B, H, W, 3) in [0, 255] -> ImageNet normalisation -> trunk (init block, stages 1-3);
- global branch: its own copy of stage 4 -> pooling -> optional clipping;
- regional branch: another copy of stage 4, whose feature map is cut into `region_num`
  horizontal stripes; each stripe -> 3x3 conv (C4 / region_num filters) + ReLU -> pooling ->
  optional clipping;
- one classification head per branch: BatchNormalization neck -> Dense softmax without bias.
The training model runs every image and its horizontal flip through the same branch network,
averages the two embeddings of each branch for the triplet and identity losses, and adds the
mean squared error between them as the flipping loss.
"""

import os

from applications.backbones import build_backbone
from applications.backend import keras, tf
from applications.layers import (
    FeatureClipping,
    GlobalGeMPooling2D,
    ImageNormalization,
    build_pooling_layer,
)
from applications.losses import (
    batch_hard_triplet_loss,
    cross_entropy_loss,
    flipping_loss,
    l2_regularization_loss,
)

LOGGED_NAMES = (
    "loss",
    "triplet_loss",
    "cross_entropy_loss",
    "flipping_loss",
    "regularization_loss",
    "accuracy",
)
# Attribute name of a variable on its layer -> which regularization factor applies to it.
_REGULARIZED_ATTRIBUTES = {
    "kernel": "kernel",
    "depthwise_kernel": "kernel",
    "pointwise_kernel": "kernel",
    "bias": "bias",
    "gamma": "gamma",
    "beta": "beta",
}


def _build_branch_network(
    backbone,
    image_height,
    image_width,
    region_num,
    pooling_mode,
    min_value,
    max_value,
    gem_initial_power,
):
    """Builds images (B, H, W, 3) -> list of float32 branch embeddings [(B, D_b), ...]."""
    images = keras.Input(shape=(image_height, image_width, 3), name="images")
    features = ImageNormalization(name="image_normalization")(images)
    features = backbone.trunk(features)

    def pool_and_clip(feature_map, branch_name):
        embedding = build_pooling_layer(
            pooling_mode, name=branch_name + "_pooling", gem_initial_power=gem_initial_power
        )(feature_map)
        if min_value is not None or max_value is not None:
            embedding = FeatureClipping(min_value, max_value, name=branch_name + "_clipping")(
                embedding
            )
        return embedding

    global_feature_map = backbone.build_last_stage_copy("last_stage_global")(features)
    branch_embeddings = [pool_and_clip(global_feature_map, "global")]

    if region_num > 0:
        regional_feature_map = backbone.build_last_stage_copy("last_stage_regional")(features)
        total_height, _, num_channels = regional_feature_map.shape[1:]
        region_size = total_height // region_num
        if region_size == 0:
            raise ValueError(
                f"region_num={region_num} exceeds the height {total_height} of the last feature "
                f"map at image_height={image_height}; use a taller image or fewer regions."
            )
        for region_index in range(region_num):
            start_index = region_index * region_size
            # The last stripe takes the rows left over by an uneven split.
            end_index = (
                total_height if region_index == region_num - 1 else start_index + region_size
            )
            branch_name = _branch_names(region_num)[region_index + 1]
            stripe = keras.layers.Cropping2D(
                cropping=((start_index, total_height - end_index), (0, 0)),
                name=branch_name + "_stripe",
            )(regional_feature_map)
            stripe = keras.layers.Conv2D(
                filters=num_channels // region_num,
                kernel_size=3,
                padding="same",
                activation="relu",
                name=branch_name + "_reduction",
            )(stripe)
            branch_embeddings.append(pool_and_clip(stripe, branch_name))

    return keras.Model(images, branch_embeddings, name="branch_network")


def _branch_names(region_num):
    return ["global"] + [f"region{index + 1}" for index in range(region_num)]


def _build_classification_heads(branch_network, num_identities, branch_names):
    """Builds [embeddings (B, D_b)] -> [float32 softmax probabilities (B, num_identities)]."""
    embeddings, probabilities = [], []
    for output, branch_name in zip(branch_network.outputs, branch_names, strict=True):
        embedding = keras.Input(shape=output.shape[1:], name=branch_name + "_embedding")
        features = keras.layers.BatchNormalization(epsilon=2e-5, name=branch_name + "_neck")(
            embedding
        )
        logits = keras.layers.Dense(
            num_identities,
            use_bias=False,
            kernel_initializer=keras.initializers.RandomNormal(mean=0.0, stddev=0.001),
            name=branch_name + "_classifier",
        )(features)
        probabilities.append(
            keras.layers.Activation("softmax", dtype="float32", name=branch_name + "_softmax")(
                logits
            )
        )
        embeddings.append(embedding)
    return keras.Model(embeddings, probabilities, name="classification_heads")


def _build_inference_model(branch_network):
    """Builds images (B, H, W, 3) -> float32 concatenated branch embeddings (B, D)."""
    outputs = branch_network.outputs
    if len(outputs) == 1:
        embedding = FeatureClipping(name="embedding")(outputs[0])
    else:
        embedding = keras.layers.Concatenate(axis=-1, dtype="float32", name="embedding")(outputs)
    return keras.Model(branch_network.inputs, embedding, name="inference_model")


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


class FlipReIDTrainingModel(keras.Model):
    """Training model: flip averaging, batch-hard triplet, cross-entropy and flipping losses.

    `fit` takes a dataset of (images uint8/float (B, H, W, 3), labels int32 (B,)) and logs
    LOGGED_NAMES each epoch: `loss` (total), `triplet_loss` and `cross_entropy_loss` (summed over
    branches), `flipping_loss` (MSE between original and flipped embeddings, summed over
    branches; 0 without the flip structure), `regularization_loss` (L2, float32) and `accuracy`
    (softmax accuracy, averaged over the branch heads). Weighted losses are summed as
    triplet_loss_weight * triplet + cross_entropy_loss_weight * cross_entropy
    + flipping_loss_weight * flipping + regularization.
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
        **kwargs,
    ):
        super().__init__(**kwargs)
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
        self.loss_trackers = [keras.metrics.Mean(name=name) for name in LOGGED_NAMES]
        self._loss_settings = dict(
            triplet_margin=None,
            label_smoothing=0.0,
            triplet_loss_weight=1.0,
            cross_entropy_loss_weight=1.0,
            flipping_loss_weight=1.0,
        )
        # Both sub-models are functional and already built; marking this wrapper built lets
        # save_weights run before the first step.
        self.built = True

    # Keras resets these at the start of every epoch and reports them under their names.
    @property
    def metrics(self):
        return list(self.loss_trackers)

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

        Args:
            optimizer: a keras optimizer or its name.
            triplet_margin: None for the soft margin (softplus), else the hinge margin.
            label_smoothing: label smoothing of the cross-entropy, in [0, 1].
            triplet_loss_weight: weight of the triplet loss in the total.
            cross_entropy_loss_weight: weight of the cross-entropy in the total.
            flipping_loss_weight: weight of the flipping loss in the total.
            **kwargs: passed to keras.Model.compile (e.g. run_eagerly, jit_compile).
        """
        super().compile(optimizer=optimizer, **kwargs)
        self._compile_kwargs = dict(kwargs)
        self._loss_settings = dict(
            triplet_margin=triplet_margin,
            label_smoothing=label_smoothing,
            triplet_loss_weight=triplet_loss_weight,
            cross_entropy_loss_weight=cross_entropy_loss_weight,
            flipping_loss_weight=flipping_loss_weight,
        )
        # Give the optimizer slots for every variable that can ever be trained, frozen backbone
        # included, so unfreezing later needs no recompile and keeps the optimizer state.
        inner_optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        if isinstance(inner_optimizer, keras.optimizers.Optimizer):
            inner_optimizer.build([variable for variable in self.weights if variable.trainable])

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
            training: BatchNormalization mode.

        Returns:
            (embeddings, flipping_losses): embeddings is a list with one float32 (B, D_b) tensor
            per branch (the average of the original and flipped embeddings with the flip
            structure); flipping_losses is a list of float32 scalars, one per branch (empty
            without the flip structure).
        """
        images = tf.cast(images, tf.float32)
        if not self.use_horizontal_flipping_inside_model:
            outputs = self.branch_network(images, training=training)
            return [tf.cast(output, tf.float32) for output in outputs], []
        batch_size = tf.shape(images)[0]
        # One pass over the 2B images: one set of weights, and one big batch is faster.
        both = tf.concat([images, tf.image.flip_left_right(images)], axis=0)
        outputs = self.branch_network(both, training=training)
        embeddings, flipping_losses = [], []
        for output in outputs:
            output = tf.cast(output, tf.float32)
            original, flipped = output[:batch_size], output[batch_size:]
            embeddings.append((original + flipped) / 2.0)
            flipping_losses.append(flipping_loss(original, flipped))
        return embeddings, flipping_losses

    def call(self, images, training=False):
        """Returns {"branch_embeddings": [(B, D_b)], "probabilities": [(B, C)]}, float32."""
        embeddings, _ = self.compute_branch_embeddings(images, training=training)
        probabilities = self.classification_heads(embeddings, training=training)
        return {"branch_embeddings": embeddings, "probabilities": list(probabilities)}

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
            dict name -> float32 scalar with the keys of LOGGED_NAMES.
        """
        settings = self._loss_settings
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        embeddings, flipping_losses = self.compute_branch_embeddings(images, training=training)
        probabilities = self.classification_heads(embeddings, training=training)
        triplet = tf.add_n(
            [
                batch_hard_triplet_loss(embedding, labels, settings["triplet_margin"])
                for embedding in embeddings
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
        accuracy = tf.reduce_mean(
            [
                tf.reduce_mean(
                    tf.cast(
                        tf.equal(
                            tf.argmax(branch_probabilities, axis=-1, output_type=tf.int32), labels
                        ),
                        tf.float32,
                    )
                )
                for branch_probabilities in probabilities
            ]
        )
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


def build_flipreid_models(
    backbone_name,
    image_height,
    image_width,
    num_identities,
    *,
    region_num=2,
    pooling_mode="GeM",
    gem_initial_power=3.0,
    min_value=None,
    max_value=None,
    use_horizontal_flipping_inside_model=True,
    pretrained=False,
    pretrained_root=None,
    kernel_regularization_factor=0.0005,
    bias_regularization_factor=0.0005,
    gamma_regularization_factor=0.0005,
    beta_regularization_factor=0.0005,
):
    """Builds the FlipReID training model and the inference model that shares its weights.

    Args:
        backbone_name: "resnet18", "resnet50", "ibn_resnet50" or "resnesta50".
        image_height: input height in pixels.
        image_width: input width in pixels.
        num_identities: number of training identities (softmax classes).
        region_num: number of horizontal stripes of the regional branch (0: global only).
        pooling_mode: "Average", "Max" or "GeM".
        gem_initial_power: starting value of GeM's trainable power p (FlipReID: 1.0).
        min_value: lower clip of every branch embedding (None: no lower clip). FlipReID's
            flags default to 0.0.
        max_value: upper clip of every branch embedding (None: no upper clip). FlipReID's
            flags default to 1.0.
        use_horizontal_flipping_inside_model: train on the average of the embeddings of each
            image and its flip, plus the flipping loss (the FlipReID structure).
        pretrained: start the backbone from tf2cv's ImageNet weights.
        pretrained_root: folder of tf2cv's weight cache (None: ~/.tensorflow/models).
        kernel_regularization_factor: L2 factor of kernels.
        bias_regularization_factor: L2 factor of biases.
        gamma_regularization_factor: L2 factor of normalization scales.
        beta_regularization_factor: L2 factor of normalization offsets.

    Returns:
        (training_model, inference_model). inference_model maps images (B, H, W, 3) uint8 or
        float in [0, 255] to the float32 embedding (B, D): the concatenation, in the order
        global, region1, ..., of the branch embeddings, not L2-normalised (compare them with
        the cosine distance). training_model is a FlipReIDTrainingModel, not yet compiled; its
        `branch_network` maps the same images to the list of branch embeddings.

    Raises:
        ValueError: unknown backbone or pooling mode, or invalid sizes.
        RuntimeError: pretrained weights are neither cached nor downloadable.
    """
    if num_identities < 2:
        raise ValueError(f"num_identities must be at least 2, got {num_identities}.")
    if region_num < 0:
        raise ValueError(f"region_num must be non-negative, got {region_num}.")
    backbone = build_backbone(
        backbone_name,
        image_height,
        image_width,
        pretrained=pretrained,
        pretrained_root=pretrained_root,
    )
    branch_network = _build_branch_network(
        backbone,
        image_height,
        image_width,
        region_num,
        pooling_mode,
        min_value,
        max_value,
        gem_initial_power,
    )
    classification_heads = _build_classification_heads(
        branch_network, num_identities, _branch_names(region_num)
    )
    backbone_model_names = ["trunk", "last_stage_global"]
    if region_num > 0:
        backbone_model_names.append("last_stage_regional")
    training_model = FlipReIDTrainingModel(
        branch_network,
        classification_heads,
        backbone_model_names,
        use_horizontal_flipping_inside_model=use_horizontal_flipping_inside_model,
        kernel_regularization_factor=kernel_regularization_factor,
        bias_regularization_factor=bias_regularization_factor,
        gamma_regularization_factor=gamma_regularization_factor,
        beta_regularization_factor=beta_regularization_factor,
        name="training_model",
    )
    inference_model = _build_inference_model(branch_network)
    return training_model, inference_model


def load_model_weights(model, file_path):
    """Loads weights saved by `save_weights` of a model built with the same flags.

    Args:
        model: the training model (or the inference model) to load into.
        file_path: the weights file (.h5 or a checkpoint prefix).

    Raises:
        FileNotFoundError: no file at file_path.
        ValueError: the file does not fit the model.
    """
    is_checkpoint = os.path.isfile(file_path + ".index")
    if not os.path.isfile(file_path) and not is_checkpoint:
        raise FileNotFoundError(f"No weights file at {file_path}.")
    try:
        status = model.load_weights(file_path)
        if is_checkpoint and status is not None:
            status.assert_existing_objects_matched()
    except (ValueError, KeyError, IndexError, AssertionError, tf.errors.OpError) as error:
        raise ValueError(
            f"The weights file {file_path} does not fit this {model.name} model: {error}. "
            "Build the model with the same backbone_name, region_num, pooling_mode and "
            "num_identities as the model that saved it (image_height, image_width, min_value, "
            "max_value and use_horizontal_flipping_inside_model do not change the weights), and "
            "load a file "
            "saved from the same kind of model (training or inference)."
        ) from error
