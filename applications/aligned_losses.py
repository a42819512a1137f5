"""AlignedReID's local-branch and mutual-learning losses as pure TensorFlow functions.

Definitions follow Zhang et al., "AlignedReID", as its PyTorch re-production computes them:

- Aligned local distance of two images with stripes a_i, b_j (i, j < H): element distances
  tanh(||a_i - b_j|| / 2) = (exp(d) - 1) / (exp(d) + 1), then the cost of the shortest path from
  (0, 0) to (H-1, H-1) moving only right or down (the sum of the visited elements).
- Local triplet loss: batch-hard triplets whose hardest positive and negative are mined from the
  global distance by default, or from the local distance itself.
- Mutual losses of deep mutual learning: the other models' outputs enter as constants.

Every function computes in float32 (also under mixed precision). The NumPy counterpart for
evaluation is ``evaluation.aligned_distance``.
"""

from applications.core.backend import tf
from applications.losses import pairwise_euclidean_distances

# Any real path cost is far below this, so a padded cell never wins a minimum.
_UNREACHABLE = 1e9
_NORMALIZATION_EPSILON = 1e-12


def normalize_features(features):
    """L2-normalises the last axis, as AlignedReID's ``--normalize_feature`` does.

    Args:
        features: float tensor (..., C), e.g. global (B, C) or local (B, H, C).

    Returns:
        float32 tensor of the same shape, x / (||x|| + 1e-12) along the last axis.
    """
    features = tf.cast(features, tf.float32)
    norms = tf.norm(features, axis=-1, keepdims=True)
    return features / (norms + _NORMALIZATION_EPSILON)


def shortest_path_distances(element_distances):
    """Right/down shortest-path cost from (0, 0) to (H-1, H-1) of every H x H matrix.

    The dynamic programme runs over the 2H - 1 anti-diagonals: the cells (i, k - i) of
    anti-diagonal k depend only on anti-diagonal k - 1 (the cell above, (i - 1, k - i), and the
    cell to the left, (i, k - i - 1)), so each step is one vectorised minimum over all matrices
    and all cells of the diagonal. The cost is differentiable almost everywhere (through the
    minima), like the original's.

    Args:
        element_distances: float tensor (..., H, H) with static H.

    Returns:
        float32 tensor (...).
    """
    element_distances = tf.cast(element_distances, tf.float32)
    num_stripes = element_distances.shape[-1]
    if num_stripes is None or element_distances.shape[-2] != num_stripes:
        raise ValueError(
            "element_distances must end in two equal, static dimensions (H, H), got shape "
            f"{element_distances.shape}."
        )
    batch_shape = tf.shape(element_distances)[:-2]
    flat = tf.reshape(element_distances, tf.concat([batch_shape, [num_stripes * num_stripes]], 0))
    # One padded cell at flat index H * H stands for every cell outside the matrix.
    unreachable = tf.fill(tf.concat([batch_shape, [1]], 0), _UNREACHABLE)
    flat = tf.concat([flat, unreachable], axis=-1)
    padding_index = num_stripes * num_stripes
    # costs[..., i]: path cost to the cell of row i on the current anti-diagonal.
    costs = tf.gather(flat, [0] + [padding_index] * (num_stripes - 1), axis=-1)
    for diagonal in range(1, 2 * num_stripes - 1):
        indices = [
            row * num_stripes + (diagonal - row)
            if 0 <= diagonal - row < num_stripes
            else padding_index
            for row in range(num_stripes)
        ]
        cells = tf.gather(flat, indices, axis=-1)
        # The cell above row i on the previous diagonal sits at row i - 1 there.
        from_above = tf.concat([unreachable, costs[..., :-1]], axis=-1)
        costs = cells + tf.minimum(from_above, costs)
    return costs[..., num_stripes - 1]


def local_element_distances(local_features):
    """Squashed stripe distances tanh(||a_i - b_j|| / 2) of every pair of images of a batch.

    Args:
        local_features: float tensor (B, H, C) with static H and C.

    Returns:
        float32 tensor (B, B, H, H); entry (p, q, i, j) compares stripe i of image p with
        stripe j of image q. The gradient is finite where two stripes coincide.
    """
    local_features = tf.cast(local_features, tf.float32)
    num_images = tf.shape(local_features)[0]
    num_stripes, channels = local_features.shape[1], local_features.shape[2]
    distances = pairwise_euclidean_distances(tf.reshape(local_features, [-1, channels]))
    distances = tf.reshape(distances, [num_images, num_stripes, num_images, num_stripes])
    return tf.tanh(tf.transpose(distances, [0, 2, 1, 3]) / 2.0)


def batch_local_distances(local_features):
    """Aligned local distance between every pair of images of a batch.

    Builds the (B, B, H, H) element tensor and runs ``shortest_path_distances`` on it.

    Args:
        local_features: float tensor (B, H, C), used as given (normalise first if wanted).

    Returns:
        float32 tensor (B, B), symmetric.
    """
    return shortest_path_distances(local_element_distances(local_features))


