"""AlignedReID's six evaluation rows: global, local and global + local, each plain and re-ranked.

The global distance is the configured metric on the embeddings; the local distance is the
aligned local distance of the stripe features (``evaluation.aligned_distance``); global + local
is their sum, as in AlignedReID's test code. Re-ranking is the same k-reciprocal algorithm as
``evaluation.re_ranking``; for the local and combined rows it needs query-query and
gallery-gallery distances too, which are computed tile by tile (``symmetric_neighbours``), so
memory stays bounded as for the global row: no (num_query + num_gallery)^2 matrix is ever held.
"""

from typing import NamedTuple

import numpy as np

from evaluation.aligned_distance import aligned_distance_pairwise, prepare_stripes
from evaluation.distances import (
    compute_distance_matrix,
    get_distance_metric,
    prepare_features,
    slice_prepared,
)
from evaluation.metrics import evaluate_ranking
from evaluation.re_ranking import (
    _TILE_SIZE,
    _check_parameters,
    _re_rank,
    re_ranking_from_features,
    symmetric_neighbours,
)
from evaluation.report import DEFAULT_RANKS

ROW_NAMES = ("global", "local", "global_local")
RE_RANKING_SUFFIX = "_re_ranking"
_ROW_PAIRS_CHUNK = 256


def aligned_distance_row_pairs(rows_a, rows_b):
    """Aligned local distances of rows paired element by element.

    Args:
        rows_a: tuple from ``prepare_stripes`` (P images).
        rows_b: tuple from ``prepare_stripes`` (P images).

    Returns:
        array (P,) of the prepared dtype: distance of rows_a[p] and rows_b[p].
    """
    stripes_a, stripes_b = rows_a[0], rows_b[0]
    num_pairs, num_stripes, _ = stripes_a.shape
    distances = np.empty(num_pairs, dtype=stripes_a.dtype)
    for start in range(0, num_pairs, _ROW_PAIRS_CHUNK):
        stop = min(start + _ROW_PAIRS_CHUNK, num_pairs)
        # Direct differences (no cancellation): (P, H, H, C) for a chunk of pairs.
        differences = stripes_a[start:stop, :, None, :] - stripes_b[start:stop, None, :, :]
        cells = np.tanh(np.sqrt(np.einsum("phkc,phkc->phk", differences, differences)) / 2)
        for column in range(1, num_stripes):
            cells[:, 0, column] += cells[:, 0, column - 1]
        for row in range(1, num_stripes):
            cells[:, row, 0] += cells[:, row - 1, 0]
            for column in range(1, num_stripes):
                cells[:, row, column] += np.minimum(
                    cells[:, row - 1, column], cells[:, row, column - 1]
                )
        distances[start:stop] = cells[:, -1, -1]
    return distances


