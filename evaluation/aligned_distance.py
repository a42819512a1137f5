"""AlignedReID's aligned local distance between stripe features, in bounded-memory blocks.

Each image is described by H horizontal stripes a_0..a_{H-1} (C channels each). For two images
the element distance of stripes i and j is d_ij = ||a_i - b_j||_2, squashed into [0, 1) by
(exp(d) - 1) / (exp(d) + 1), which equals tanh(d / 2). The aligned distance is the cost of the
shortest path from (0, 0) to (H-1, H-1) through that H x H matrix moving only right or down:
the sum of the visited elements (not divided by the path length), as in Zhang et al.,
"AlignedReID" and its PyTorch re-production.

Work is organised so that no Python loop runs over pairs: for a block of m rows of x and n rows
of y, one matrix product gives all (H m) x (H n) stripe inner products, a few in-place passes
turn them into element distances, and the dynamic programme runs over the H x H cells, each step
a vectorised operation on all m x n pairs at once. Memory is bounded by ``block_elements``.
"""

import numpy as np

# Element distances held at once per block: 2**22 float32 values are 16 MiB (the fastest of
# 2**18..2**24 measured at H = 8 and 16 on a 2-core machine with 4 MiB of L2 per core).
DEFAULT_BLOCK_ELEMENTS = 1 << 22


def _check_stripes(features, name):
    features = np.asarray(features)
    if features.ndim != 3:
        raise ValueError(
            f"{name} must be a 3-D array (num_images, num_stripes, channels), "
            f"got shape {features.shape}."
        )
    if not (
        np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)
    ):
        raise ValueError(f"{name} must be numeric, got dtype {features.dtype}.")
    if features.shape[1] == 0 or features.shape[2] == 0:
        raise ValueError(f"{name} has no stripes or no channels (shape {features.shape}).")
    return features


def _compute_dtype(*arrays):
    # float64 inputs keep float64 (exact reference comparisons); anything else is float32, the
    # dtype of every other evaluation matrix.
    if any(array.dtype == np.float64 for array in arrays):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def prepare_stripes(features, dtype=np.float32, name="features"):
    """Validates stripe features and lays them out for ``aligned_distance_pairwise``.

    Args:
        features: float array (N, H, C).
        dtype: float32 or float64, the precision of the computation.
        name: str, the argument name used in error messages.

    Returns:
        tuple (stripes, quarter_squared_norms): ``stripes`` is the features cast to ``dtype``,
        shape (N, H, C); ``quarter_squared_norms`` is ||a_i||^2 / 4, shape (N, H). Both have the
        images on the first axis, so ``evaluation.distances.slice_prepared`` selects rows.

    Raises:
        ValueError: not 3-D, not numeric, no stripes or channels, or NaN/inf values.
    """
    dtype = np.dtype(dtype)
    features = np.ascontiguousarray(_check_stripes(features, name), dtype=dtype)
    if not np.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or inf.")
    quarter_squared_norms = np.einsum("nhc,nhc->nh", features, features) / dtype.type(4.0)
    return features, quarter_squared_norms


