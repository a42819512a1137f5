"""Models, losses and learning-rate rules of the FlipReID system.

Import `applications.backend` (or this package) before TensorFlow: it selects legacy Keras.
"""

from applications import backend  # noqa: F401  (must run before TensorFlow is imported)