def re_ranking_with_pairwise(
    query_prepared,
    gallery_prepared,
    pairwise,
    row_pairs,
    k1=20,
    k2=6,
    lambda_value=0.3,
    tile_size=None,
    query_gallery_distances=None,
):
    """k-reciprocal re-ranking for any distance given as pairwise functions, in bounded memory.

    Equals ``evaluation.re_ranking.re_ranking(d(q, g), d(q, q), d(g, g), k1, k2, lambda_value)``
    for the distance d, like ``re_ranking_from_features`` does for the metrics of
    ``evaluation.distances``.

    Args:
        query_prepared: tuple of arrays with num_query rows (the distance's operand).
        gallery_prepared: tuple of arrays with num_gallery rows, same layout.
        pairwise: function (prepared rows A, prepared rows B) -> float32 (|A|, |B|) distances.
        row_pairs: function (prepared rows A, prepared rows B) -> float32 (P,) distances of
            rows paired element by element.
        k1: int >= 1.
        k2: int >= 1.
        lambda_value: float in [0, 1].
        tile_size: int or None, side of the square tiles of the full matrix (None: 4096).
        query_gallery_distances: optional float array (num_query, num_gallery), d(q, g) when
            the caller has it already (saves computing it again).

    Returns:
        float32 array (num_query, num_gallery).
    """
    _check_parameters(k1, k2, lambda_value)
    num_query = query_prepared[0].shape[0]
    all_prepared = tuple(
        np.concatenate([query_part, gallery_part])
        for query_part, gallery_part in zip(query_prepared, gallery_prepared, strict=True)
    )
    num_items = all_prepared[0].shape[0]
    width = min(max(k1 + 1, k2), num_items)
    neighbours, row_maxima = symmetric_neighbours(
        all_prepared, pairwise, width, tile_size or _TILE_SIZE
    )

    def pair_values(rows, columns):
        values = np.empty(rows.shape[0], dtype=np.float32)
        chunk = 1 << 12
        for start in range(0, rows.shape[0], chunk):
            stop = min(start + chunk, rows.shape[0])
            distances = row_pairs(
                slice_prepared(all_prepared, rows[start:stop]),
                slice_prepared(all_prepared, columns[start:stop]),
            )
            values[start:stop] = distances * distances
        return values / row_maxima[rows]

    def query_gallery_block(start, stop):
        if query_gallery_distances is not None:
            block = np.array(query_gallery_distances[start:stop], dtype=np.float32)
        else:
            block = np.asarray(
                pairwise(slice_prepared(query_prepared, slice(start, stop)), gallery_prepared),
                dtype=np.float32,
            )
        np.multiply(block, block, out=block)
        block /= row_maxima[start:stop, None]
        return block

    return _re_rank(neighbours, num_query, k1, k2, lambda_value, pair_values, query_gallery_block)


def _local_distance(local_prepared_a, local_prepared_b):
    return aligned_distance_pairwise(local_prepared_a, local_prepared_b).astype(np.float32)


def _combined_functions(metric, num_global_parts):
    """pairwise and row_pairs of global + local over concatenated prepared tuples."""
    definition = get_distance_metric(metric)

    def pairwise(rows_a, rows_b):
        distances = definition.pairwise(rows_a[:num_global_parts], rows_b[:num_global_parts])
        distances += _local_distance(rows_a[num_global_parts:], rows_b[num_global_parts:])
        return distances

    def row_pairs(rows_a, rows_b):
        distances = definition.row_pairs(rows_a[:num_global_parts], rows_b[:num_global_parts])
        local = aligned_distance_row_pairs(rows_a[num_global_parts:], rows_b[num_global_parts:])
        return distances + local.astype(np.float32)

    return pairwise, row_pairs


def _row_metrics(distmat, ranking_inputs, rank_list, cmc_config, prefix):
    result = evaluate_ranking(
        distmat, *ranking_inputs, max_rank=max(rank_list), cmc_config=cmc_config
    )
    metrics = {f"{prefix}rank{rank}": float(result.cmc[rank - 1]) for rank in rank_list}
    metrics[f"{prefix}mAP"] = float(result.mAP)
    metrics[f"{prefix}mINP"] = float(result.mINP)
    return metrics, result


# AlignedReID's test-time normalize() (aligned_reid/utils/distance.py) adds float32's epsilon.
_NORMALIZATION_EPSILON = np.finfo(np.float32).eps


def l2_normalize_features(features):
    """Each vector (last axis) divided by its L2 norm + float32 epsilon, as AlignedReID's test.

    Args:
        features: float array (..., C): global (N, D) or stripe (N, H, C) features.

    Returns:
        float32 array of the same shape.
    """
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / (norms + _NORMALIZATION_EPSILON)


def l2_normalize_stripes(local_features):
    """Each stripe divided by its L2 norm, as AlignedReID's --normalize_feature."""
    return l2_normalize_features(local_features)


class _RankingProtocol:
    """Scores distance matrices against fixed identities and cameras with one CMC protocol.

    Args:
        ranking_inputs: (query_identity_IDs, gallery_identity_IDs, query_camera_IDs,
            gallery_camera_IDs), int array-likes.
        rank_list: sequence of int, the CMC ranks to report.
        cmc_config: str, the CMC protocol.
    """

    def __init__(self, ranking_inputs, rank_list, cmc_config):
        self.ranking_inputs = tuple(np.asarray(values) for values in ranking_inputs)
        self.rank_list = rank_list
        self.cmc_config = cmc_config

    def score(self, distmat, prefix):
        """(dict prefix + metric -> float, RankingResult) of a (num_query, num_gallery) matrix."""
        return _row_metrics(distmat, self.ranking_inputs, self.rank_list, self.cmc_config, prefix)