def _recompute_small_entries(half_distances, query_rows, gallery_rows, query_norms, gallery_norms):
    """Replaces expanded (d / 2)^2 values that cancellation makes unreliable by direct ones.

    ||a||^2 + ||b||^2 - 2 <a, b> loses its relative accuracy when d is small compared with the
    norms (near-identical stripes: about sqrt(eps) * ||a|| absolute error in d instead of 0).
    Entries below a bound a few hundred times the rounding error of the expansion are few, so
    they are gathered and recomputed as ||a - b||^2 / 4; negative ones are clipped at 0. Most
    blocks have none, which one pass computing the minimum shows.
    """
    dtype = half_distances.dtype.type
    rounding = np.finfo(half_distances.dtype).eps * np.sqrt(query_rows.shape[1])
    bound = dtype(256.0 * rounding * (query_norms.max() + gallery_norms.max()))
    if half_distances.min() >= bound:
        return
    flat = half_distances.reshape(-1)
    suspicious = np.flatnonzero(flat < bound)
    num_columns = half_distances.shape[1]
    chunk = 1 << 14
    for start in range(0, suspicious.size, chunk):
        indices = suspicious[start : start + chunk]
        differences = query_rows[indices // num_columns] - gallery_rows[indices % num_columns]
        flat[indices] = np.einsum("kc,kc->k", differences, differences) / dtype(4.0)
    # Rounding can push tiny squared distances below zero.
    np.maximum(half_distances, dtype(0.0), out=half_distances)


def _element_distances(query, gallery):
    """tanh(d_ij / 2) for every stripe pair of a block, laid out (H, m, H, n)."""
    query_stripes, query_norms = query
    gallery_stripes, gallery_norms = gallery
    num_query, num_stripes, channels = query_stripes.shape
    num_gallery = gallery_stripes.shape[0]
    dtype = query_stripes.dtype
    # Stripe-major rows: the product's (a, p, b, q) entry is <x_p stripe a, y_q stripe b>, so the
    # cell (a, b) of every pair is one (m, n) sub-block.
    query_rows = query_stripes.transpose(1, 0, 2).reshape(num_stripes * num_query, channels)
    gallery_rows = gallery_stripes.transpose(1, 0, 2).reshape(num_stripes * num_gallery, channels)
    # (d / 2)^2 = -<a, b> / 2 + ||a||^2 / 4 + ||b||^2 / 4 (so tanh(d / 2) needs no scaling) is
    # one matrix product of rows extended by two columns, [-a / 2, ||a||^2 / 4, 1] and
    # [b, 1, ||b||^2 / 4]: no separate passes over the block to add the norms.
    query_extended = np.empty((query_rows.shape[0], channels + 2), dtype=dtype)
    np.multiply(query_rows, dtype.type(-0.5), out=query_extended[:, :channels])
    query_extended[:, channels] = query_norms.T.reshape(-1)
    query_extended[:, channels + 1] = 1.0
    gallery_extended = np.empty((gallery_rows.shape[0], channels + 2), dtype=dtype)
    gallery_extended[:, :channels] = gallery_rows
    gallery_extended[:, channels] = 1.0
    gallery_extended[:, channels + 1] = gallery_norms.T.reshape(-1)
    half_distances = query_extended @ gallery_extended.T
    _recompute_small_entries(half_distances, query_rows, gallery_rows, query_norms, gallery_norms)
    np.sqrt(half_distances, out=half_distances)
    np.tanh(half_distances, out=half_distances)
    return half_distances.reshape(num_stripes, num_query, num_stripes, num_gallery)


def _shortest_path_in_place(cells):
    """Right/down shortest-path cost to the last cell, for all pairs of a block at once.

    Args:
        cells: float array (H, m, H, n), overwritten with the path costs.

    Returns:
        view (m, n) of the costs at (H-1, H-1).
    """
    num_stripes = cells.shape[0]
    smaller = np.empty_like(cells[0, :, 0, :])
    for column in range(1, num_stripes):
        cells[0, :, column, :] += cells[0, :, column - 1, :]
    for row in range(1, num_stripes):
        cells[row, :, 0, :] += cells[row - 1, :, 0, :]
        for column in range(1, num_stripes):
            np.minimum(cells[row - 1, :, column, :], cells[row, :, column - 1, :], out=smaller)
            cells[row, :, column, :] += smaller
    return cells[num_stripes - 1, :, num_stripes - 1, :]


def _block_shape(num_query, num_gallery, num_stripes, block_elements):
    pairs = max(1, block_elements // (num_stripes * num_stripes))
    # Square-ish blocks keep both sides of the matrix product long.
    query_rows = min(num_query, max(1, int(np.sqrt(pairs))))
    gallery_rows = min(num_gallery, max(1, pairs // query_rows))
    return max(query_rows, 1), max(gallery_rows, 1)


def aligned_distance_pairwise(query, gallery, block_elements=DEFAULT_BLOCK_ELEMENTS):
    """Aligned local distances between prepared stripe features, block by block.

    Same contract as the ``pairwise`` functions of ``evaluation.distances`` (prepared rows in,
    dense block out), so re-ranking code can use it tile by tile.

    Args:
        query: tuple from ``prepare_stripes`` (m images).
        gallery: tuple from ``prepare_stripes`` (n images), same H, C and dtype.
        block_elements: int, element distances held at once (memory is about 1.5 times this
            many values of the dtype, plus the output).

    Returns:
        array (m, n) of the prepared dtype.
    """
    query_stripes, gallery_stripes = query[0], gallery[0]
    num_query, num_stripes, _ = query_stripes.shape
    num_gallery = gallery_stripes.shape[0]
    distances = np.empty((num_query, num_gallery), dtype=query_stripes.dtype)
    query_step, gallery_step = _block_shape(num_query, num_gallery, num_stripes, block_elements)
    for query_start in range(0, num_query, query_step):
        query_block = tuple(part[query_start : query_start + query_step] for part in query)
        for gallery_start in range(0, num_gallery, gallery_step):
            gallery_block = tuple(
                part[gallery_start : gallery_start + gallery_step] for part in gallery
            )
            cells = _element_distances(query_block, gallery_block)
            block = _shortest_path_in_place(cells)
            distances[
                query_start : query_start + block.shape[0],
                gallery_start : gallery_start + block.shape[1],
            ] = block
    return distances


def aligned_local_distance(x, y, block_elements=DEFAULT_BLOCK_ELEMENTS):
    """AlignedReID's aligned local distance between every row of x and every row of y.

    The inputs are used as given (no normalisation): callers that want AlignedReID's
    ``--normalize_feature`` L2-normalise each stripe first.

    Args:
        x: float array (M, H, C), H stripes of C channels per image.
        y: float array (N, H, C), the same H and C.
        block_elements: int, element distances held at once; bounds the temporary memory
            (default 2**22, 16 MiB in float32) whatever M and N are.

    Returns:
        float array (M, N): float64 if either input is float64, float32 otherwise. Entry
        (p, q) is the shortest right/down path cost from (0, 0) to (H-1, H-1) through the
        matrix (exp(d_ij) - 1) / (exp(d_ij) + 1), d_ij = ||x[p, i] - y[q, j]||_2; it lies in
        [0, 2H - 1).

    Raises:
        ValueError: inputs not 3-D, numeric and finite, differing H or C, or a non-positive
            block_elements.
    """
    if isinstance(block_elements, bool) or not isinstance(block_elements, (int, np.integer)):
        raise ValueError(f"block_elements must be a positive int, got {block_elements!r}.")
    if block_elements < 1:
        raise ValueError(f"block_elements must be a positive int, got {block_elements!r}.")
    x = _check_stripes(x, "x")
    y = _check_stripes(y, "y")
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(
            "x and y must have the same number of stripes and channels, got shapes "
            f"{x.shape} and {y.shape}."
        )
    dtype = _compute_dtype(x, y)
    if x.shape[0] == 0 or y.shape[0] == 0:
        return np.zeros((x.shape[0], y.shape[0]), dtype=dtype)
    return aligned_distance_pairwise(
        prepare_stripes(x, dtype, "x"), prepare_stripes(y, dtype, "y"), block_elements
    )
