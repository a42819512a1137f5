"""Test-wide set-up: legacy Keras must be selected before any test imports TensorFlow."""

import applications.core.backend  # noqa: F401
