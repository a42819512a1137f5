"""Classification heads: one BatchNormalization neck and bias-free softmax layer per branch."""

from applications.backend import keras
from applications.branches import embedding_outputs


def build_classification_heads(branch_network, num_identities, branch_names):
    """Builds [embeddings (B, D_b)] -> [float32 softmax probabilities (B, num_identities)]."""
    embeddings, probabilities = [], []
    for output, branch_name in zip(embedding_outputs(branch_network), branch_names, strict=True):
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
