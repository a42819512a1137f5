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
        "TensorFlow was imported before applications.core.backend, so it uses Keras 3 and tf2cv "
        "models cannot be built. Import applications.core.backend first, or set "
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

import logging  # noqa: E402

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras", "quiet_library_info_logs"]

# TensorFlow and tf_keras log through absl at INFO level from their Python code too (e.g.
# "Sharding callback duration" at every checkpoint write), which lands between the progress bars.
_LIBRARY_FOLDER_PATHS = tuple(
    os.path.dirname(os.path.abspath(module.__file__)) + os.sep for module in (tf, keras)
)


class _LibraryInfoFilter(logging.Filter):
    """Drops records below WARNING that TensorFlow's or tf_keras's own files emit."""

    def filter(self, record):
        if record.levelno >= logging.WARNING:
            return True
        return not os.path.abspath(record.pathname).startswith(_LIBRARY_FOLDER_PATHS)


def quiet_library_info_logs(logger=None):
    """Hides TensorFlow's and tf_keras's INFO/DEBUG log lines; this project's own lines stay.

    Entry points call it unless the user asked for a log level (``--verbosity``).

    Args:
        logger: logging.Logger whose handlers get the filter; None: absl's logger.
    """
    if logger is None:
        from absl import logging as absl_logging

        logger = absl_logging.get_absl_logger()
    if not any(isinstance(f, _LibraryInfoFilter) for f in logger.filters):
        logger.addFilter(_LibraryInfoFilter())
