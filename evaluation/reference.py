"""Plain, slow, obviously-correct versions of the evaluation functions.

They exist only to check and benchmark the fast implementations: a per-query loop over a stable
argsort for the metrics, literal transcriptions of open-reid's ``cmc()`` loop, and the dense
k-reciprocal re-ranking algorithm written step by step. Nothing here is used in training.
"""

from collections import defaultdict

import numpy as np


def reference_market1501(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """Per-query loop: stable argsort, remove same identity + same camera, cumulative sums.

    Args:
        distmat: float array (num_query, num_gallery).
        q_pids: array (num_query,).
        g_pids: array (num_gallery,).
        q_camids: array (num_query,).
        g_camids: array (num_gallery,).
        max_rank: int, CMC length (padded with the last value).

    Returns:
        (cmc float64 (max_rank,), mAP float, mINP float, num_valid_queries int).
    """
    hits = np.zeros(max_rank, dtype=np.int64)
    average_precisions, inverse_negative_penalties = [], []
    for query in range(distmat.shape[0]):
        order = np.argsort(distmat[query], kind="stable")
        removed = (g_pids[order] == q_pids[query]) & (g_camids[order] == q_camids[query])
        matches = (g_pids[order] == q_pids[query])[~removed]
        if not matches.any():
            continue
        first = int(np.argmax(matches))
        if first < max_rank:
            hits[first] += 1
        cumulative = np.cumsum(matches)
        precision = cumulative / np.arange(1, matches.size + 1)
        average_precisions.append(precision[matches].sum() / matches.sum())
        last = np.flatnonzero(matches)[-1]
        inverse_negative_penalties.append(matches.sum() / (last + 1))
    num_valid = len(average_precisions)
    return (
        np.cumsum(hits) / num_valid,
        float(np.mean(average_precisions)),
        float(np.mean(inverse_negative_penalties)),
        num_valid,
    )


def reference_open_reid_cmc(
    distmat,
    query_ids,
    gallery_ids,
    query_cams,
    gallery_cams,
    topk,
    separate_camera_set,
    single_gallery_shot,
    first_match_break,
    random_state,
    repeats=10,
):
    """open-reid's ``cmc()`` loop, transcribed literally (stable sort, seeded generator).

    Args:
        distmat: float array (m, n).
        query_ids, gallery_ids, query_cams, gallery_cams: arrays (m,), (n,), (m,), (n,).
        topk: int, CMC length.
        separate_camera_set: bool.
        single_gallery_shot: bool.
        first_match_break: bool.
        random_state: np.random.RandomState used for the single-gallery-shot draws.
        repeats: int, draws per query with single_gallery_shot.

    Returns:
        float64 array (topk,).
    """
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = gallery_ids[indices] == query_ids[:, np.newaxis]
    accumulated = np.zeros(topk)
    num_valid_queries = 0
    for i in range(distmat.shape[0]):
        valid = (gallery_ids[indices[i]] != query_ids[i]) | (
            gallery_cams[indices[i]] != query_cams[i]
        )
        if separate_camera_set:
            valid &= gallery_cams[indices[i]] != query_cams[i]
        if not np.any(matches[i, valid]):
            continue
        if single_gallery_shot:
            repeat = repeats
            ids_dict = defaultdict(list)
            for position, identity in zip(
                np.where(valid)[0], gallery_ids[indices[i][valid]], strict=True
            ):
                ids_dict[identity].append(position)
        else:
            repeat = 1
        for _ in range(repeat):
            if single_gallery_shot:
                sampled = np.zeros(valid.size, dtype=bool)
                for positions in ids_dict.values():
                    sampled[random_state.choice(positions)] = True
                sampled &= valid
                index = np.nonzero(matches[i, sampled])[0]
            else:
                index = np.nonzero(matches[i, valid])[0]
            delta = 1.0 / (len(index) * repeat)
            for j, k in enumerate(index):
                if k - j >= topk:
                    break
                if first_match_break:
                    accumulated[k - j] += 1
                    break
                accumulated[k - j] += delta
        num_valid_queries += 1
    return accumulated.cumsum() / num_valid_queries


def reference_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """The dense k-reciprocal re-ranking algorithm, step by step (full sorts, dense V).

    Memory is several (num_query + num_gallery)^2 float32 matrices.

    Args:
        q_g_dist: float array (num_query, num_gallery).
        q_q_dist: float array (num_query, num_query).
        g_g_dist: float array (num_gallery, num_gallery).
        k1: int.
        k2: int.
        lambda_value: float.

    Returns:
        float32 array (num_query, num_gallery).
    """
    num_query = q_g_dist.shape[0]
    full = np.concatenate(
        [
            np.concatenate([q_q_dist, q_g_dist], axis=1),
            np.concatenate([q_g_dist.T, g_g_dist], axis=1),
        ],
        axis=0,
    )
    full = np.power(full, 2).astype(np.float32)
    full = np.transpose(full / np.max(full, axis=0))
    num_items = full.shape[0]
    initial_rank = np.argsort(full, axis=1, kind="stable")
    half = int(np.around(k1 / 2.0))

    def reciprocal(item, k):
        forward = initial_rank[item, : k + 1]
        backward = initial_rank[forward, : k + 1]
        return forward[np.where(backward == item)[0]]

    encoding = np.zeros_like(full, dtype=np.float32)
    for i in range(num_items):
        members = reciprocal(i, k1)
        expanded = members
        for candidate in members:
            candidate_members = reciprocal(candidate, half)
            shared = np.intersect1d(candidate_members, members)
            if len(shared) > 2.0 / 3 * len(candidate_members):
                expanded = np.append(expanded, candidate_members)
        expanded = np.unique(expanded)
        weight = np.exp(-full[i, expanded])
        encoding[i, expanded] = weight / np.sum(weight)
    original = full[:num_query]
    if k2 != 1:
        expanded_encoding = np.zeros_like(encoding)
        for i in range(num_items):
            expanded_encoding[i] = np.mean(encoding[initial_rank[i, :k2]], axis=0)
        encoding = expanded_encoding
    inverted_index = [np.where(encoding[:, column] != 0)[0] for column in range(num_items)]
    jaccard = np.zeros_like(original, dtype=np.float32)
    for i in range(num_query):
        overlap = np.zeros((1, num_items), dtype=np.float32)
        nonzero = np.where(encoding[i] != 0)[0]
        for column in nonzero:
            others = inverted_index[column]
            overlap[0, others] += np.minimum(encoding[i, column], encoding[others, column])
        jaccard[i] = 1 - overlap / (2.0 - overlap)
    final = jaccard * (1 - lambda_value) + original * lambda_value
    return final[:, num_query:]
