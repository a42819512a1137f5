"""CMC, mAP and mINP for person re-identification, as the community's reference code computes them.

Protocols (``cmc_config``), named after open-reid's ``cmc()`` switches as AlignedReID exposes them:

* ``market1501`` (default; Market1501, DukeMTMC-reID, MSMT17, CUHK03-NP): for each query the
  gallery images of the same identity seen by the same camera are removed; CMC counts the
  first correct match (separate_camera_set=False, single_gallery_shot=False,
  first_match_break=True).
* ``allshots``: same removal; every correct match contributes 1 / num_matches at its number
  of wrong matches ranked before it (first_match_break=False).
* ``cuhk03``: every gallery image from the query's camera is removed, then one random image
  per identity is drawn and CMC counts the position of the sampled correct match; averaged
  over 10 draws from a seeded generator (separate_camera_set=True, single_gallery_shot=True,
  first_match_break=False).

Any other ``CMCConfig`` may be passed instead of a name; every combination of the switches
follows open-reid except single_gallery_shot with first_match_break, which is refused.

mAP and mINP use the standard (market1501) removal in every protocol, as AlignedReID does:
AP is the mean of the precision at each correct match; INP is num_matches / (1-based rank of
the last correct match). Queries left with no correct match (no gallery image of their
identity from another camera) are excluded from all averages and counted. Distance ties are
broken by gallery order (a stable sort), so results are deterministic; open-reid's unstable
``argsort`` may order ties differently. When ``max_rank`` exceeds what the gallery can rank,
the CMC curve is padded with its last value, as open-reid's cumulative sum does.

The market1501 and allshots paths never sort whole rows: they only need the rank of each
correct match among the kept gallery items, which depends only on the items at most as far as
the query's farthest correct match.
"""

import dataclasses

import numpy as np

from applications.core.registry import Registry


@dataclasses.dataclass(frozen=True)
class CMCConfig:
    """open-reid's three switches of ``cmc()``.

    Attributes:
        separate_camera_set: bool, remove every gallery image of the query's camera (not only
            those of its identity) before ranking.
        single_gallery_shot: bool, draw one gallery image per identity, repeatedly.
        first_match_break: bool, count only the first correct match (else every correct match
            adds 1 / num_matches).
    """

    separate_camera_set: bool
    single_gallery_shot: bool
    first_match_break: bool

    def __post_init__(self):
        if self.single_gallery_shot and self.first_match_break:
            # open-reid would add a whole hit per draw, so its curve would climb to the number
            # of draws; no protocol uses this combination.
            raise ValueError(
                "CMCConfig: single_gallery_shot needs first_match_break=False (one correct match "
                "is drawn per query, so there is nothing to break on)."
            )


CMC_CONFIGS = Registry(
    "cmc_config",
    {
        "market1501": CMCConfig(
            separate_camera_set=False, single_gallery_shot=False, first_match_break=True
        ),
        "cuhk03": CMCConfig(
            separate_camera_set=True, single_gallery_shot=True, first_match_break=False
        ),
        "allshots": CMCConfig(
            separate_camera_set=False, single_gallery_shot=False, first_match_break=False
        ),
    },
)

NUM_SINGLE_SHOT_REPEATS = 10


