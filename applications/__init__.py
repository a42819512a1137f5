"""Models, losses, training, evaluation wiring and the experiment of the FlipReID system.

`applications.core` is the leaf every package may use (backend, registries, atomic files).
Modules that need TensorFlow import `tf` and `keras` from `applications.core.backend`, which
selects legacy Keras before TensorFlow loads. Importing this package alone loads no TensorFlow,
so the NumPy-only `evaluation` package can use `applications.core.registry`.
"""
