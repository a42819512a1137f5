"""The model trains under Keras mixed precision, with losses and embeddings kept in float32."""

import numpy as np
import pytest

from applications.core.backend import keras, tf
from applications.model import build_flipreid_models
from applications.training import fit_in_stages


@pytest.fixture
def mixed_precision_policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    "mixed_precision_policy", ["mixed_bfloat16", "mixed_float16"], indirect=True
)
def test_staged_training_under_mixed_precision(mixed_precision_policy):
    keras.utils.set_random_seed(0)
    training_model, inference_model = build_flipreid_models(
        "resnet18", 64, 32, 4, min_value=0.0, max_value=1.0
    )
    training_model.compile(keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 64, 32, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 2).astype(np.int32)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    history = fit_in_stages(
        training_model,
        dataset,
        steps_per_epoch=1,
        epoch_num=2,
        freeze_backbone_for_N_epochs=1,
        verbose=0,
    )
    for name in ("loss", "triplet_loss", "cross_entropy_loss", "flipping_loss"):
        assert len(history[name]) == 2 and np.isfinite(history[name]).all(), name
    embeddings = inference_model(images, training=False)
    assert embeddings.dtype == tf.float32
    assert np.isfinite(embeddings.numpy()).all()
