"""The one place that selects legacy Keras (tf_keras) for TensorFlow.

tf2cv's models only build under legacy Keras, and TensorFlow reads ``TF_USE_LEGACY_KERAS`` once,
when it is first imported. Every module of this project that needs TensorFlow imports ``tf`` and
``keras`` from here, and every entry point (``solution.py``, ``tests/conftest.py``, the
benchmarks) imports this module before anything else, so the variable is always set in time.
"""

import os
import sys

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise RuntimeError(
        "TensorFlow was imported before applications.backend, so it uses Keras 3 and tf2cv "
        "models cannot be built. Import applications.backend first, or set "
        "TF_USE_LEGACY_KERAS=1 in the environment before starting Python."
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow 2.21's pip build leaves its oneDNN CPU kernels off unless asked; on our 2-core
# machines FlipReID training steps run 2-3x faster with them, and up to 7x at 64x32 pixels
# (benchmarks/bench_training.py --compare_onednn).
# setdefault: a user who sets the variable keeps their choice.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) is not for the user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras"]
