"""Losses of FlipReID as pure TensorFlow functions, computed in float32."""

from applications.core.backend import tf

# Any real distance is far below this, so a masked-out entry never wins a min or max.
_MASKED_DISTANCE = 1e9
_PROBABILITY_EPSILON = 1e-7


def pairwise_euclidean_distances(embeddings):
    """Euclidean distances between all pairs of rows, with a gradient that is finite at 0.

    Args:
        embeddings: float tensor (B, D).

    Returns:
        float32 tensor (B, B), zero on the diagonal.
    """
    embeddings = tf.cast(embeddings, tf.float32)
    squared_norms = tf.reduce_sum(tf.square(embeddings), axis=1)
    squared_distances = (
        squared_norms[:, None]
        - 2.0 * tf.matmul(embeddings, embeddings, transpose_b=True)
        + squared_norms[None, :]
    )
    squared_distances = tf.maximum(squared_distances, 0.0)
    # sqrt has an infinite derivative at 0 (every anchor's distance to itself): take the root
    # only of positive entries, so masked entries get a zero gradient instead of NaN.
    positive = squared_distances > 1e-16
    safe_squared_distances = tf.where(positive, squared_distances, tf.ones_like(squared_distances))
    distances = tf.where(
        positive, tf.sqrt(safe_squared_distances), tf.zeros_like(squared_distances)
    )
    return distances


def batch_hard_triplet_loss(embeddings, labels, margin=None):
    """Batch-hard triplet loss (Hermans et al., 2017) with Euclidean distances.

    For every anchor, the hardest positive is the farthest sample with its label (the anchor
    itself counts, at distance 0) and the hardest negative the closest sample with another label.

    Args:
        embeddings: float tensor (B, D).
        labels: integer tensor (B,).
        margin: None for the soft margin log(1 + exp(d_ap - d_an)); otherwise a float m for
            relu(d_ap - d_an + m). An anchor with no negative in the batch contributes 0.

    Returns:
        float32 scalar, the mean over the B anchors.
    """
    distances = pairwise_euclidean_distances(embeddings)
    labels = tf.reshape(labels, [-1])
    same_identity = tf.equal(labels[:, None], labels[None, :])
    hardest_positive = tf.reduce_max(
        tf.where(same_identity, distances, tf.zeros_like(distances)), axis=1
    )
    hardest_negative = tf.reduce_min(
        tf.where(same_identity, tf.fill(tf.shape(distances), _MASKED_DISTANCE), distances), axis=1
    )
    difference = hardest_positive - hardest_negative
    if margin is None:
        per_anchor = tf.nn.softplus(difference)
    else:
        per_anchor = tf.nn.relu(difference + float(margin))
    return tf.reduce_mean(per_anchor)


def flipping_loss(embeddings, flipped_embeddings):
    """Mean squared error between the embeddings of images and of their horizontal flips.

    Args:
        embeddings: float tensor (B, D).
        flipped_embeddings: float tensor (B, D).

    Returns:
        float32 scalar, mean over the B * D entries.
    """
    embeddings = tf.cast(embeddings, tf.float32)
    flipped_embeddings = tf.cast(flipped_embeddings, tf.float32)
    return tf.reduce_mean(tf.square(embeddings - flipped_embeddings))


def cross_entropy_loss(labels, predictions, label_smoothing=0.0, from_logits=False):
    """Categorical cross-entropy with label smoothing, from integer labels.

    The target of a sample with label y is (1 - s) * one_hot(y) + s / C.

    Args:
        labels: integer tensor (B,) in [0, C).
        predictions: float tensor (B, C): softmax probabilities, or logits if from_logits.
        label_smoothing: s in [0, 1].
        from_logits: whether predictions are logits.

    Returns:
        float32 scalar, the mean over the batch.
    """
    predictions = tf.cast(predictions, tf.float32)
    num_classes = tf.shape(predictions)[-1]
    targets = tf.one_hot(tf.reshape(tf.cast(labels, tf.int32), [-1]), num_classes)
    targets = targets * (1.0 - label_smoothing) + label_smoothing / tf.cast(num_classes, tf.float32)
    if from_logits:
        log_probabilities = tf.nn.log_softmax(predictions, axis=-1)
    else:
        log_probabilities = tf.math.log(tf.clip_by_value(predictions, _PROBABILITY_EPSILON, 1.0))
    return tf.reduce_mean(-tf.reduce_sum(targets * log_probabilities, axis=-1))


def l2_regularization_loss(variables_and_factors):
    """Weighted L2 penalty sum_v factor_v * sum(v ** 2), as Keras' l2 regularizer defines it.

    Args:
        variables_and_factors: iterable of (variable, factor) pairs.

    Returns:
        float32 scalar (0.0 for an empty iterable).
    """
    total = tf.constant(0.0, dtype=tf.float32)
    for variable, factor in variables_and_factors:
        if factor:
            total += factor * tf.reduce_sum(tf.square(tf.cast(variable, tf.float32)))
    return total
