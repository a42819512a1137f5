"""The FlipReID model on resnet18 with 64x32 images and random weights."""

import numpy as np
import pytest

from applications.core.backend import keras, tf
from applications.model import LOGGED_NAMES, build_flipreid_models, load_model_weights

IMAGE_HEIGHT, IMAGE_WIDTH, NUM_IDENTITIES = 64, 32, 4


def build(**kwargs):
    return build_flipreid_models("resnet18", IMAGE_HEIGHT, IMAGE_WIDTH, NUM_IDENTITIES, **kwargs)


def random_batch(seed=0, batch_size=8):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(batch_size, IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(batch_size // 2), 2).astype(np.int32) % NUM_IDENTITIES
    return images, labels


@pytest.fixture(scope="module")
def flip_models():
    # FlipReID's L2 factors, so that the regularization test has a penalty to check.
    factors = {
        f"{name}_regularization_factor": 0.0005 for name in ("kernel", "bias", "gamma", "beta")
    }
    return build(**factors)


@pytest.fixture(scope="module")
def no_flip_models():
    return build(use_horizontal_flipping_inside_model=False)


def test_inference_model_outputs_float32_concatenated_embedding(flip_models):
    training_model, inference_model = flip_models
    images, _ = random_batch()
    embedding = inference_model(images, training=False)
    branch_embeddings = training_model.branch_network(images, training=False)
    # Global branch 512 + two stripes of 512 / 2 after the regional reduction.
    assert embedding.dtype == tf.float32
    assert embedding.shape == (8, 512 + 2 * 256)
    np.testing.assert_allclose(
        embedding.numpy(), np.concatenate([b.numpy() for b in branch_embeddings], axis=1)
    )
    # uint8 and float inputs in [0, 255] give the same embedding.
    np.testing.assert_allclose(
        inference_model(images.astype(np.float32), training=False).numpy(),
        embedding.numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_flip_branch_shares_weights(flip_models, no_flip_models):
    flip_training_model, _ = flip_models
    no_flip_training_model, _ = no_flip_models
    assert len(flip_training_model.trainable_variables) == len(
        no_flip_training_model.trainable_variables
    )
    assert len(flip_training_model.weights) == len(no_flip_training_model.weights)


def test_flip_averaged_embeddings_equal_inference_on_image_and_flip(flip_models):
    training_model, _ = flip_models
    images, _ = random_batch(seed=1)
    averaged, flipping_losses = training_model.compute_branch_embeddings(images, training=False)
    original = training_model.branch_network(images, training=False)
    flipped = training_model.branch_network(
        np.ascontiguousarray(images[:, :, ::-1]), training=False
    )
    assert len(averaged) == len(flipping_losses) == 3
    for branch_average, branch_original, branch_flipped, branch_loss in zip(
        averaged, original, flipped, flipping_losses, strict=True
    ):
        np.testing.assert_allclose(
            branch_average.numpy(),
            (branch_original.numpy() + branch_flipped.numpy()) / 2,
            rtol=1e-4,
            atol=1e-5,
        )
        np.testing.assert_allclose(
            branch_loss.numpy(),
            np.mean((branch_original.numpy() - branch_flipped.numpy()) ** 2),
            rtol=1e-3,
            atol=1e-7,
        )


def test_fit_logs_every_name_and_regularization_matches_manual_sum(flip_models):
    training_model, _ = flip_models
    training_model.compile(keras.optimizers.Adam(1e-4), label_smoothing=0.1)
    images, labels = random_batch(seed=2)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat(2)
    history = training_model.fit(dataset, epochs=1, verbose=0).history
    assert set(history) == set(LOGGED_NAMES)
    for name in LOGGED_NAMES:
        assert np.isfinite(history[name][0])
    assert history["flipping_loss"][0] > 0
    assert 0.0 <= history["accuracy"][0] <= 1.0
    manual = sum(
        0.0005 * float(np.sum(variable.numpy().astype(np.float64) ** 2))
        for variable in training_model.weights
        if variable.trainable
        and variable.name.split("/")[-1].split(":")[0] in ("kernel", "bias", "gamma", "beta")
    )
    np.testing.assert_allclose(training_model.regularization_loss().numpy(), manual, rtol=1e-4)
    assert set(training_model.gem_power_values()) == {
        "global_pooling",
        "region1_pooling",
        "region2_pooling",
    }


def test_freezing_the_backbone_keeps_its_weights_and_the_optimizer_state(flip_models):
    training_model, _ = flip_models
    training_model.compile(keras.optimizers.Adam(1e-3))
    dataset = tf.data.Dataset.from_tensors(random_batch(seed=3)).repeat(1)
    trunk = training_model.branch_network.get_layer("trunk")
    regional_stage = training_model.branch_network.get_layer("last_stage_regional")
    heads = training_model.classification_heads
    all_trainable = len(training_model.trainable_variables)

    training_model.set_backbone_trainable(False)
    assert len(training_model.trainable_variables) < all_trainable
    frozen_before = [v.numpy() for v in trunk.weights + regional_stage.weights]
    heads_before = [v.numpy() for v in heads.trainable_weights]
    training_model.fit(dataset, epochs=1, verbose=0)
    for before, variable in zip(frozen_before, trunk.weights + regional_stage.weights, strict=True):
        np.testing.assert_array_equal(before, variable.numpy())
    assert any(
        not np.array_equal(before, variable.numpy())
        for before, variable in zip(heads_before, heads.trainable_weights, strict=True)
    )

    training_model.set_backbone_trainable(True)
    assert len(training_model.trainable_variables) == all_trainable
    trunk_before = [v.numpy() for v in trunk.trainable_weights]
    training_model.fit(dataset, epochs=1, verbose=0)
    assert training_model.optimizer.iterations.numpy() == 2
    assert any(
        not np.array_equal(before, variable.numpy())
        for before, variable in zip(trunk_before, trunk.trainable_weights, strict=True)
    )


def test_h5_weights_round_trip_into_a_fresh_model(flip_models, no_flip_models, tmp_path):
    training_model, inference_model = flip_models
    fresh_training_model, fresh_inference_model = no_flip_models
    images, _ = random_batch(seed=4)
    file_path = str(tmp_path / "weights.h5")
    training_model.save_weights(file_path)
    assert not np.allclose(
        inference_model(images, training=False).numpy(),
        fresh_inference_model(images, training=False).numpy(),
    )
    load_model_weights(fresh_training_model, file_path)
    np.testing.assert_array_equal(
        inference_model(images, training=False).numpy(),
        fresh_inference_model(images, training=False).numpy(),
    )


def test_mismatched_weights_file_raises_value_error(flip_models, tmp_path):
    training_model, _ = flip_models
    file_path = str(tmp_path / "weights.h5")
    training_model.save_weights(file_path)
    other_training_model, _ = build_flipreid_models(
        "resnet18", IMAGE_HEIGHT, IMAGE_WIDTH, NUM_IDENTITIES + 1, pooling_mode="Average"
    )
    with pytest.raises(ValueError, match="weights.h5.*backbone_name, region_num, pooling_mode"):
        load_model_weights(other_training_model, file_path)
    with pytest.raises(FileNotFoundError):
        load_model_weights(other_training_model, str(tmp_path / "missing.h5"))


@pytest.mark.parametrize(
    "region_num, expected_branches", [(0, ["global"]), (1, ["global", "region1"])]
)
def test_every_region_num_trains_evaluates_saves_and_reloads(
    region_num, expected_branches, tmp_path
):
    """region_num 0 (global only) returns single tensors from Keras; 1 gives one stripe."""
    training_model, inference_model = build(region_num=region_num)
    training_model.compile(keras.optimizers.Adam(1e-4))
    images, labels = random_batch(seed=5)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat(2)
    history = training_model.fit(dataset, epochs=1, verbose=0).history
    for name in LOGGED_NAMES:
        assert np.isfinite(history[name][0])
    assert history["flipping_loss"][0] > 0
    assert sorted(training_model.gem_power_values()) == sorted(
        f"{branch}_pooling" for branch in expected_branches
    )
    outputs = training_model(images, training=False)
    assert len(outputs["branch_embeddings"]) == len(outputs["probabilities"]) == region_num + 1
    embedding = inference_model(images, training=False).numpy()
    # The global branch's 512 dimensions, plus 512 from the one stripe when region_num is 1.
    assert embedding.shape == (8, 512 * len(expected_branches))

    training_file_path = str(tmp_path / "training_model.h5")
    inference_file_path = str(tmp_path / "inference_model.h5")
    training_model.save_weights(training_file_path)
    inference_model.save_weights(inference_file_path)
    for file_path in (training_file_path, inference_file_path):
        fresh_training_model, fresh_inference_model = build(region_num=region_num)
        target = fresh_training_model if file_path == training_file_path else fresh_inference_model
        load_model_weights(target, file_path)
        np.testing.assert_array_equal(
            fresh_inference_model(images, training=False).numpy(), embedding
        )


@pytest.mark.parametrize("flip_batch_norm_mode", ["shared", "separate"])
def test_flip_batch_norm_mode_matches_its_reference_in_training_mode(flip_batch_norm_mode):
    # Training mode: batch statistics. "shared" is one call on the 2B batch of images and
    # flips, "separate" two calls of B (FlipReID's two calls of its inference model).
    keras.utils.set_random_seed(0)
    training_model, _ = build(region_num=0, flip_batch_norm_mode=flip_batch_norm_mode)
    images, _ = random_batch()
    flipped = images[:, :, ::-1, :]
    network = training_model.branch_network
    embeddings, flipping_losses = training_model.compute_branch_embeddings(images, training=True)
    if flip_batch_norm_mode == "shared":
        both = network(np.concatenate([images, flipped]).astype(np.float32), training=True)
        original, mirrored = np.split(both.numpy(), 2)
    else:
        original = network(images.astype(np.float32), training=True).numpy()
        mirrored = network(flipped.astype(np.float32), training=True).numpy()
    np.testing.assert_allclose(embeddings[0].numpy(), (original + mirrored) / 2, atol=1e-5)
    np.testing.assert_allclose(
        flipping_losses[0].numpy(), np.mean((original - mirrored) ** 2), rtol=1e-4, atol=1e-7
    )
    # Inference mode has no batch statistics: both modes give the plain per-image average.
    embeddings, _ = training_model.compute_branch_embeddings(images, training=False)
    expected = (
        network(images.astype(np.float32), training=False).numpy()
        + network(flipped.astype(np.float32), training=False).numpy()
    ) / 2
    np.testing.assert_allclose(embeddings[0].numpy(), expected, atol=1e-5)


def test_flip_batch_norm_modes_differ_in_training_mode_only():
    images, _ = random_batch()
    outputs = {}
    for mode in ("shared", "separate"):
        keras.utils.set_random_seed(0)
        training_model, _ = build(region_num=0, flip_batch_norm_mode=mode)
        # Inference mode first: a training-mode call moves the moving averages (once per
        # pass), which inference mode then reads.
        outputs[mode] = [
            training_model.compute_branch_embeddings(images, training=training)[0][0].numpy()
            for training in (False, True)
        ]
    np.testing.assert_allclose(outputs["shared"][0], outputs["separate"][0], atol=1e-6)
    # The flips' statistics differ from the originals' (a convolution does not commute with
    # the flip), so pooling them changes the training-mode embeddings.
    assert np.abs(outputs["shared"][1] - outputs["separate"][1]).max() > 1e-4


def test_unknown_flip_batch_norm_mode_is_refused():
    with pytest.raises(ValueError, match="flip_batch_norm_mode must be one of shared, separate"):
        build(region_num=0, flip_batch_norm_mode="per_pass")
