"""Person re-identification evaluation: distances, CMC/mAP/mINP and k-reciprocal re-ranking.

Pure NumPy/SciPy, no TensorFlow. See metrics.py for the protocols and re_ranking.py for the
re-ranking algorithm.
"""

from evaluation.aligned_distance import aligned_local_distance  # noqa: F401
