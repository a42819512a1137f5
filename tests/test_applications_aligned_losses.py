"""AlignedReID losses against loop references and their formulas."""

import numpy as np
import pytest

from applications.aligned_losses import (
    batch_local_distances,
    distance_mutual_loss,
    hard_sample_indices,
    local_triplet_loss,
    normalize_features,
    probability_mutual_loss,
    shortest_path_distances,
)
from applications.core.backend import tf
from evaluation import aligned_local_distance


def loop_shortest_path(elements):
    num_stripes = elements.shape[0]
    costs = np.zeros_like(elements)
    for i in range(num_stripes):
        for j in range(num_stripes):
            previous = []
            if i > 0:
                previous.append(costs[i - 1, j])
            if j > 0:
                previous.append(costs[i, j - 1])
            costs[i, j] = elements[i, j] + (min(previous) if previous else 0.0)
    return costs[-1, -1]


def loop_local_distances(features):
    num_images, num_stripes, _ = features.shape
    result = np.zeros((num_images, num_images))
    for p in range(num_images):
        for q in range(num_images):
            elements = np.zeros((num_stripes, num_stripes))
            for i in range(num_stripes):
                for j in range(num_stripes):
                    distance = np.linalg.norm(features[p, i] - features[q, j])
                    elements[i, j] = (np.exp(distance) - 1) / (np.exp(distance) + 1)
            result[p, q] = loop_shortest_path(elements)
    return result


def loop_triplet(local_distances, mining_distances, labels, margin):
    losses = []
    for anchor, label in enumerate(labels):
        positives = [j for j in range(len(labels)) if labels[j] == label]
        negatives = [j for j in range(len(labels)) if labels[j] != label]
        # First index among equal values, as the argmax/argmin in the loss.
        hardest_positive = max(positives, key=lambda j: (mining_distances[anchor, j], -j))
        hardest_negative = min(negatives, key=lambda j: (mining_distances[anchor, j], j))
        difference = (
            local_distances[anchor, hardest_positive] - local_distances[anchor, hardest_negative]
        )
        losses.append(
            np.log1p(np.exp(difference)) if margin is None else max(0, difference + margin)
        )
    return np.mean(losses)


@pytest.mark.parametrize("num_stripes", [1, 2, 5, 8])
def test_shortest_path_matches_loop(num_stripes):
    rng = np.random.default_rng(num_stripes)
    elements = rng.random((3, 4, num_stripes, num_stripes)).astype(np.float32)
    result = shortest_path_distances(tf.constant(elements)).numpy()
    expected = np.array([[loop_shortest_path(matrix) for matrix in row] for row in elements])
    assert result.shape == (3, 4)
    np.testing.assert_allclose(result, expected, rtol=1e-6)


@pytest.mark.parametrize("num_stripes", [1, 8])
def test_batch_local_distances_match_loop_and_numpy(num_stripes):
    rng = np.random.default_rng(10 + num_stripes)
    features = rng.standard_normal((6, num_stripes, 7)).astype(np.float32)
    result = batch_local_distances(tf.constant(features)).numpy()
    # float32 cancellation in the expanded squared distance leaves up to about 5e-4 where two
    # stripes coincide (an image with itself); the loss tolerates it, as the original does.
    tolerance = dict(rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(
        result, loop_local_distances(features.astype(np.float64)), **tolerance
    )
    np.testing.assert_allclose(result, aligned_local_distance(features, features), **tolerance)
    if num_stripes == 1:
        euclidean = np.linalg.norm(features[:, None, 0] - features[None, :, 0], axis=-1)
        np.testing.assert_allclose(result, np.tanh(euclidean / 2), **tolerance)


def test_hard_sample_indices_match_loop():
    rng = np.random.default_rng(2)
    distances = rng.random((8, 8)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 3])
    positives, negatives = hard_sample_indices(tf.constant(distances), tf.constant(labels))
    for anchor, label in enumerate(labels):
        same = np.flatnonzero(labels == label)
        other = np.flatnonzero(labels != label)
        assert positives[anchor] == same[np.argmax(distances[anchor, same])]
        assert negatives[anchor] == other[np.argmin(distances[anchor, other])]


def test_anchor_without_negative_gets_minus_one():
    _, negatives = hard_sample_indices(tf.ones((3, 3)), tf.constant([4, 4, 4]))
    assert negatives.numpy().tolist() == [-1, -1, -1]


@pytest.mark.parametrize("margin", [None, 0.3])
@pytest.mark.parametrize("own_hard_samples", [False, True])
def test_local_triplet_loss_matches_loop(margin, own_hard_samples):
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 3)
    local_features = rng.standard_normal((12, 4, 6)).astype(np.float32)
    global_features = rng.standard_normal((12, 16)).astype(np.float32)
    global_distances = np.linalg.norm(global_features[:, None] - global_features[None], axis=-1)
    local_distances = loop_local_distances(local_features.astype(np.float64))
    mining = local_distances if own_hard_samples else global_distances
    loss = local_triplet_loss(
        tf.constant(local_features),
        tf.constant(labels),
        margin=margin,
        global_distances=None if own_hard_samples else tf.constant(global_distances),
    )
    assert float(loss) == pytest.approx(
        loop_triplet(local_distances, mining, labels, margin), rel=1e-5
    )


