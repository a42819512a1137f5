"""Losses against plain loop-based NumPy references on random points."""

import numpy as np
import pytest

from applications.core.backend import tf
from applications.losses import (
    batch_hard_triplet_loss,
    cross_entropy_loss,
    flipping_loss,
    l2_regularization_loss,
    pairwise_euclidean_distances,
)


def reference_batch_hard_triplet_loss(embeddings, labels, margin):
    num_samples = len(embeddings)
    losses = []
    for anchor in range(num_samples):
        hardest_positive, hardest_negative = 0.0, np.inf
        for other in range(num_samples):
            distance = np.sqrt(np.sum((embeddings[anchor] - embeddings[other]) ** 2))
            if labels[other] == labels[anchor]:
                hardest_positive = max(hardest_positive, distance)
            else:
                hardest_negative = min(hardest_negative, distance)
        difference = hardest_positive - hardest_negative
        if margin is None:
            losses.append(np.log1p(np.exp(difference)))
        else:
            losses.append(max(difference + margin, 0.0))
    return np.mean(losses)


@pytest.mark.parametrize("margin", [None, 0.3, 2.0])
def test_batch_hard_triplet_loss_matches_loop_reference(margin):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(12, 5)).astype(np.float32)
    labels = np.repeat(np.arange(4), 3)
    rng.shuffle(labels)
    expected = reference_batch_hard_triplet_loss(embeddings, labels, margin)
    actual = batch_hard_triplet_loss(embeddings, labels, margin=margin).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_batch_hard_triplet_loss_gradient_is_finite_with_duplicate_points():
    embeddings = tf.Variable(np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [3.0, 1.0]], np.float32))
    labels = tf.constant([0, 0, 1, 1])
    with tf.GradientTape() as tape:
        loss = batch_hard_triplet_loss(embeddings, labels)
    gradient = tape.gradient(loss, embeddings).numpy()
    assert np.all(np.isfinite(gradient))
    assert np.any(gradient != 0.0)


def test_pairwise_distances_match_loop_reference():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(6, 4)).astype(np.float32)
    expected = np.array([[np.linalg.norm(a - b) for b in embeddings] for a in embeddings])
    np.testing.assert_allclose(
        pairwise_euclidean_distances(embeddings).numpy(), expected, rtol=1e-5, atol=1e-5
    )


def test_flipping_loss_is_mean_squared_error():
    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(5, 7)).astype(np.float32)
    flipped = rng.normal(size=(5, 7)).astype(np.float32)
    expected = np.mean([np.mean((embeddings[i] - flipped[i]) ** 2) for i in range(5)])
    np.testing.assert_allclose(flipping_loss(embeddings, flipped).numpy(), expected, rtol=1e-6)


def reference_cross_entropy(labels, probabilities, label_smoothing):
    num_classes = probabilities.shape[1]
    losses = []
    for label, row in zip(labels, probabilities, strict=True):
        loss = 0.0
        for class_index in range(num_classes):
            target = label_smoothing / num_classes + (1 - label_smoothing) * (class_index == label)
            loss -= target * np.log(max(row[class_index], 1e-7))
        losses.append(loss)
    return np.mean(losses)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.5])
def test_cross_entropy_matches_loop_reference(label_smoothing):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(8, 6)).astype(np.float32) * 3
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 6, size=8)
    expected = reference_cross_entropy(labels, probabilities, label_smoothing)
    from_probabilities = cross_entropy_loss(labels, probabilities, label_smoothing).numpy()
    from_logits = cross_entropy_loss(labels, logits, label_smoothing, from_logits=True).numpy()
    np.testing.assert_allclose(from_probabilities, expected, rtol=1e-5)
    np.testing.assert_allclose(from_logits, expected, rtol=1e-5)


def test_losses_return_float32_for_bfloat16_inputs():
    embeddings = tf.cast(tf.random.normal((4, 3)), tf.bfloat16)
    labels = tf.constant([0, 0, 1, 1])
    assert batch_hard_triplet_loss(embeddings, labels).dtype == tf.float32
    assert flipping_loss(embeddings, embeddings).dtype == tf.float32
    assert cross_entropy_loss(labels, tf.nn.softmax(embeddings)).dtype == tf.float32


def test_l2_regularization_loss_is_weighted_sum_of_squares():
    first = tf.Variable([[1.0, -2.0]])
    second = tf.Variable([3.0])
    loss = l2_regularization_loss([(first, 0.5), (second, 0.1)]).numpy()
    np.testing.assert_allclose(loss, 0.5 * 5.0 + 0.1 * 9.0, rtol=1e-6)
