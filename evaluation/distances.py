"""Query-to-gallery distance matrices computed in bounded-memory blocks.

Every metric is a pair of pure functions: ``prepare`` turns a feature matrix into the float32
operand the metric works on (for instance L2-normalised rows), and ``pairwise`` turns a block of
prepared query rows and all prepared gallery rows into a block of distances. Splitting the work
this way lets the re-ranking code compute exactly the same numbers block by block without ever
holding a whole matrix.
"""

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np

from applications.core.registry import Registry

DEFAULT_BLOCK_SIZE = 1024
_EPSILON = 1e-12


@dataclasses.dataclass(frozen=True)
class DistanceMetric:
    """A distance as two pure functions.

    Attributes:
        prepare: features float (N, D) -> tuple of float32 arrays describing the N rows.
        pairwise: (prepared query block, prepared gallery) -> float32 (B, G) distances, smaller
            is closer.
        row_pairs: (prepared rows A, prepared rows B) -> float32 (P,) distances between the
            rows paired element by element.
    """

    prepare: Callable
    pairwise: Callable
    row_pairs: Callable


def _as_float32_features(features, name):
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (num, dim), got shape {features.shape}.")
    if features.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {features.shape}).")
    if not np.issubdtype(features.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {features.dtype}.")
    features = np.ascontiguousarray(features, dtype=np.float32)
    if not np.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or inf.")
    return features


def _prepare_normalised(features):
    norms = np.sqrt(np.einsum("ij,ij->i", features, features, dtype=np.float32))
    return (features / np.maximum(norms, np.float32(_EPSILON))[:, None],)


def _cosine_pairwise(query, gallery):
    similarity = query[0] @ gallery[0].T
    np.subtract(np.float32(1.0), similarity, out=similarity)
    # Rounding can push the similarity of identical directions slightly above 1.
    np.maximum(similarity, np.float32(0.0), out=similarity)
    return similarity


def _cosine_row_pairs(rows_a, rows_b):
    distances = np.float32(1.0) - np.einsum("ij,ij->i", rows_a[0], rows_b[0], dtype=np.float32)
    return np.maximum(distances, np.float32(0.0))


def _prepare_with_squared_norms(features):
    return features, np.einsum("ij,ij->i", features, features, dtype=np.float32)


def _squared_euclidean_pairwise(query, gallery):
    distances = query[0] @ gallery[0].T
    distances *= np.float32(-2.0)
    distances += query[1][:, None]
    distances += gallery[1][None, :]
    # Rounding can push tiny squared distances below zero.
    np.maximum(distances, np.float32(0.0), out=distances)
    return distances


def _squared_euclidean_row_pairs(rows_a, rows_b):
    products = np.einsum("ij,ij->i", rows_a[0], rows_b[0], dtype=np.float32)
    distances = rows_a[1] + rows_b[1] - np.float32(2.0) * products
    return np.maximum(distances, np.float32(0.0))


def _euclidean_pairwise(query, gallery):
    distances = _squared_euclidean_pairwise(query, gallery)
    return np.sqrt(distances, out=distances)


def _euclidean_row_pairs(rows_a, rows_b):
    return np.sqrt(_squared_euclidean_row_pairs(rows_a, rows_b))


DISTANCE_METRICS = Registry(
    "distance metric",
    {
        "cosine": DistanceMetric(_prepare_normalised, _cosine_pairwise, _cosine_row_pairs),
        "euclidean": DistanceMetric(
            _prepare_with_squared_norms, _euclidean_pairwise, _euclidean_row_pairs
        ),
        "squared_euclidean": DistanceMetric(
            _prepare_with_squared_norms, _squared_euclidean_pairwise, _squared_euclidean_row_pairs
        ),
    },
)


def get_distance_metric(metric):
    """Looks a metric up in the registry.

    Args:
        metric: str, one of DISTANCE_METRICS.

    Returns:
        DistanceMetric.

    Raises:
        ValueError: unknown name; the message lists the valid names.
    """
    return DISTANCE_METRICS[metric]


def _check_block_size(block_size):
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise ValueError(f"block_size must be a positive int, got {block_size!r}.")
    if block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}.")


def prepare_features(features, metric, name="features"):
    """Validates features and prepares them for a metric.

    Args:
        features: float array (N, D).
        metric: str, one of DISTANCE_METRICS.
        name: str, the argument name used in error messages.

    Returns:
        tuple of float32 arrays whose first axis has length N (the metric's operand).
    """
    return get_distance_metric(metric).prepare(_as_float32_features(features, name))


def slice_prepared(prepared, index):
    """Selects rows of prepared features.

    Args:
        prepared: tuple of arrays from prepare_features.
        index: slice or int array, the rows to keep.

    Returns:
        tuple of arrays with the selected rows.
    """
    return tuple(part[index] for part in prepared)


def iterate_distance_blocks(
    query_prepared, gallery_prepared, metric, block_size=DEFAULT_BLOCK_SIZE
) -> Iterator[tuple[int, np.ndarray]]:
    """Yields the distance matrix one block of query rows at a time.

    Args:
        query_prepared: tuple from prepare_features for the queries (num_query rows).
        gallery_prepared: tuple from prepare_features for the gallery (num_gallery rows).
        metric: str, one of DISTANCE_METRICS (the one the features were prepared for).
        block_size: int, query rows per block.

    Yields:
        (start, block): int row offset and float32 array (rows, num_gallery).
    """
    _check_block_size(block_size)
    pairwise = get_distance_metric(metric).pairwise
    num_query = query_prepared[0].shape[0]
    for start in range(0, num_query, block_size):
        stop = min(start + block_size, num_query)
        yield start, pairwise(slice_prepared(query_prepared, slice(start, stop)), gallery_prepared)


def compute_distance_matrix(
    query_features, gallery_features, metric="cosine", block_size=DEFAULT_BLOCK_SIZE
):
    """Computes the distance between every query and every gallery feature.

    ``cosine`` is 1 - cosine similarity of the L2-normalised features (FlipReID's default), in
    [0, 2]; ``euclidean`` is the L2 distance; ``squared_euclidean`` its square. Temporary memory
    is bounded by ``block_size`` query rows whatever the gallery size.

    Args:
        query_features: float array (num_query, D).
        gallery_features: float array (num_gallery, D).
        metric: str, one of DISTANCE_METRICS.
        block_size: int, query rows computed at once.

    Returns:
        float32 array (num_query, num_gallery), smaller is closer.

    Raises:
        ValueError: unknown metric, non-2-D or empty features, differing feature dimensions,
            NaN/inf features, or a non-positive block_size.
    """
    get_distance_metric(metric)
    _check_block_size(block_size)
    query_features = _as_float32_features(query_features, "query_features")
    gallery_features = _as_float32_features(gallery_features, "gallery_features")
    if query_features.shape[1] != gallery_features.shape[1]:
        raise ValueError(
            "query_features and gallery_features differ in feature dimension: "
            f"{query_features.shape[1]} vs {gallery_features.shape[1]}."
        )
    definition = get_distance_metric(metric)
    query_prepared = definition.prepare(query_features)
    gallery_prepared = definition.prepare(gallery_features)
    distmat = np.empty((query_features.shape[0], gallery_features.shape[0]), dtype=np.float32)
    for start, block in iterate_distance_blocks(
        query_prepared, gallery_prepared, metric, block_size
    ):
        distmat[start : start + block.shape[0]] = block
    return distmat
