"""The leaf of the project: what every other package may use, importing no project module.

- `backend`: selects legacy Keras (tf_keras) before TensorFlow loads; `tf` and `keras` from it.
- `registry`: name -> builder registries with one unknown-name error (no TensorFlow).
- `atomic_files`: files written whole or not at all (text, JSON, Keras weights).

Importing this package alone loads no TensorFlow, so the NumPy-only `evaluation` package can use
`applications.core.registry`. tests/test_import_graph.py checks that nothing here imports
upward.
"""
