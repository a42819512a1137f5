"""The local branch in the FlipReID model and deep mutual learning of two models.

resnet18, 64x32 images (a 4 x 2 feature map with last stride 1), random weights.
"""

import numpy as np
import pytest

from applications.aligned_losses import (
    batch_local_distances,
    distance_mutual_loss,
    local_triplet_loss,
)
from applications.core.backend import keras, tf
from applications.losses import pairwise_euclidean_distances
from applications.model import LOGGED_NAMES, build_flipreid_models, load_model_weights
from applications.mutual_learning import (
    MUTUAL_LOSS_NAMES,
    build_mutual_learning_models,
    compute_mutual_losses,
    softmax_logits,
)
from tests.test_applications_aligned_losses import numpy_kl_mutual_loss, softmax

# Building four resnet18 models takes most of a minute on a 2-core CPU.
pytestmark = pytest.mark.slow

IMAGE_HEIGHT, IMAGE_WIDTH, NUM_IDENTITIES, LOCAL_DIM = 64, 32, 4, 16


def model_options(**overrides):
    options = dict(
        backbone_name="resnet18",
        image_height=IMAGE_HEIGHT,
        image_width=IMAGE_WIDTH,
        num_identities=NUM_IDENTITIES,
        region_num=1,
        use_local_branch=True,
        local_feature_dim=LOCAL_DIM,
    )
    options.update(overrides)
    return options


