"""The fused Adam update against a plain NumPy Adam loop and against tf_keras's own optimizers."""

import numpy as np
import pytest

from applications.core.backend import keras, tf
from applications.optimizers import FusedAdam, FusedAdamW


def numpy_adam(weights, gradients, learning_rate, weight_decay=0.0):
    """Adam (and AdamW's decoupled decay, applied first) written out step by step, float64."""
    beta_1, beta_2, epsilon = 0.9, 0.999, 1e-7
    weights = [w.astype(np.float64) for w in weights]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for step, step_gradients in enumerate(gradients, start=1):
        alpha = learning_rate * np.sqrt(1 - beta_2**step) / (1 - beta_1**step)
        for index, gradient in enumerate(step_gradients):
            weights[index] -= weights[index] * weight_decay * learning_rate
            m[index] += (gradient - m[index]) * (1 - beta_1)
            v[index] += (gradient**2 - v[index]) * (1 - beta_2)
            weights[index] -= alpha * m[index] / (np.sqrt(v[index]) + epsilon)
    return weights


def _train(optimizer, weights, gradients):
    variables = [tf.Variable(w) for w in weights]
    step = tf.function(lambda grads: optimizer.apply_gradients(zip(grads, variables)))
    for step_gradients in gradients:
        step([tf.constant(g) for g in step_gradients])
    return [v.numpy() for v in variables], variables


def _problem(seed=0, steps=5):
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)]
    gradients = [
        [rng.normal(size=w.shape).astype(np.float32) for w in weights] for _ in range(steps)
    ]
    return weights, gradients


@pytest.mark.parametrize(
    "fused, plain, weight_decay",
    [(FusedAdam, keras.optimizers.Adam, 0.0), (FusedAdamW, keras.optimizers.AdamW, 0.05)],
)
def test_fused_update_equals_the_formula_and_tf_keras(fused, plain, weight_decay):
    weights, gradients = _problem()
    options = {"weight_decay": weight_decay} if weight_decay else {}
    fused_optimizer = fused(learning_rate=0.01, **options)
    fused_weights, _ = _train(fused_optimizer, weights, gradients)
    plain_weights, _ = _train(plain(learning_rate=0.01, **options), weights, gradients)
    reference = numpy_adam(weights, gradients, 0.01, weight_decay)
    for got, tf_keras_weights, expected in zip(fused_weights, plain_weights, reference):
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
        np.testing.assert_allclose(got, tf_keras_weights, rtol=0, atol=1e-6)
    assert int(fused_optimizer.iterations) == len(gradients)


def test_the_traced_step_runs_one_fused_kernel_per_variable():
    weights, gradients = _problem()
    optimizer = FusedAdam(learning_rate=0.01)
    variables = [tf.Variable(w) for w in weights]
    step = tf.function(lambda grads: optimizer.apply_gradients(zip(grads, variables)))
    graph = step.get_concrete_function([tf.constant(g) for g in gradients[0]]).graph
    op_types = [op.type for op in graph.get_operations()]
    assert op_types.count("ResourceApplyAdam") == len(variables)
    assert op_types.count("Pow") == 2  # the bias corrections, once per step


def test_two_calls_in_one_graph_use_their_own_step():
    """The bias corrections of each apply_gradients call, even inside one tf.function."""
    weights, gradients = _problem(seed=1, steps=4)
    optimizer = FusedAdam(learning_rate=0.01)
    variables = [tf.Variable(w) for w in weights]

    @tf.function
    def two_steps(first, second):
        optimizer.apply_gradients(zip(first, variables))
        optimizer.apply_gradients(zip(second, variables))

    for first, second in zip(gradients[0::2], gradients[1::2]):
        two_steps([tf.constant(g) for g in first], [tf.constant(g) for g in second])
    for got, expected in zip(variables, numpy_adam(weights, gradients, 0.01)):
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=2e-6)


def test_a_tf_keras_adam_checkpoint_restores_into_the_fused_optimizer(tmp_path):
    """Runs saved before the fused update resume with their moments."""
    weights, gradients = _problem(seed=2, steps=3)
    plain_optimizer = keras.optimizers.Adam(learning_rate=0.01)
    _, plain_variables = _train(plain_optimizer, weights, gradients[:2])
    prefix = tf.train.Checkpoint(optimizer=plain_optimizer, variables=plain_variables).save(
        str(tmp_path / "checkpoint")
    )
    fused_optimizer = FusedAdam(learning_rate=0.01)
    fused_variables = [tf.Variable(np.zeros_like(w)) for w in weights]
    fused_optimizer.build(fused_variables)
    tf.train.Checkpoint(optimizer=fused_optimizer, variables=fused_variables).restore(
        prefix
    ).assert_consumed()
    assert int(fused_optimizer.iterations) == 2
    for restored, saved in zip(fused_optimizer._momentums, plain_optimizer._momentums):
        np.testing.assert_array_equal(restored.numpy(), saved.numpy())
