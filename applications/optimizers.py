"""The optimizer of a run and the L2 factors its model is built with, by regularization mode."""

from applications.core.backend import keras

REGULARIZATION_FACTOR_NAMES = (
    "kernel_regularization_factor",
    "bias_regularization_factor",
    "gamma_regularization_factor",
    "beta_regularization_factor",
)


def regularization_settings(regularization_mode, **factors):
    """The model's L2 factors and the optimizer of a regularization mode.

    Args:
        regularization_mode: "l2" (FlipReID's L2 term in the loss, the four factors as given),
            "decoupled" (no L2 term; AdamW weight decay of kernel_regularization_factor) or
            "none".
        **factors: the four *_regularization_factor values by name.

    Returns:
        (dict of the four factors for build_flipreid_models, keras optimizer).
    """
    if regularization_mode == "l2":
        return dict(factors), keras.optimizers.Adam()
    zeros = {name: 0.0 for name in REGULARIZATION_FACTOR_NAMES}
    if regularization_mode == "decoupled":
        weight_decay = factors["kernel_regularization_factor"]
        return zeros, keras.optimizers.AdamW(weight_decay=weight_decay)
    if regularization_mode == "none":
        return zeros, keras.optimizers.Adam()
    raise ValueError(
        f"Unknown regularization_mode {regularization_mode!r}; valid names: l2, decoupled, none."
    )