@dataclasses.dataclass(frozen=True)
class RankingResult:
    """Scores of one ranking.

    Attributes:
        cmc: float64 array (max_rank,), cmc[r] is the rank-(r + 1) accuracy in [0, 1].
        mAP: float in [0, 1].
        mINP: float in [0, 1].
        num_valid_queries: int, queries with at least one correct match left.
        num_excluded_queries: int, queries without one (left out of every average).
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    num_excluded_queries: int


@dataclasses.dataclass(frozen=True)
class PositiveRanks:
    """Ranks of the correct matches of every query, flattened.

    Attributes:
        query_index: int64 (P,), the query each correct match belongs to, ascending.
        rank: int64 (P,), 0-based rank of the match among the kept gallery items (ascending
            within a query).
        order: int64 (P,), 0-based position of the match among its query's matches.
        num_matches: int64 (num_query,), correct matches per query (0 for excluded queries).
    """

    query_index: np.ndarray
    rank: np.ndarray
    order: np.ndarray
    num_matches: np.ndarray


def get_cmc_config(cmc_config):
    """Looks a CMC protocol up.

    Args:
        cmc_config: str, one of CMC_CONFIGS, or a CMCConfig (returned as it is).

    Returns:
        CMCConfig.

    Raises:
        ValueError: unknown name; the message lists the valid names.
    """
    if isinstance(cmc_config, CMCConfig):
        return cmc_config
    return CMC_CONFIGS[cmc_config]


def all_finite(matrix, block_elements=1 << 22):
    """Whether a 2-D array holds no NaN or inf, checked by row blocks to bound memory.

    Args:
        matrix: numeric array (rows, columns).
        block_elements: int, elements checked at once.

    Returns:
        bool.
    """
    block_rows = max(1, block_elements // max(matrix.shape[1], 1))
    return all(
        np.isfinite(matrix[start : start + block_rows]).all()
        for start in range(0, matrix.shape[0], block_rows)
    )


def _check_labels(values, name, length, length_name):
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {values.shape}.")
    if values.shape[0] != length:
        raise ValueError(
            f"{name} has {values.shape[0]} entries but distmat has {length} {length_name}."
        )
    return values


def validate_ranking_inputs(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=1):
    """Checks the arguments shared by the metric functions.

    Args:
        distmat: float array (num_query, num_gallery).
        q_pids: int array (num_query,).
        g_pids: int array (num_gallery,).
        q_camids: int array (num_query,).
        g_camids: int array (num_gallery,).
        max_rank: int >= 1.

    Returns:
        The arguments as NumPy arrays (distmat as a float array).

    Raises:
        ValueError: naming the offending argument.
    """
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery), got {distmat.shape}.")
    if distmat.shape[0] == 0 or distmat.shape[1] == 0:
        raise ValueError(f"distmat has an empty query or gallery axis: shape {distmat.shape}.")
    if not (np.issubdtype(distmat.dtype, np.floating) or np.issubdtype(distmat.dtype, np.integer)):
        raise ValueError(f"distmat must be numeric, got dtype {distmat.dtype}.")
    if not np.issubdtype(distmat.dtype, np.floating):
        distmat = distmat.astype(np.float64)
    if not all_finite(distmat):
        raise ValueError("distmat contains NaN or inf.")
    num_query, num_gallery = distmat.shape
    q_pids = _check_labels(q_pids, "q_pids", num_query, "query rows")
    g_pids = _check_labels(g_pids, "g_pids", num_gallery, "gallery columns")
    q_camids = _check_labels(q_camids, "q_camids", num_query, "query rows")
    g_camids = _check_labels(g_camids, "g_camids", num_gallery, "gallery columns")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive int, got {max_rank!r}.")
    return distmat, q_pids, g_pids, q_camids, g_camids


def _same_identity_pairs(q_pids, g_pids):
    """Every (query, gallery) pair sharing an identity, in query then gallery order."""
    gallery_order = np.argsort(g_pids, kind="stable")
    sorted_pids = g_pids[gallery_order]
    starts = np.searchsorted(sorted_pids, q_pids, side="left")
    stops = np.searchsorted(sorted_pids, q_pids, side="right")
    counts = stops - starts
    query_index = np.repeat(np.arange(q_pids.shape[0]), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    gallery_index = gallery_order[np.repeat(starts, counts) + offsets]
    return query_index, gallery_index


def compute_positive_ranks(distmat, q_pids, g_pids, q_camids, g_camids, separate_camera_set=False):
    """Ranks every correct match among the gallery items the market1501 protocol keeps.

    A correct match of a query is a gallery item with its identity and another camera; items
    with its identity and its camera are removed (with ``separate_camera_set``, every item of
    its camera). The rank of a correct match is the number of
    kept items closer to the query, plus the kept items at the same distance earlier in the
    gallery (stable order). Only items no farther than the query's farthest correct match can
    come before one, so each row is filtered by that threshold before anything is sorted.

    Args:
        distmat: float array (num_query, num_gallery), validated.
        q_pids: array (num_query,).
        g_pids: array (num_gallery,).
        q_camids: array (num_query,).
        g_camids: array (num_gallery,).
        separate_camera_set: bool, also remove the other identities seen by the query's camera.

    Returns:
        PositiveRanks.
    """
    num_query = distmat.shape[0]
    pair_query, pair_gallery = _same_identity_pairs(q_pids, g_pids)
    is_match = g_camids[pair_gallery] != q_camids[pair_query]
    match_query, match_gallery = pair_query[is_match], pair_gallery[is_match]
    junk_query, junk_gallery = pair_query[~is_match], pair_gallery[~is_match]
    num_matches = np.bincount(match_query, minlength=num_query).astype(np.int64)
    match_bounds = np.concatenate([[0], np.cumsum(num_matches)])
    num_junk = np.bincount(junk_query, minlength=num_query)
    junk_bounds = np.concatenate([[0], np.cumsum(num_junk)])

    ranks = np.empty(match_query.shape[0], dtype=np.int64)
    for query in np.flatnonzero(num_matches):
        row = distmat[query]
        match_columns = match_gallery[match_bounds[query] : match_bounds[query + 1]]
        match_distances = row[match_columns]
        keep = row <= match_distances.max()
        keep[junk_gallery[junk_bounds[query] : junk_bounds[query + 1]]] = False
        if separate_camera_set:
            keep &= g_camids != q_camids[query]
        candidate_distances = np.sort(row[keep])
        num_closer = np.searchsorted(candidate_distances, match_distances, side="left")
        num_tied = np.searchsorted(candidate_distances, match_distances, side="right") - num_closer
        query_ranks = num_closer
        tied = np.flatnonzero(num_tied > 1)
        if tied.size:
            # Equal distances are ordered by gallery index, like a stable argsort.
            candidate_columns = np.flatnonzero(keep)
            candidate_values = row[candidate_columns]
            for match in tied:
                query_ranks[match] += np.count_nonzero(
                    (candidate_values == match_distances[match])
                    & (candidate_columns < match_columns[match])
                )
        ranks[match_bounds[query] : match_bounds[query + 1]] = np.sort(query_ranks)
    order = np.arange(match_query.shape[0]) - np.repeat(match_bounds[:-1], num_matches)
    return PositiveRanks(match_query.astype(np.int64), ranks, order, num_matches)


def _average_precision_and_inp(positive_ranks):
    """Per-query AP and INP of the valid queries, from the ranks of their matches."""
    valid = positive_ranks.num_matches > 0
    num_query = positive_ranks.num_matches.shape[0]
    precision = (positive_ranks.order + 1) / (positive_ranks.rank + 1)
    precision_sums = np.bincount(positive_ranks.query_index, precision, minlength=num_query)
    average_precision = precision_sums[valid] / positive_ranks.num_matches[valid]
    last = np.cumsum(positive_ranks.num_matches)[valid] - 1
    inverse_negative_penalty = positive_ranks.num_matches[valid] / (positive_ranks.rank[last] + 1)
    return average_precision, inverse_negative_penalty


def _market1501_cmc(positive_ranks, max_rank, num_valid):
    first = positive_ranks.rank[positive_ranks.order == 0]
    hits = np.bincount(first[first < max_rank], minlength=max_rank)
    return np.cumsum(hits) / num_valid


def _allshots_cmc(positive_ranks, max_rank, num_valid):
    # open-reid adds 1/num_matches at (number of wrong matches ranked before each match).
    num_wrong_before = positive_ranks.rank - positive_ranks.order
    delta = 1.0 / positive_ranks.num_matches[positive_ranks.query_index]
    inside = num_wrong_before < max_rank
    accumulated = np.bincount(num_wrong_before[inside], weights=delta[inside], minlength=max_rank)
    return np.cumsum(accumulated) / num_valid


def _single_gallery_shot_cmc(
    distmat, q_pids, g_pids, q_camids, g_camids, valid_queries, max_rank, seed, separate_camera_set
):
    """open-reid's single-gallery-shot CMC (the cuhk03 protocol uses separate camera sets).

    For each valid query (in query order) the gallery is sorted stably, the query's camera is
    removed (without ``separate_camera_set`` only the query's identity in its camera), and
    NUM_SINGLE_SHOT_REPEATS times one image per identity is drawn uniformly
    (identities in order of first appearance in the ranking, one ``randint`` per identity from a
    ``np.random.RandomState(seed)`` shared by all queries, which reproduces open-reid's
    ``np.random.choice`` stream); the sampled correct match adds 1/repeats at its position
    among the sampled images.
    """
    random_state = np.random.RandomState(seed)
    accumulated = np.zeros(max_rank)
    delta = 1.0 / NUM_SINGLE_SHOT_REPEATS
    for query in valid_queries:
        order = np.argsort(distmat[query], kind="stable")
        same_camera = g_camids[order] == q_camids[query]
        if separate_camera_set:
            order = order[~same_camera]
        else:
            order = order[~(same_camera & (g_pids[order] == q_pids[query]))]
        ranked_pids = g_pids[order]
        _, first_position, inverse = np.unique(ranked_pids, return_index=True, return_inverse=True)
        appearance = np.empty_like(first_position)
        appearance[np.argsort(first_position, kind="stable")] = np.arange(first_position.size)
        group = appearance[inverse.reshape(-1)]
        grouped_positions = np.argsort(group, kind="stable")
        group_sizes = np.bincount(group, minlength=first_position.size)
        group_starts = np.cumsum(group_sizes) - group_sizes
        query_group = group[np.flatnonzero(ranked_pids == q_pids[query])[0]]
        for _ in range(NUM_SINGLE_SHOT_REPEATS):
            picks = group_starts + random_state.randint(0, group_sizes)
            sampled = grouped_positions[picks]
            position = np.count_nonzero(sampled < sampled[query_group])
            if position < max_rank:
                accumulated[position] += delta
    return np.cumsum(accumulated) / len(valid_queries)


def evaluate_ranking(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank=50,
    cmc_config="market1501",
    seed=0,
):
    """Scores a query-to-gallery distance matrix: CMC, mAP, mINP and query counts.

    See the module docstring for the protocols.

    Args:
        distmat: float array (num_query, num_gallery), smaller is closer; finite.
        q_pids: int array (num_query,), query identities.
        g_pids: int array (num_gallery,), gallery identities.
        q_camids: int array (num_query,), query cameras.
        g_camids: int array (num_gallery,), gallery cameras.
        max_rank: int >= 1, length of the CMC curve (padded with its last value beyond what
            the gallery can rank).
        cmc_config: str, one of CMC_CONFIGS, or a CMCConfig.
        seed: int, seed of the single-gallery-shot draws (cuhk03 only).

    Returns:
        RankingResult.

    Raises:
        ValueError: bad shapes, NaN/inf distances, empty query or gallery, unknown cmc_config,
            non-positive max_rank, or no query with a correct match in the gallery.
    """
    config = get_cmc_config(cmc_config)
    distmat, q_pids, g_pids, q_camids, g_camids = validate_ranking_inputs(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank
    )
    positive_ranks = compute_positive_ranks(distmat, q_pids, g_pids, q_camids, g_camids)
    valid_queries = np.flatnonzero(positive_ranks.num_matches)
    num_valid = int(valid_queries.size)
    if num_valid == 0:
        raise ValueError(
            "No query has a correct match (same identity, other camera) in the gallery: "
            "check q_pids/g_pids and q_camids/g_camids."
        )
    average_precision, inverse_negative_penalty = _average_precision_and_inp(positive_ranks)
    if config.single_gallery_shot:
        cmc = _single_gallery_shot_cmc(
            distmat,
            q_pids,
            g_pids,
            q_camids,
            g_camids,
            valid_queries,
            max_rank,
            seed,
            config.separate_camera_set,
        )
    else:
        # mAP and mINP keep the market1501 removal; only the CMC sees separate camera sets.
        cmc_ranks = positive_ranks
        if config.separate_camera_set:
            cmc_ranks = compute_positive_ranks(
                distmat, q_pids, g_pids, q_camids, g_camids, separate_camera_set=True
            )
        if config.first_match_break:
            cmc = _market1501_cmc(cmc_ranks, max_rank, num_valid)
        else:
            cmc = _allshots_cmc(cmc_ranks, max_rank, num_valid)
    return RankingResult(
        cmc=cmc,
        mAP=float(np.mean(average_precision)),
        mINP=float(np.mean(inverse_negative_penalty)),
        num_valid_queries=num_valid,
        num_excluded_queries=int(distmat.shape[0] - num_valid),
    )


def compute_CMC_mAP(
    distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, cmc_config="market1501"
):
    """CMC curve and mAP of a query-to-gallery distance matrix (see evaluate_ranking).

    Args:
        distmat: float array (num_query, num_gallery), smaller is closer.
        q_pids: int array (num_query,).
        g_pids: int array (num_gallery,).
        q_camids: int array (num_query,).
        g_camids: int array (num_gallery,).
        max_rank: int >= 1, length of the CMC curve.
        cmc_config: str, one of CMC_CONFIGS, or a CMCConfig.

    Returns:
        (cmc, mAP): float64 array (max_rank,) with cmc[0] the rank-1 accuracy, and float; both
        fractions in [0, 1].
    """
    result = evaluate_ranking(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, cmc_config=cmc_config
    )
    return result.cmc, result.mAP
