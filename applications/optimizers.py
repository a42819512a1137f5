"""The optimizer of a run and the L2 factors its model is built with, by regularization mode."""

import weakref

from applications.core.backend import keras, tf

REGULARIZATION_FACTOR_NAMES = (
    "kernel_regularization_factor",
    "bias_regularization_factor",
    "gamma_regularization_factor",
    "beta_regularization_factor",
)


class _FusedAdamUpdate:
    """Adam's dense float32 update as one ResourceApplyAdam kernel per variable.

    tf_keras's Adam writes the update as about 20 small ops per variable, its scalars (the bias
    corrections) recomputed for each one: on a CPU that measured 39 ms a step for resnet18's 22M
    weights against 16 ms for one fused kernel per variable with the scalars computed once,
    about a tenth of a bfloat16 training step at batch 16. The update is the same formula
    (m += (g - m)(1 - beta_1); v += (g^2 - v)(1 - beta_2); w -= alpha m / (sqrt(v) + epsilon),
    alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)); the kernel rounds differently in the last
    bit (3.6e-7 after four steps). Sparse gradients, amsgrad, non-float32 variables, XLA and
    eager execution keep tf_keras's own update.
    """

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        # The scalars belong to this step: never reuse those of an earlier call in one graph.
        self._fused_scalars = weakref.WeakKeyDictionary()
        return super().apply_gradients(grads_and_vars, *args, **kwargs)

    def _step_scalars(self, device):
        """(lr, beta_1^t, beta_2^t) as float32 tensors, once per graph and device per step."""
        graph = tf.compat.v1.get_default_graph()
        per_graph = self._fused_scalars.setdefault(graph, {})
        if device not in per_graph:
            local_step = tf.cast(self.iterations + 1, tf.float32)
            per_graph[device] = (
                tf.cast(self.learning_rate, tf.float32),
                tf.pow(tf.cast(self.beta_1, tf.float32), local_step),
                tf.pow(tf.cast(self.beta_2, tf.float32), local_step),
            )
        return per_graph[device]

    def update_step(self, gradient, variable):
        if (
            tf.executing_eagerly()
            or self.jit_compile
            or self.amsgrad
            or getattr(self, "adaptive_epsilon", False)
            or isinstance(gradient, tf.IndexedSlices)
            or variable.dtype != tf.float32
            or not hasattr(self, "_fused_scalars")
        ):
            return super().update_step(gradient, variable)
        learning_rate, beta_1_power, beta_2_power = self._step_scalars(variable.device)
        index = self._index_dict[self._var_key(variable)]
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=beta_1_power,
            beta2_power=beta_2_power,
            lr=learning_rate,
            beta1=tf.cast(self.beta_1, tf.float32),
            beta2=tf.cast(self.beta_2, tf.float32),
            epsilon=tf.cast(self.epsilon, tf.float32),
            grad=gradient,
            use_locking=False,
        )


class FusedAdam(_FusedAdamUpdate, keras.optimizers.Adam):
    """keras.optimizers.Adam with the fused update of _FusedAdamUpdate (same slots)."""


class FusedAdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """keras.optimizers.AdamW with the fused update of _FusedAdamUpdate (same slots)."""


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
        return dict(factors), FusedAdam()
    zeros = {name: 0.0 for name in REGULARIZATION_FACTOR_NAMES}
    if regularization_mode == "decoupled":
        weight_decay = factors["kernel_regularization_factor"]
        return zeros, FusedAdamW(weight_decay=weight_decay)
    if regularization_mode == "none":
        return zeros, FusedAdam()
    raise ValueError(
        f"Unknown regularization_mode {regularization_mode!r}; valid names: l2, decoupled, none."
    )