def hard_sample_indices(distances, labels):
    """Indices of each anchor's hardest positive and hardest negative.

    The hardest positive is the farthest sample with the anchor's label (the anchor itself
    counts), the hardest negative the closest sample with another label; ties go to the lowest
    index. An anchor without a negative gets index -1.

    Args:
        distances: float tensor (B, B).
        labels: integer tensor (B,).

    Returns:
        (positive_indices, negative_indices): int32 tensors (B,), constants for the gradient.
    """
    distances = tf.stop_gradient(tf.cast(distances, tf.float32))
    labels = tf.reshape(labels, [-1])
    same_identity = tf.equal(labels[:, None], labels[None, :])
    positive_indices = tf.argmax(
        tf.where(same_identity, distances, tf.fill(tf.shape(distances), -_UNREACHABLE)),
        axis=1,
        output_type=tf.int32,
    )
    negative_indices = tf.argmin(
        tf.where(same_identity, tf.fill(tf.shape(distances), _UNREACHABLE), distances),
        axis=1,
        output_type=tf.int32,
    )
    has_negative = tf.reduce_any(tf.logical_not(same_identity), axis=1)
    negative_indices = tf.where(has_negative, negative_indices, -tf.ones_like(negative_indices))
    return positive_indices, negative_indices


def triplet_ranking_loss(positive_distances, negative_distances, margin=None, valid=None):
    """AlignedReID's triplet criterion on mined distances.

    Args:
        positive_distances: float tensor (B,), d(anchor, hardest positive).
        negative_distances: float tensor (B,), d(anchor, hardest negative).
        margin: None for the soft margin log(1 + exp(d_ap - d_an)); else relu(d_ap - d_an + m).
        valid: optional bool tensor (B,); anchors marked False contribute 0 (no negative).

    Returns:
        float32 scalar, the mean over the B anchors.
    """
    difference = tf.cast(positive_distances, tf.float32) - tf.cast(negative_distances, tf.float32)
    if margin is None:
        per_anchor = tf.nn.softplus(difference)
    else:
        per_anchor = tf.nn.relu(difference + float(margin))
    if valid is not None:
        per_anchor = tf.where(valid, per_anchor, tf.zeros_like(per_anchor))
    return tf.reduce_mean(per_anchor)


def local_triplet_loss(
    local_features, labels, margin=None, global_distances=None, local_distances=None
):
    """Batch-hard triplet loss on the aligned local distance.

    By default (``global_distances`` given) the hard positive and negative of each anchor are
    those of the global distance, as AlignedReID does; with ``global_distances=None`` they are
    mined from the local distance (AlignedReID's ``--local_dist_own_hard_sample``).

    Args:
        local_features: float tensor (B, H, C), used as given.
        labels: integer tensor (B,).
        margin: None for the soft margin, else a float hinge margin (AlignedReID: 0.3).
        global_distances: float tensor (B, B) to mine hard samples from, or None.
        local_distances: optional float tensor (B, B), ``batch_local_distances(local_features)``
            when the caller already has it (mutual learning needs it too).

    Returns:
        float32 scalar, the mean over the B anchors.
    """
    if local_distances is None:
        local_distances = batch_local_distances(local_features)
    mining_distances = local_distances if global_distances is None else global_distances
    positive_indices, negative_indices = hard_sample_indices(mining_distances, labels)
    valid = negative_indices >= 0
    positive_distances = tf.gather(local_distances, positive_indices, axis=1, batch_dims=1)
    negative_distances = tf.gather(
        local_distances, tf.maximum(negative_indices, 0), axis=1, batch_dims=1
    )
    return triplet_ranking_loss(positive_distances, negative_distances, margin, valid)


def probability_mutual_loss(logits, other_probabilities):
    """Deep mutual learning's probability loss of one model.

    sum over the other models j of KL(p_j || p_i), summed over classes and samples, divided by
    (N - 1) * B, with p_j constant (stop-gradient). log p_i is the log-softmax of the logits,
    as AlignedReID's F.kl_div(F.log_softmax(logits), p_j) takes it: exact where p_i underflows
    (at large logits), with a gradient everywhere. Classes where p_j is 0 contribute 0.

    Args:
        logits: float tensor (B, K), this model's logits (p_i = softmax(logits)).
        other_probabilities: non-empty list of float tensors (B, K), the other N - 1 models'
            softmax outputs p_j.

    Returns:
        float32 scalar.
    """
    if not other_probabilities:
        raise ValueError("probability_mutual_loss needs at least one other model's output.")
    log_probabilities = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    total = tf.constant(0.0, tf.float32)
    for other in other_probabilities:
        other = tf.stop_gradient(tf.cast(other, tf.float32))
        # 0 * log 0 is 0 in the KL divergence; xlogy keeps it so.
        total += tf.reduce_sum(tf.math.xlogy(other, other) - other * log_probabilities)
    batch_size = tf.cast(tf.shape(log_probabilities)[0], tf.float32)
    return total / (float(len(other_probabilities)) * batch_size)


def distance_mutual_loss(distances, other_distances):
    """Deep mutual learning's distance loss of one model (global or local distances).

    sum over the other models j of sum((D_i - D_j)^2), divided by (N - 1) * B^2, with D_j
    constant (stop-gradient).

    Args:
        distances: float tensor (B, B), this model's batch distance matrix D_i.
        other_distances: non-empty list of float tensors (B, B), the other N - 1 models'.

    Returns:
        float32 scalar.
    """
    if not other_distances:
        raise ValueError("distance_mutual_loss needs at least one other model's output.")
    distances = tf.cast(distances, tf.float32)
    total = tf.constant(0.0, tf.float32)
    for other in other_distances:
        other = tf.stop_gradient(tf.cast(other, tf.float32))
        total += tf.reduce_sum(tf.square(distances - other))
    batch_size = tf.cast(tf.shape(distances)[0], tf.float32)
    return total / (float(len(other_distances)) * batch_size * batch_size)
