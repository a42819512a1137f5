"""The tiny run configuration that end-to-end tests share (resnet18 at 64x32 on a small Synthetic).

Tests override what they are about: `tiny_config(epoch_num=2, ...)` or
`build_experiment_config(**TINY_RUN_SETTINGS, ...)`.
"""

from applications.config import build_experiment_config

# 12 identities x 2 cameras x 4 images; batches of 3 identities x 2 images.
TINY_RUN_SETTINGS = dict(
    dataset_name="Synthetic",
    synthetic_identity_num=12,
    synthetic_camera_num=2,
    synthetic_image_num_per_identity=4,
    backbone_model_name="resnet18",
    image_height=64,
    image_width=32,
    identity_num_per_batch=3,
    image_num_per_identity=2,
    testing_batch_size=16,
    # The FlipReID structure, off by default under random_init since issue 20: these runs keep
    # exercising it end to end (the demo's tests run the default).
    use_horizontal_flipping_inside_model=True,
)


def tiny_config(**values):
    """An ExperimentConfig of TINY_RUN_SETTINGS with `values` (flag names) overriding them."""
    return build_experiment_config(**{**TINY_RUN_SETTINGS, **values})
