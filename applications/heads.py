"""Classification heads, one per branch: FlipReID's BN neck, or AlignedReID's linear layer.

bn_neck (FlipReID): BatchNormalization neck, then a bias-free Dense softmax layer.
linear (AlignedReID's Model.fc): a Dense layer with bias on the raw embedding, then softmax;
its weights start from N(0, 0.001) and its bias from 0, as AlignedReID initialises them.
"""

from applications.branches import embedding_outputs
from applications.core.backend import keras

IDENTITY_HEAD_MODES = ("bn_neck", "linear")


def build_classification_heads(
    branch_network, num_identities, branch_names, identity_head="bn_neck"
):
    """Builds [embeddings (B, D_b)] -> [float32 softmax probabilities (B, num_identities)].

    Args:
        branch_network: the branch network (its embedding outputs give the input shapes).
        num_identities: int, the softmax classes.
        branch_names: list of str, one per branch, naming the layers.
        identity_head: "bn_neck" (FlipReID) or "linear" (AlignedReID), see the module docstring.

    Returns:
        keras.Model.

    Raises:
        ValueError: an unknown identity_head (the message lists the valid ones).
    """
    if identity_head not in IDENTITY_HEAD_MODES:
        raise ValueError(
            f"identity_head must be one of {', '.join(IDENTITY_HEAD_MODES)}, got {identity_head!r}."
        )
    embeddings, probabilities = [], []
    for output, branch_name in zip(embedding_outputs(branch_network), branch_names, strict=True):
        embedding = keras.Input(shape=output.shape[1:], name=branch_name + "_embedding")
        features = embedding
        if identity_head == "bn_neck":
            features = keras.layers.BatchNormalization(epsilon=2e-5, name=branch_name + "_neck")(
                embedding
            )
        logits = keras.layers.Dense(
            num_identities,
            use_bias=identity_head == "linear",
            kernel_initializer=keras.initializers.RandomNormal(mean=0.0, stddev=0.001),
            bias_initializer="zeros",
            name=branch_name + "_classifier",
        )(features)
        probabilities.append(
            keras.layers.Activation("softmax", dtype="float32", name=branch_name + "_softmax")(
                logits
            )
        )
        embeddings.append(embedding)
    return keras.Model(embeddings, probabilities, name="classification_heads")