def test_global_mining_differs_from_own_mining():
    # The option must matter: with unrelated global features, the mined pairs differ.
    rng = np.random.default_rng(4)
    labels = tf.constant(np.repeat(np.arange(4), 4))
    local_features = tf.constant(rng.standard_normal((16, 4, 6)).astype(np.float32))
    global_distances = tf.constant(rng.random((16, 16)).astype(np.float32))
    own = local_triplet_loss(local_features, labels)
    mined_from_global = local_triplet_loss(
        local_features, labels, global_distances=global_distances
    )
    assert float(own) != pytest.approx(float(mined_from_global))


def test_gradients_flow_to_local_features_even_with_duplicate_images():
    rng = np.random.default_rng(5)
    features = rng.standard_normal((8, 4, 6)).astype(np.float32)
    features[1] = features[0]
    features = tf.Variable(features)
    labels = tf.constant([0, 0, 1, 1, 2, 2, 3, 3])
    with tf.GradientTape() as tape:
        loss = local_triplet_loss(features, labels, margin=None)
    gradient = tape.gradient(loss, features).numpy()
    assert np.isfinite(gradient).all()
    assert np.abs(gradient).sum() > 0


def numpy_kl_mutual_loss(logits, other_logits):
    """AlignedReID's pm_loss in plain NumPy (float64): F.kl_div(F.log_softmax(logits), p_j,
    size_average=False) summed over the other models, divided by (N - 1) * B. kl_div adds
    p * (log p - input) where p > 0, and 0 where p == 0."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    total = 0.0
    for other in other_logits:
        other_shifted = np.exp(other - other.max(axis=1, keepdims=True))
        p_other = other_shifted / other_shifted.sum(axis=1, keepdims=True)
        for sample in range(logits.shape[0]):
            for category in range(logits.shape[1]):
                p = p_other[sample, category]
                if p > 0:
                    total += p * (np.log(p) - log_softmax[sample, category])
    return total / (len(other_logits) * logits.shape[0])


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_probability_mutual_loss_matches_alignedreids_kl_div(scale):
    rng = np.random.default_rng(6)
    logits = scale * rng.standard_normal((3, 5, 7))
    loss = probability_mutual_loss(
        tf.constant(logits[0], tf.float32),
        [tf.constant(softmax(logits[other]), tf.float32) for other in (1, 2)],
    )
    expected = numpy_kl_mutual_loss(logits[0], [logits[1], logits[2]])
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    same = probability_mutual_loss(
        tf.constant(logits[0], tf.float32), [tf.constant(softmax(logits[0]), tf.float32)]
    )
    assert float(same) == pytest.approx(0.0, abs=1e-4 * scale)


def test_probability_mutual_loss_gradient_at_large_logits():
    rng = np.random.default_rng(9)
    logits = 30.0 * rng.standard_normal((2, 4, 6))
    mine = tf.Variable(logits[0], dtype=tf.float32)
    p_other = softmax(logits[1])
    with tf.GradientTape() as tape:
        loss = probability_mutual_loss(mine, [tf.constant(p_other, tf.float32)])
    gradient = tape.gradient(loss, mine).numpy()
    # d/dz of -sum_k p_k log_softmax(z)_k is softmax(z) - p, here over B = 4 samples: also
    # where softmax(z) is far below 1e-7, which a clipped log would give no gradient.
    expected = (softmax(logits[0]) - p_other) / 4
    assert (softmax(logits[0]) < 1e-7).any()
    np.testing.assert_allclose(gradient, expected, atol=1e-6)


def test_distance_mutual_loss_matches_formula():
    rng = np.random.default_rng(7)
    distances = rng.random((3, 4, 4))
    loss = distance_mutual_loss(
        tf.constant(distances[0]), [tf.constant(distances[1]), tf.constant(distances[2])]
    )
    expected = (
        ((distances[0] - distances[1]) ** 2).sum() + ((distances[0] - distances[2]) ** 2).sum()
    ) / (2 * 4 * 4)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_mutual_losses_treat_other_models_as_constants():
    mine = tf.Variable([[0.2, 0.8], [0.6, 0.4]])
    other = tf.Variable([[0.5, 0.5], [0.3, 0.7]])
    with tf.GradientTape(persistent=True) as tape:
        probability_loss = probability_mutual_loss(mine, [other])
        distance_loss = distance_mutual_loss(mine, [other])
    for loss in (probability_loss, distance_loss):
        assert tape.gradient(loss, other) is None
        assert np.abs(tape.gradient(loss, mine).numpy()).sum() > 0


def test_mutual_losses_need_another_model():
    with pytest.raises(ValueError, match="other model"):
        distance_mutual_loss(tf.ones((2, 2)), [])


def test_normalize_features_gives_unit_stripes():
    rng = np.random.default_rng(8)
    features = rng.standard_normal((3, 4, 5)).astype(np.float32)
    normalised = normalize_features(tf.constant(features)).numpy()
    np.testing.assert_allclose(np.linalg.norm(normalised, axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        normalised, features / np.linalg.norm(features, axis=-1, keepdims=True), rtol=1e-6
    )
