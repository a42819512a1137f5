"""From query and gallery features to the flat table of ReID metrics that training logs."""

import numpy as np

from evaluation.distances import compute_distance_matrix
from evaluation.metrics import evaluate_ranking
from evaluation.re_ranking import re_ranking_from_features

DEFAULT_RANKS = (1, 5, 10, 20)


def _ranking_metrics(
    distmat,
    query_identity_IDs,
    gallery_identity_IDs,
    query_camera_IDs,
    gallery_camera_IDs,
    rank_list,
    cmc_config,
    prefix,
):
    result = evaluate_ranking(
        distmat,
        query_identity_IDs,
        gallery_identity_IDs,
        query_camera_IDs,
        gallery_camera_IDs,
        max_rank=max(rank_list),
        cmc_config=cmc_config,
    )
    metrics = {f"{prefix}rank{rank}": float(result.cmc[rank - 1]) for rank in rank_list}
    metrics[f"{prefix}mAP"] = float(result.mAP)
    metrics[f"{prefix}mINP"] = float(result.mINP)
    return metrics, result


def evaluate_features(
    query_features,
    gallery_features,
    query_identity_IDs,
    gallery_identity_IDs,
    query_camera_IDs,
    gallery_camera_IDs,
    *,
    distance_metric="cosine",
    use_re_ranking=False,
    rank_list=DEFAULT_RANKS,
    cmc_config="market1501",
):
    """Ranks the gallery for every query and scores the ranking.

    Args:
        query_features: float32 array (num_query, D).
        gallery_features: float32 array (num_gallery, D).
        query_identity_IDs: int array (num_query,).
        gallery_identity_IDs: int array (num_gallery,).
        query_camera_IDs: int array (num_query,).
        gallery_camera_IDs: int array (num_gallery,).
        distance_metric: str, a name known to evaluation.distances ("cosine", "euclidean", ...).
        use_re_ranking: bool, also score the k-reciprocal re-ranked distances.
        rank_list: sequence of int, the CMC ranks to report (1-based).
        cmc_config: str, the CMC protocol ("market1501", "cuhk03", "allshots").

    Returns:
        dict str -> float with keys rank{r} for r in rank_list, mAP, mINP,
        num_valid_queries and num_excluded_queries, and with re-ranking the same metric keys
        again prefixed by "re_ranking_". Fractions are in [0, 1].
    """
    distmat = compute_distance_matrix(query_features, gallery_features, metric=distance_metric)
    ranking_inputs = (
        np.asarray(query_identity_IDs),
        np.asarray(gallery_identity_IDs),
        np.asarray(query_camera_IDs),
        np.asarray(gallery_camera_IDs),
    )
    metrics, result = _ranking_metrics(distmat, *ranking_inputs, rank_list, cmc_config, "")
    metrics["num_valid_queries"] = int(result.num_valid_queries)
    metrics["num_excluded_queries"] = int(result.num_excluded_queries)
    if use_re_ranking:
        del distmat  # the re-ranked matrix takes its place in memory
        re_ranked_distmat = re_ranking_from_features(
            query_features, gallery_features, metric=distance_metric
        )
        re_ranked_metrics, _ = _ranking_metrics(
            re_ranked_distmat, *ranking_inputs, rank_list, cmc_config, "re_ranking_"
        )
        metrics.update(re_ranked_metrics)
    return metrics


def format_metrics(metrics, title):
    """Renders a metrics dict of evaluate_features as a few readable lines.

    Args:
        metrics: dict str -> float from evaluate_features (optionally with a common prefix
            already removed).
        title: str, first line.

    Returns:
        str.
    """
    lines = [title]
    for prefix, label in (("", "original"), ("re_ranking_", "re-ranked")):
        if f"{prefix}mAP" not in metrics:
            continue
        ranks = sorted(
            int(key[len(prefix) + 4 :])
            for key in metrics
            if key.startswith(f"{prefix}rank") and key[len(prefix) + 4 :].isdigit()
        )
        cells = [f"rank-{rank} {metrics[f'{prefix}rank{rank}']:.2%}" for rank in ranks]
        cells.append(f"mAP {metrics[f'{prefix}mAP']:.2%}")
        if f"{prefix}mINP" in metrics:
            cells.append(f"mINP {metrics[f'{prefix}mINP']:.2%}")
        lines.append(f"  {label:>9}: " + ", ".join(cells))
    if metrics.get("num_excluded_queries"):
        lines.append(
            f"  {int(metrics['num_excluded_queries'])} queries had no correct match in the "
            "gallery and were left out of the averages."
        )
    return "\n".join(lines)