def random_batch(seed=0, batch_size=8):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(batch_size, IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(batch_size // 2), 2).astype(np.int32) % NUM_IDENTITIES
    return images, labels


@pytest.fixture(scope="module")
def local_models():
    keras.utils.set_random_seed(1)
    return build_flipreid_models(**model_options())


@pytest.fixture(scope="module")
def mutual_models():
    keras.utils.set_random_seed(2)
    return build_mutual_learning_models(2, build_flipreid_models, **model_options(region_num=0))


def test_local_branch_is_an_extra_output(local_models):
    training_model, inference_model = local_models
    images, _ = random_batch()
    embedding, local_features = inference_model(images, training=False)
    assert embedding.shape == (8, 512 + 512)
    # Height 64 / 16 = 4 stripes with last stride 1.
    assert local_features.shape == (8, 4, LOCAL_DIM)
    assert local_features.dtype == tf.float32
    assert np.all(local_features.numpy() >= 0.0)  # after ReLU
    assert training_model.logged_names == LOGGED_NAMES + ("local_triplet_loss",)


def test_default_model_has_no_local_output():
    keras.utils.set_random_seed(3)
    training_model, inference_model = build_flipreid_models(
        **model_options(use_local_branch=False, region_num=0)
    )
    assert len(inference_model.outputs) == 1
    assert training_model.logged_names == LOGGED_NAMES
    assert not any("local" in layer.name for layer in training_model.branch_network.layers)


def test_local_features_are_flip_averaged(local_models):
    training_model, _ = local_models
    images, _ = random_batch(1)
    _, _, local_features = training_model.compute_branch_outputs(images, training=False)
    original = training_model.branch_network(images.astype(np.float32), training=False)[-1]
    flipped = training_model.branch_network(images[:, :, ::-1].astype(np.float32), training=False)[
        -1
    ]
    np.testing.assert_allclose(
        local_features.numpy(), (original.numpy() + flipped.numpy()) / 2, rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("own_hard_samples", [False, True])
def test_local_triplet_loss_enters_the_total(local_models, own_hard_samples):
    training_model, _ = local_models
    training_model.compile(
        keras.optimizers.Adam(),
        local_triplet_loss_weight=0.5,
        local_triplet_margin=0.3,
        local_distance_own_hard_samples=own_hard_samples,
    )
    images, labels = random_batch(2)
    values, outputs = training_model.compute_losses_and_outputs(images, labels, training=False)
    without_local = (
        values["triplet_loss"]
        + values["cross_entropy_loss"]
        + values["flipping_loss"]
        + values["regularization_loss"]
    )
    assert float(values["loss"]) == pytest.approx(
        float(without_local + 0.5 * values["local_triplet_loss"]), rel=1e-5
    )
    embeddings, _, local_features = training_model.compute_branch_outputs(images, training=False)
    expected = local_triplet_loss(
        local_features,
        labels,
        margin=0.3,
        global_distances=None if own_hard_samples else pairwise_euclidean_distances(embeddings[0]),
    )
    assert float(values["local_triplet_loss"]) == pytest.approx(float(expected), rel=1e-5)
    np.testing.assert_allclose(
        outputs["local_distances"].numpy(),
        batch_local_distances(local_features).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_local_branch_weights_round_trip(local_models, tmp_path):
    training_model, inference_model = local_models
    path = str(tmp_path / "inference_model.h5")
    inference_model.save_weights(path)
    keras.utils.set_random_seed(4)
    _, rebuilt = build_flipreid_models(**model_options())
    load_model_weights(rebuilt, path)
    images, _ = random_batch(3)
    for before, after in zip(inference_model(images), rebuilt(images)):
        np.testing.assert_allclose(before.numpy(), after.numpy(), rtol=1e-6)


def test_mutual_losses_match_their_definitions(mutual_models):
    mutual_model, _ = mutual_models
    images, labels = random_batch(4)
    outputs = [
        model.compute_losses_and_outputs(images, labels, training=False)[1]
        for model in mutual_model.training_models
    ]
    losses = compute_mutual_losses(outputs, 0)
    assert set(losses) == set(MUTUAL_LOSS_NAMES)
    logits = [softmax_logits(output["probabilities"][0]).numpy() for output in outputs]
    # The logits are those of the heads' softmax outputs.
    for output, model_logits in zip(outputs, logits):
        np.testing.assert_allclose(
            softmax(model_logits.astype(np.float64)), output["probabilities"][0], atol=1e-6
        )
    expected = {
        "probability_mutual_loss": numpy_kl_mutual_loss(
            logits[0].astype(np.float64), [logits[1].astype(np.float64)]
        ),
        "global_distance_mutual_loss": distance_mutual_loss(
            outputs[0]["distances"][0], [outputs[1]["distances"][0]]
        ),
        "local_distance_mutual_loss": distance_mutual_loss(
            outputs[0]["local_distances"], [outputs[1]["local_distances"]]
        ),
    }
    for name, value in expected.items():
        # The KL term of near-uniform untrained heads is ~4e-6: float32 rounding of its sum.
        assert float(losses[name]) == pytest.approx(float(value), rel=1e-6, abs=2e-8), name
    # The two models start from different weights, so they disagree.
    assert float(losses["global_distance_mutual_loss"]) > 0


def test_gradients_reach_every_model_and_mutual_terms_do_not_cross(mutual_models):
    mutual_model, _ = mutual_models
    mutual_model.compile(
        keras.optimizers.Adam(),
        probability_mutual_loss_weight=1.0,
        global_distance_mutual_loss_weight=1.0,
        local_distance_mutual_loss_weight=1.0,
        local_distance_own_hard_samples=True,
    )
    images, labels = random_batch(5)
    first, second = mutual_model.training_models
    with tf.GradientTape(persistent=True) as tape:
        values = mutual_model.compute_losses(images, labels, training=True)
    for model in (first, second):
        gradients = tape.gradient(values["loss"], model.trainable_variables)
        assert all(gradient is not None for gradient in gradients)
        assert sum(float(tf.reduce_sum(tf.abs(g))) for g in gradients) > 0
    # Model 2's loss, mutual terms included, sees model 1 only as a constant.
    assert all(g is None for g in tape.gradient(values["model_2_loss"], first.trainable_variables))
    assert any(
        g is not None for g in tape.gradient(values["model_2_loss"], second.trainable_variables)
    )
    for name in MUTUAL_LOSS_NAMES:
        mutual = values["model_1_" + name]
        assert all(g is None for g in tape.gradient(mutual, second.trainable_variables))
        assert any(g is not None for g in tape.gradient(mutual, first.trainable_variables))


@pytest.mark.parametrize(
    "settings, applied",
    [
        (dict(local_distance_own_hard_samples=True), True),
        (dict(local_distance_own_hard_samples=False), False),
        (dict(local_distance_own_hard_samples=True, local_triplet_loss_weight=0.0), False),
    ],
)
def test_local_distance_mutual_loss_only_with_own_hard_samples(mutual_models, settings, applied):
    # AlignedReID's train_ml.py: ldm_loss only with --local_dist_own_hard_sample and -llw > 0.
    mutual_model, _ = mutual_models
    mutual_model.compile(keras.optimizers.Adam(), local_distance_mutual_loss_weight=1.0, **settings)
    images, labels = random_batch(7)
    values = mutual_model.compute_losses(images, labels, training=False)
    local_distances = [
        batch_local_distances(model.compute_branch_outputs(images, training=False)[2])
        for model in mutual_model.training_models
    ]
    expected = distance_mutual_loss(local_distances[0], [local_distances[1]]) if applied else 0.0
    assert float(values["model_1_local_distance_mutual_loss"]) == pytest.approx(
        float(expected), rel=1e-5, abs=1e-7
    )
    if applied:
        assert float(expected) > 0
    mutual_model.compile(keras.optimizers.Adam(), local_distance_own_hard_samples=False)


def test_fit_step_logs_each_model(mutual_models):
    mutual_model, inference_models = mutual_models
    mutual_model.compile(keras.optimizers.Adam(1e-4), probability_mutual_loss_weight=1.0)
    images, labels = random_batch(6)
    before = [model(images)[0].numpy() for model in inference_models]
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    history = mutual_model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0).history
    for prefix in ("model_1_", "model_2_"):
        for name in ("loss", "local_triplet_loss", "probability_mutual_loss"):
            assert np.isfinite(history[prefix + name][0])
    assert history["loss"][0] == pytest.approx(
        history["model_1_loss"][0] + history["model_2_loss"][0], rel=1e-5
    )
    after = [model(images)[0].numpy() for model in inference_models]
    assert all(not np.allclose(b, a) for b, a in zip(before, after))
    mutual_model.set_backbone_trainable(False)
    assert not mutual_model.training_models[0].branch_network.get_layer("trunk").trainable
    mutual_model.set_backbone_trainable(True)


def test_one_model_is_not_mutual_learning():
    with pytest.raises(ValueError, match="model_num"):
        build_mutual_learning_models(1, build_flipreid_models, **model_options())
