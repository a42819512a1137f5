"""The one weight-loading fallback: into the training model, or else the inference model."""

import numpy as np
import pytest

from applications.core.backend import keras
from applications.weights import load_weights_into_either


def _models(seed, num_identities=3):
    """A tiny inference model and a training model around it (a classifier on top)."""
    keras.utils.set_random_seed(seed)
    images = keras.Input((4, 2, 3))
    embedding = keras.layers.Dense(5, name="embedding")(keras.layers.Flatten()(images))
    inference_model = keras.Model(images, embedding, name="inference_model")
    logits = keras.layers.Dense(num_identities, name="classifier")(embedding)
    training_model = keras.Model(images, [embedding, logits], name="training_model")
    return training_model, inference_model


def _assert_same_weights(model, reference):
    for weight, expected in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(weight, expected)


def test_each_kind_of_file_loads_into_the_model_it_fits(tmp_path):
    saved_training, saved_inference = _models(seed=0)
    saved_training.save_weights(str(tmp_path / "training_model.h5"))
    saved_inference.save_weights(str(tmp_path / "inference_model.h5"))

    training_model, inference_model = _models(seed=1)
    loaded = load_weights_into_either(
        training_model, inference_model, str(tmp_path / "training_model.h5")
    )
    assert loaded == "training model"
    _assert_same_weights(training_model, saved_training)

    # Another number of identities: only the inference model's weights fit, and they load.
    training_model, inference_model = _models(seed=2, num_identities=7)
    loaded = load_weights_into_either(
        training_model, inference_model, str(tmp_path / "inference_model.h5")
    )
    assert loaded == "inference model"
    _assert_same_weights(inference_model, saved_inference)


def test_a_file_of_neither_model_gives_the_training_models_reason(tmp_path):
    keras.utils.set_random_seed(0)
    images = keras.Input((4, 2, 3))
    other = keras.Model(images, keras.layers.Dense(9)(keras.layers.Flatten()(images)))
    other.save_weights(str(tmp_path / "other.h5"))
    training_model, inference_model = _models(seed=1)
    with pytest.raises(ValueError, match="does not fit this training_model model"):
        load_weights_into_either(training_model, inference_model, str(tmp_path / "other.h5"))