class _AlignedSide(NamedTuple):
    """The query or the gallery side: global embeddings and prepared stripe features."""

    features: np.ndarray
    local: tuple


def _plain_rows(query, gallery, distance_metric, protocol):
    """Scores the global, local and global + local rows on the plain distances.

    Args:
        query: _AlignedSide of the queries.
        gallery: _AlignedSide of the gallery.
        distance_metric: str, the global distance.
        protocol: _RankingProtocol.

    Returns:
        (metrics dict, the global row's RankingResult, float32 (num_query, num_gallery) local
        distances, which the re-ranked rows reuse).
    """
    global_distances = compute_distance_matrix(
        query.features, gallery.features, metric=distance_metric
    )
    local_distances = _local_distance(query.local, gallery.local)
    metrics, result = protocol.score(global_distances, "global_")
    metrics.update(protocol.score(local_distances, "local_")[0])
    combined_distances = global_distances + local_distances
    del global_distances
    metrics.update(protocol.score(combined_distances, "global_local_")[0])
    return metrics, result, local_distances


def _re_ranked_global_local(query, gallery, local_distances, distance_metric):
    """k-reciprocal re-ranking of the global + local distance; float32 (num_query, num_gallery)."""
    query_global = prepare_features(query.features, distance_metric, "query_features")
    gallery_global = prepare_features(gallery.features, distance_metric, "gallery_features")
    pairwise, row_pairs = _combined_functions(distance_metric, len(query_global))
    # The query-gallery part is the plain row's sum again: not computed a second time.
    combined_distances = compute_distance_matrix(
        query.features, gallery.features, metric=distance_metric
    )
    combined_distances += local_distances
    return re_ranking_with_pairwise(
        query_global + query.local,
        gallery_global + gallery.local,
        pairwise,
        row_pairs,
        query_gallery_distances=combined_distances,
    )


def _re_ranked_rows(query, gallery, local_distances, distance_metric, protocol):
    """Scores the three rows on their k-reciprocal re-ranked distances.

    Args:
        query: _AlignedSide of the queries.
        gallery: _AlignedSide of the gallery.
        local_distances: float32 (num_query, num_gallery), the plain local distances.
        distance_metric: str, the global distance.
        protocol: _RankingProtocol.

    Returns:
        dict of the *_re_ranking_* metrics.
    """
    re_ranked = re_ranking_from_features(query.features, gallery.features, metric=distance_metric)
    metrics = protocol.score(re_ranked, "global_re_ranking_")[0]
    re_ranked = re_ranking_with_pairwise(
        query.local,
        gallery.local,
        _local_distance,
        aligned_distance_row_pairs,
        query_gallery_distances=local_distances,
    )
    metrics.update(protocol.score(re_ranked, "local_re_ranking_")[0])
    re_ranked = _re_ranked_global_local(query, gallery, local_distances, distance_metric)
    metrics.update(protocol.score(re_ranked, "global_local_re_ranking_")[0])
    return metrics


