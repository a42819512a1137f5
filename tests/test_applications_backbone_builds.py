"""Every registered backbone builds into a FlipReID model and embeds images (random weights)."""

import numpy as np
import pytest

from applications.backbones import BACKBONE_MODEL_NAMES
from applications.model import build_flipreid_models

# Channels of the last stage: the embedding is the global branch (C) plus region_num stripes of
# C / region_num each, so 2 * C in all.
# Basic-block depths have 512 channels in the last stage; the bottleneck networks 2048.
BASIC_BLOCK_BACKBONES = ("resnet10", "resnet12", "resnet14", "resnet16", "resnet18", "resnet26",
                         "resnet34", "resnesta18")  # fmt: skip
LAST_STAGE_CHANNELS = {
    name: 512 if name in BASIC_BLOCK_BACKBONES else 2048 for name in BACKBONE_MODEL_NAMES
}


# FlipReID's README backbones and the demo's; one deeper one (slow) for the other depths, whose
# trunk and last stage are checked in test_applications_backbones.py.
@pytest.mark.parametrize(
    "backbone_name",
    [
        "resnet18",
        "resnet50",
        "ibn_resnet50",
        "resnesta50",
        pytest.param("resnesta101", marks=pytest.mark.slow),
    ],
)
def test_backbone_builds_and_embeds(backbone_name):
    _, inference_model = build_flipreid_models(
        backbone_name, 64, 32, 3, region_num=2, min_value=0.0, max_value=1.0
    )
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 32, 3), dtype=np.uint8)
    embeddings = inference_model(images, training=False).numpy()
    assert embeddings.shape == (2, 2 * LAST_STAGE_CHANNELS[backbone_name])
    assert np.isfinite(embeddings).all()
    assert embeddings.min() >= 0.0 and embeddings.max() <= 1.0
