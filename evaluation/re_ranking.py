"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) with sparse encodings and blocked work.

The numbers are those of the widely used implementation that AlignedReID and FlipReID ship.
With D the (num_query + num_gallery)^2 matrix [[q_q, q_g], [q_g^T, g_g]]:

1. D2 = float32(D ** 2); R = (D2 / column maxima of D2)^T, so row i of R is column i of D2
   divided by that column's maximum.
2. initial rank: the k1 + 1 nearest items of every row of R (the item itself included).
3. k-reciprocal set of i: forward neighbours f of i that have i among their own k1 + 1
   nearest. For each member c, if more than 2/3 of c's own k-reciprocal set computed with
   round(k1 / 2) + 1 neighbours (NumPy's round-half-to-even) lies in i's set, c's set is added.
4. V[i, j] = exp(-R[i, j]) over the expanded set, normalised to sum 1 (float32).
5. Local query expansion (k2 != 1): V[i] = mean of V over the k2 nearest rows of i.
6. Jaccard distance of query i and gallery item j: 1 - s / (2 - s) with
   s = sum_k min(V[i, k], V[j, k]).
7. Output: jaccard * (1 - lambda) + R[query, gallery] * lambda, shape (num_query, num_gallery).

What differs is only the cost: neighbours come from argpartition of row blocks (whole rows are
never sorted), V is a scipy.sparse matrix, the Jaccard term is accumulated from the sparse
columns of V for a block of queries at a time, and ``re_ranking_from_features`` never holds
more than a block of rows of the distance matrix.

Ties: the reference uses NumPy's default (unstable) argsort, whose order of equal distances
depends on the machine. Here neighbours are ordered by (distance, index), i.e. as a stable
sort; without ties both agree.
"""

import numpy as np
from scipy import sparse

from evaluation.distances import get_distance_metric, prepare_features, slice_prepared
from evaluation.metrics import all_finite

_ROW_BLOCK_ELEMENTS = 1 << 25
_OVERLAP_BLOCK_ROWS = 2048
_TILE_SIZE = 4096
# Extra nearest candidates kept per row while its maximum (the normaliser) is still unknown.
_SPARE_CANDIDATES = 8


def _check_parameters(k1, k2, lambda_value):
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value!r}.")


def _select_by_partition(block, k):
    """smallest_k_stable for any block: argpartition, then fix rows with boundary ties."""
    selected = np.argpartition(block, k - 1, axis=1)[:, :k]
    kth_value = np.take_along_axis(block, selected, axis=1).max(axis=1)
    num_at_most = np.count_nonzero(block <= kth_value[:, None], axis=1)
    for row in np.flatnonzero(num_at_most != k):
        values = block[row]
        below = np.flatnonzero(values < kth_value[row])
        equal = np.flatnonzero(values == kth_value[row])[: k - below.size]
        selected[row] = np.concatenate([below, equal])
    selected.sort(axis=1)
    order = np.argsort(np.take_along_axis(block, selected, axis=1), axis=1, kind="stable")
    return np.take_along_axis(selected, order, axis=1)


def smallest_k_stable(block, k, sample_size=1024):
    """Indices of the k smallest entries of every row, ordered by (value, column index).

    Equivalent to ``np.argsort(block, axis=1, kind="stable")[:, :k]`` without sorting rows.
    The k-th smallest value of a sample of each row's columns bounds the row's k-th smallest
    value from above, so only entries at most that bound (a few percent of the row) are
    gathered and partitioned; ties straddling the k-th place keep the lowest column indices.

    Args:
        block: float array (rows, n), finite.
        k: int in [1, n].
        sample_size: int, columns sampled to find the bound.

    Returns:
        int64 array (rows, k).
    """
    num_rows, num_columns = block.shape
    if k >= num_columns:
        return np.argsort(block, axis=1, kind="stable")
    step = num_columns // max(sample_size, k)
    if step < 4:
        return _select_by_partition(block, k)
    bound = np.partition(block[:, ::step], k - 1, axis=1)[:, k - 1]
    flat = np.flatnonzero(block <= bound[:, None])
    rows, columns = np.divmod(flat, num_columns)
    counts = np.bincount(rows, minlength=num_rows)
    width = int(counts.max())
    if width > num_columns // 4:
        return _select_by_partition(block, k)
    positions = np.arange(rows.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
    # Padding sorts last: +inf values at positions after every real entry of the row.
    candidates = np.full((num_rows, width), np.inf, dtype=block.dtype)
    candidates[rows, positions] = block[rows, columns]
    candidate_columns = np.zeros((num_rows, width), dtype=np.int64)
    candidate_columns[rows, positions] = columns
    chosen = _select_by_partition(candidates, k)
    return np.take_along_axis(candidate_columns, chosen, axis=1)


def _reciprocal_mask(neighbours, width, block_rows=_OVERLAP_BLOCK_ROWS):
    """mask[i, p]: is i among the first ``width`` neighbours of neighbours[i, p]?"""
    num_items = neighbours.shape[0]
    prefix = neighbours[:, :width]
    mask = np.empty((num_items, width), dtype=bool)
    for start in range(0, num_items, block_rows):
        stop = min(start + block_rows, num_items)
        backward = prefix[prefix[start:stop]]
        mask[start:stop] = (backward == np.arange(start, stop)[:, None, None]).any(axis=2)
    return mask


def k_reciprocal_sets(neighbours, k1, block_rows=_OVERLAP_BLOCK_ROWS):
    """Expanded k-reciprocal neighbour sets of every item, as (row, column) pairs.

    Args:
        neighbours: int64 array (N, K), each row's nearest items in order, K >= min(k1 + 1, N).
        k1: int, the k of the k-reciprocal sets.
        block_rows: int, rows processed at once (bounds the (rows, k1, k1/2, k1) temporary).

    Returns:
        (rows, columns): int64 arrays (E,) with repeated pairs possible.
    """
    num_items = neighbours.shape[0]
    forward_width = min(k1 + 1, num_items)
    half_width = min(int(np.around(k1 / 2.0)) + 1, num_items)
    forward = neighbours[:, :forward_width]
    half = neighbours[:, :half_width]
    reciprocal = _reciprocal_mask(neighbours, forward_width, block_rows)
    half_reciprocal = _reciprocal_mask(neighbours, half_width, block_rows)
    half_size = half_reciprocal.sum(axis=1)

    rows, columns = [], []
    for start in range(0, num_items, block_rows):
        stop = min(start + block_rows, num_items)
        block_forward = forward[start:stop]
        block_reciprocal = reciprocal[start:stop]
        members = np.where(block_reciprocal, block_forward, -1)
        candidate_sets = half[block_forward]
        candidate_masks = half_reciprocal[block_forward]
        in_members = (candidate_sets[..., None] == members[:, None, None, :]).any(axis=3)
        overlap = np.count_nonzero(in_members & candidate_masks, axis=2)
        expands = block_reciprocal & (overlap > 2.0 / 3.0 * half_size[block_forward])

        own_rows, own_positions = np.nonzero(block_reciprocal)
        rows.append(own_rows + start)
        columns.append(block_forward[own_rows, own_positions])
        added_rows, added_positions, added_slots = np.nonzero(expands[:, :, None] & candidate_masks)
        rows.append(added_rows + start)
        columns.append(candidate_sets[added_rows, added_positions, added_slots])
    return np.concatenate(rows), np.concatenate(columns)


def _encode(neighbours, k1, k2, pair_values):
    """Sparse k-reciprocal encoding V, after local query expansion when k2 != 1."""
    num_items = neighbours.shape[0]
    rows, columns = k_reciprocal_sets(neighbours, k1)
    membership = sparse.csr_matrix(
        (np.ones(rows.shape[0], dtype=np.float32), (rows, columns)), shape=(num_items, num_items)
    )
    membership.sum_duplicates()
    membership.sort_indices()
    entry_rows = np.repeat(np.arange(num_items), np.diff(membership.indptr))
    weights = np.exp(-pair_values(entry_rows, membership.indices)).astype(np.float32)
    sums = np.bincount(entry_rows, weights=weights, minlength=num_items).astype(np.float32)
    membership.data = (weights / sums[entry_rows]).astype(np.float32)
    encoding = membership
    if k2 != 1:
        width = min(k2, num_items)
        expansion = sparse.csr_matrix(
            (
                np.full(num_items * width, 1.0 / width, dtype=np.float32),
                (np.repeat(np.arange(num_items), width), neighbours[:, :width].reshape(-1)),
            ),
            shape=(num_items, num_items),
        )
        encoding = (expansion @ encoding).tocsr()
        encoding.sort_indices()
    return encoding


def _jaccard_block(query_encoding, gallery_columns, num_gallery):
    """1 - s / (2 - s), s[r, j] = sum_k min(Vq[r, k], Vg[j, k]) over shared nonzeros k."""
    num_rows = query_encoding.shape[0]
    counts_per_row = np.diff(query_encoding.indptr)
    query_rows = np.repeat(np.arange(num_rows), counts_per_row)
    shared = query_encoding.indices
    column_starts = gallery_columns.indptr[shared]
    column_sizes = gallery_columns.indptr[shared + 1] - column_starts
    total = int(column_sizes.sum())
    source = np.repeat(np.arange(shared.shape[0]), column_sizes)
    offsets = np.arange(total) - np.repeat(np.cumsum(column_sizes) - column_sizes, column_sizes)
    positions = column_starts[source] + offsets
    minima = np.minimum(query_encoding.data[source], gallery_columns.data[positions])
    flat = query_rows[source] * num_gallery + gallery_columns.indices[positions]
    overlap = np.bincount(flat, weights=minima, minlength=num_rows * num_gallery)
    overlap = overlap.reshape(num_rows, num_gallery).astype(np.float32)
    return np.float32(1.0) - overlap / (np.float32(2.0) - overlap)


def _re_rank(neighbours, num_query, k1, k2, lambda_value, pair_values, query_gallery_block):
    """Shared core: encoding, query expansion, Jaccard and the final blend, block by block."""
    num_items = neighbours.shape[0]
    num_gallery = num_items - num_query
    encoding = _encode(neighbours, k1, k2, pair_values)
    gallery_columns = encoding[num_query:].tocsc()
    gallery_columns.sort_indices()
    output = np.empty((num_query, num_gallery), dtype=np.float32)
    block_rows = max(1, min(1024, (_ROW_BLOCK_ELEMENTS >> 3) // max(num_gallery, 1)))
    jaccard_weight = np.float32(1.0 - lambda_value)
    original_weight = np.float32(lambda_value)
    for start in range(0, num_query, block_rows):
        stop = min(start + block_rows, num_query)
        jaccard = _jaccard_block(encoding[start:stop], gallery_columns, num_gallery)
        jaccard *= jaccard_weight
        original = query_gallery_block(start, stop)
        original *= original_weight
        output[start:stop] = jaccard + original
    return output


def _square(values):
    values = np.power(values, 2)
    return values if values.dtype == np.float32 else values.astype(np.float32)


def _as_distance(matrix, name, shape):
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {matrix.shape}.")
    if matrix.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {matrix.shape}.")
    if not (np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {matrix.dtype}.")
    if not all_finite(matrix):
        raise ValueError(f"{name} contains NaN or inf.")
    return matrix


def _check_column_maxima(maxima):
    if not (maxima > 0).all():
        raise ValueError(
            "Every item needs a positive distance to some item: item "
            f"{int(np.flatnonzero(~(maxima > 0))[0])} is at distance 0 from all."
        )


def _column_maxima(q_g_dist, q_q_dist, g_g_dist, block_rows):
    """Column maxima of D2 = D ** 2, D the block matrix [[q_q, q_g], [q_g^T, g_g]].

    Squaring is monotone in |x|, so the maximum of |x| is squared; g_g is read ``block_rows``
    rows at a time.

    Returns:
        float32 array (num_query + num_gallery,).
    """
    num_query, num_gallery = q_g_dist.shape
    column_maxima = np.empty(num_query + num_gallery, dtype=np.float32)
    column_maxima[:num_query] = np.maximum(
        _square(np.abs(q_q_dist).max(axis=0)), _square(np.abs(q_g_dist).max(axis=1))
    )
    gallery_abs_max = np.abs(q_g_dist).max(axis=0)
    for start in range(0, num_gallery, block_rows):
        stop = min(start + block_rows, num_gallery)
        gallery_abs_max = np.maximum(gallery_abs_max, np.abs(g_g_dist[start:stop]).max(axis=0))
    column_maxima[num_query:] = _square(gallery_abs_max)
    return column_maxima


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """k-reciprocal re-ranking of a query-to-gallery distance matrix.

    Same output as the widely used implementation (see the module docstring), to 1e-4.
    The inputs are not squared or copied as a whole; memory beyond them is about two
    num_query x num_gallery float32 matrices plus bounded blocks.

    Args:
        q_g_dist: float array (num_query, num_gallery), query-to-gallery distances.
        q_q_dist: float array (num_query, num_query).
        g_g_dist: float array (num_gallery, num_gallery).
        k1: int >= 1, neighbours of the k-reciprocal sets.
        k2: int >= 1, neighbours of the local query expansion (1 disables it).
        lambda_value: float in [0, 1], weight of the original distance.

    Returns:
        float32 array (num_query, num_gallery), the re-ranked distances.

    Raises:
        ValueError: bad shapes, empty inputs, NaN/inf, bad parameters, or an item at distance
            0 from every item (its normalisation would divide by zero).
    """
    _check_parameters(k1, k2, lambda_value)
    q_g_dist = np.asarray(q_g_dist)
    if q_g_dist.ndim != 2 or 0 in q_g_dist.shape:
        raise ValueError(f"q_g_dist must be a non-empty 2-D array, got shape {q_g_dist.shape}.")
    num_query, num_gallery = q_g_dist.shape
    q_g_dist = _as_distance(q_g_dist, "q_g_dist", (num_query, num_gallery))
    q_q_dist = _as_distance(q_q_dist, "q_q_dist", (num_query, num_query))
    g_g_dist = _as_distance(g_g_dist, "g_g_dist", (num_gallery, num_gallery))
    num_items = num_query + num_gallery
    block_rows = max(1, _ROW_BLOCK_ELEMENTS // (4 * num_items))

    column_maxima = _column_maxima(q_g_dist, q_q_dist, g_g_dist, block_rows)
    _check_column_maxima(column_maxima)

    def rows_of_normalised(start, stop):
        # Row i of R is column i of D2 over its maximum.
        if stop <= num_query:
            pieces = (q_q_dist[:, start:stop].T, q_g_dist[start:stop])
        else:
            gallery = slice(start - num_query, stop - num_query)
            pieces = (q_g_dist[:, gallery].T, g_g_dist[:, gallery].T)
        rows = np.concatenate(pieces, axis=1)
        if rows.dtype == np.float32:
            np.power(rows, 2, out=rows)
        else:
            rows = _square(rows)
        rows /= column_maxima[start:stop, None]
        return rows

    width = min(max(k1 + 1, k2), num_items)
    neighbours = np.empty((num_items, width), dtype=np.int64)
    for part_start, part_stop in ((0, num_query), (num_query, num_items)):
        for start in range(part_start, part_stop, block_rows):
            stop = min(start + block_rows, part_stop)
            neighbours[start:stop] = smallest_k_stable(rows_of_normalised(start, stop), width)

    def pair_values(rows, columns):
        # R[i, k] = D2[k, i] / max_i with D the block matrix [[q_q, q_g], [q_g^T, g_g]].
        values = np.empty(rows.shape[0], dtype=np.result_type(q_g_dist, q_q_dist, g_g_dist))
        query_row, query_column = rows < num_query, columns < num_query
        for row_is_query, column_is_query in ((True, True), (True, False), (False, True)):
            chosen = (query_row == row_is_query) & (query_column == column_is_query)
            row, column = rows[chosen], columns[chosen]
            if row_is_query and column_is_query:
                values[chosen] = q_q_dist[column, row]
            elif row_is_query:
                values[chosen] = q_g_dist[row, column - num_query]
            else:
                values[chosen] = q_g_dist[column, row - num_query]
        chosen = ~query_row & ~query_column
        values[chosen] = g_g_dist[columns[chosen] - num_query, rows[chosen] - num_query]
        return _square(values) / column_maxima[rows]

    def query_gallery_block(start, stop):
        return _square(q_g_dist[start:stop]) / column_maxima[start:stop, None]

    return _re_rank(neighbours, num_query, k1, k2, lambda_value, pair_values, query_gallery_block)


def _merge_candidates(values, columns, new_values, new_columns, size):
    """Keeps the ``size`` smallest (value, column) pairs of each row of two candidate sets."""
    values = np.concatenate([values, new_values], axis=1)
    columns = np.concatenate([columns, new_columns], axis=1)
    order = np.lexsort((columns, values), axis=1)[:, :size]
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(columns, order, axis=1)


def symmetric_neighbours(prepared, pairwise, width, tile_size=_TILE_SIZE):
    """Nearest neighbours in R and row maxima of D2 for a symmetric distance, tile by tile.

    Only tiles on and above the diagonal of the N x N matrix D2 = d(x_i, x_j)^2 are computed;
    each serves its rows and, transposed, its columns. Every item keeps its ``width +
    _SPARE_CANDIDATES`` smallest (D2, index) pairs and its running maximum; at the end the
    neighbours are reselected by (R = D2 / maximum, index). Dividing by a positive number keeps
    the order except where rounding makes nearby values equal, which the spare candidates
    absorb.

    Args:
        prepared: tuple of float32 arrays (N rows) from evaluation.distances.prepare_features.
        pairwise: the metric's pairwise function (prepared rows, prepared rows) -> distances.
        width: int in [1, N], neighbours per item.
        tile_size: int, side of the square tiles.

    Returns:
        (neighbours int64 (N, width) ordered by (R, index), row maxima float32 (N,) of D2).

    Raises:
        ValueError: an item at distance 0 from every item.
    """
    num_items = prepared[0].shape[0]
    size = min(width + _SPARE_CANDIDATES, num_items)
    starts = list(range(0, num_items, tile_size))
    values = [
        np.full((min(tile_size, num_items - start), 0), np.inf, np.float32) for start in starts
    ]
    columns = [np.zeros((value.shape[0], 0), dtype=np.int64) for value in values]
    row_maxima = np.zeros(num_items, dtype=np.float32)

    def absorb(block_index, tile, column_offset):
        count = min(size, tile.shape[1])
        chosen = smallest_k_stable(tile, count)
        values[block_index], columns[block_index] = _merge_candidates(
            values[block_index],
            columns[block_index],
            np.take_along_axis(tile, chosen, axis=1),
            chosen + column_offset,
            size,
        )

    for row_block, row_start in enumerate(starts):
        row_part = slice_prepared(prepared, slice(row_start, row_start + tile_size))
        for column_block in range(row_block, len(starts)):
            column_start = starts[column_block]
            column_part = slice_prepared(prepared, slice(column_start, column_start + tile_size))
            tile = pairwise(row_part, column_part)
            np.multiply(tile, tile, out=tile)
            row_stop = row_start + tile.shape[0]
            column_stop = column_start + tile.shape[1]
            np.maximum(
                row_maxima[row_start:row_stop], tile.max(axis=1), out=row_maxima[row_start:row_stop]
            )
            absorb(row_block, tile, column_start)
            if column_block != row_block:
                np.maximum(
                    row_maxima[column_start:column_stop],
                    tile.max(axis=0),
                    out=row_maxima[column_start:column_stop],
                )
                absorb(column_block, np.ascontiguousarray(tile.T), row_start)
    _check_column_maxima(row_maxima)
    candidate_values = np.concatenate(values) / row_maxima[:, None]
    candidate_columns = np.concatenate(columns)
    order = np.lexsort((candidate_columns, candidate_values), axis=1)[:, :width]
    return np.take_along_axis(candidate_columns, order, axis=1), row_maxima


def re_ranking_from_features(
    query_features,
    gallery_features,
    k1=20,
    k2=6,
    lambda_value=0.3,
    metric="cosine",
    block_size=None,
):
    """k-reciprocal re-ranking straight from features, in bounded memory.

    Equals ``re_ranking(d(q, g), d(q, q), d(g, g), k1, k2, lambda_value)`` with
    ``d = compute_distance_matrix(..., metric=metric)`` (to 1e-4), but never builds a matrix
    larger than the num_query x num_gallery output: one pass over the upper triangle of tiles
    of the (num_query + num_gallery)^2 distance matrix (see symmetric_neighbours) collects each
    item's maximum and nearest neighbours; a second pass over query blocks gives the
    original-distance term.

    Args:
        query_features: float array (num_query, D).
        gallery_features: float array (num_gallery, D).
        k1: int >= 1.
        k2: int >= 1.
        lambda_value: float in [0, 1].
        metric: str, one of evaluation.distances.DISTANCE_METRICS; its distance is squared, as
            in the reference.
        block_size: int or None, side of the square tiles of the full distance matrix
            (None: 4096, 64 MB of float32 per tile).

    Returns:
        float32 array (num_query, num_gallery).

    Raises:
        ValueError: bad features, unknown metric or bad parameters.
    """
    _check_parameters(k1, k2, lambda_value)
    definition = get_distance_metric(metric)
    query_prepared = prepare_features(query_features, metric, "query_features")
    gallery_prepared = prepare_features(gallery_features, metric, "gallery_features")
    if query_prepared[0].shape[1] != gallery_prepared[0].shape[1]:
        raise ValueError(
            "query_features and gallery_features differ in feature dimension: "
            f"{query_prepared[0].shape[1]} vs {gallery_prepared[0].shape[1]}."
        )
    num_query = query_prepared[0].shape[0]
    all_prepared = tuple(
        np.concatenate([query_part, gallery_part])
        for query_part, gallery_part in zip(query_prepared, gallery_prepared, strict=True)
    )
    num_items = all_prepared[0].shape[0]
    if block_size is None:
        block_size = _TILE_SIZE
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise ValueError(f"block_size must be a positive int or None, got {block_size!r}.")
    if block_size < 1:
        raise ValueError(f"block_size must be a positive int or None, got {block_size!r}.")

    width = min(max(k1 + 1, k2), num_items)
    neighbours, row_maxima = symmetric_neighbours(
        all_prepared, definition.pairwise, width, block_size
    )

    def pair_values(rows, columns):
        values = np.empty(rows.shape[0], dtype=np.float32)
        chunk = 1 << 12
        for start in range(0, rows.shape[0], chunk):
            stop = min(start + chunk, rows.shape[0])
            distances = definition.row_pairs(
                slice_prepared(all_prepared, rows[start:stop]),
                slice_prepared(all_prepared, columns[start:stop]),
            )
            values[start:stop] = distances * distances
        return values / row_maxima[rows]

    def query_gallery_block(start, stop):
        block = definition.pairwise(
            slice_prepared(query_prepared, slice(start, stop)), gallery_prepared
        )
        np.multiply(block, block, out=block)
        block /= row_maxima[start:stop, None]
        return block

    return _re_rank(neighbours, num_query, k1, k2, lambda_value, pair_values, query_gallery_block)