def evaluate_aligned_features(
    query_features,
    gallery_features,
    query_local_features,
    gallery_local_features,
    query_identity_IDs,
    gallery_identity_IDs,
    query_camera_IDs,
    gallery_camera_IDs,
    *,
    distance_metric="cosine",
    use_re_ranking=False,
    rank_list=DEFAULT_RANKS,
    cmc_config="market1501",
    normalize_local_features=False,
    normalize_features=False,
):
    """Scores the global, local and global + local distances (AlignedReID's table rows).

    Args:
        query_features: float32 array (num_query, D), the global embeddings.
        gallery_features: float32 array (num_gallery, D).
        query_local_features: float array (num_query, H, C), the stripe features.
        gallery_local_features: float array (num_gallery, H, C).
        query_identity_IDs: int array (num_query,).
        gallery_identity_IDs: int array (num_gallery,).
        query_camera_IDs: int array (num_query,).
        gallery_camera_IDs: int array (num_gallery,).
        distance_metric: str, the global distance (see evaluation.distances).
        use_re_ranking: bool, also score the k-reciprocal re-ranked distances of each row.
        rank_list: sequence of int, the CMC ranks to report.
        cmc_config: str, the CMC protocol.
        normalize_local_features: bool, L2-normalise each stripe first.
        normalize_features: bool, L2-normalise the global features and each stripe first, as
            AlignedReID's test does with --normalize_feature (its default).

    Returns:
        dict str -> float. For each row r of ROW_NAMES: r_rank{k}, r_mAP, r_mINP and, with
        re-ranking, r_re_ranking_rank{k}, r_re_ranking_mAP, r_re_ranking_mINP. The global row is
        repeated without prefix (rank{k}, mAP, mINP, re_ranking_*), as evaluate_features names
        it, with num_valid_queries and num_excluded_queries.
    """
    protocol = _RankingProtocol(
        (query_identity_IDs, gallery_identity_IDs, query_camera_IDs, gallery_camera_IDs),
        rank_list,
        cmc_config,
    )
    if normalize_features:
        query_features = l2_normalize_features(query_features)
        gallery_features = l2_normalize_features(gallery_features)
    if normalize_local_features or normalize_features:
        query_local_features = l2_normalize_stripes(query_local_features)
        gallery_local_features = l2_normalize_stripes(gallery_local_features)
    query_local = prepare_stripes(query_local_features, np.float32, "query_local_features")
    gallery_local = prepare_stripes(gallery_local_features, np.float32, "gallery_local_features")
    query = _AlignedSide(query_features, query_local)
    gallery = _AlignedSide(gallery_features, gallery_local)
    metrics, result, local_distances = _plain_rows(query, gallery, distance_metric, protocol)
    if use_re_ranking:
        metrics.update(_re_ranked_rows(query, gallery, local_distances, distance_metric, protocol))
    # The global row under evaluate_features' names, which training monitors and logs.
    for key in list(metrics):
        if key.startswith("global_") and not key.startswith("global_local_"):
            metrics[key[len("global_") :]] = metrics[key]
    metrics["num_valid_queries"] = int(result.num_valid_queries)
    metrics["num_excluded_queries"] = int(result.num_excluded_queries)
    return metrics


def metrics_by_row(metrics):
    """Groups flat six-row metrics into one entry per row, for metrics.json.

    Args:
        metrics: dict from evaluate_aligned_features (optionally with a common prefix removed).

    Returns:
        dict row name -> dict metric -> float, row names "global", "global_re_ranking", "local",
        "local_re_ranking", "global_local", "global_local_re_ranking" (those present).
    """
    rows = {}
    for row in ROW_NAMES:
        for suffix in ("", RE_RANKING_SUFFIX):
            prefix = f"{row}{suffix}_"
            entry = {}
            for key, value in metrics.items():
                if not key.startswith(prefix):
                    continue
                name = key[len(prefix) :]
                # "global_" must not take "global_local_*" or "global_re_ranking_*" keys.
                if name.startswith(("local_", "re_ranking_")):
                    continue
                entry[name] = value
            if entry:
                rows[f"{row}{suffix}"] = entry
    return rows


def format_row_metrics(metrics, title):
    """Renders flat six-row metrics as one line per row.

    Args:
        metrics: dict from evaluate_aligned_features.
        title: str, the first line.

    Returns:
        str.
    """
    lines = [title]
    for row, values in metrics_by_row(metrics).items():
        ranks = sorted(
            int(key[4:]) for key in values if key.startswith("rank") and key[4:].isdigit()
        )
        cells = [f"rank-{rank} {values[f'rank{rank}']:.2%}" for rank in ranks]
        cells.append(f"mAP {values['mAP']:.2%}")
        if "mINP" in values:
            cells.append(f"mINP {values['mINP']:.2%}")
        lines.append(f"  {row:>23}: " + ", ".join(cells))
    if metrics.get("num_excluded_queries"):
        lines.append(
            f"  {int(metrics['num_excluded_queries'])} queries had no correct match in the "
            "gallery and were left out of the averages."
        )
    return "\n".join(lines)
