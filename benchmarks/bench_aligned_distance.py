"""Times AlignedReID's aligned local distance against a plain per-pair dynamic programme.

Usage:
    python -m benchmarks.bench_aligned_distance            # Market1501 scale, H = 8 and 16
    python -m benchmarks.bench_aligned_distance --quick    # small scale, seconds
    python -m benchmarks.bench_aligned_distance --re_ranking --stripes 8
        # also local re-ranking (query-query and gallery-gallery tiles too), next to the global
        # re-ranking of 2,048-d features, with their peak memory

At Market1501 scale the query-gallery matrix is 3,368 x 15,913. H = 8 is AlignedReID's stripe
count (ResNet-50 at 256x128 with last stride 2); H = 16 is our feature map height at 256x128
with last stride 1. The per-pair reference (element matrix with NumPy, then the dynamic
programme in Python loops, one pair at a time) is timed on a random sample of pairs and
extrapolated to all pairs; its values on the sample are compared with the blockwise ones.
Features are ReLU outputs of random Gaussians (non-negative, as after the local branch), 128
channels. Peak memory is what ``tracemalloc`` sees of NumPy's allocations during the call,
including the output matrix.
"""

import argparse
import time
import tracemalloc

import numpy as np

from benchmarks.bench_evaluation import NUM_CAMERAS, make_synthetic
from evaluation.aligned_distance import (
    aligned_distance_pairwise,
    aligned_local_distance,
    prepare_stripes,
)
from evaluation.aligned_evaluation import aligned_distance_row_pairs, re_ranking_with_pairwise
from evaluation.re_ranking import re_ranking_from_features

SCALES = {
    # name: (num_query, num_gallery, reference pairs sampled)
    "market1501": (3368, 15913, 400),
    "quick": (200, 1000, 100),
}
# For the re-ranking features: (identities, gallery distractors), as bench_evaluation plants them.
RE_RANKING_IDENTITIES = {"market1501": (750, 2798), "quick": (60, 200)}


def per_pair_aligned_distance(stripes_a, stripes_b):
    """One pair: (H, H) element matrix, then the right/down shortest path in Python loops."""
    num_stripes = stripes_a.shape[0]
    distances = np.sqrt(((stripes_a[:, None, :] - stripes_b[None, :, :]) ** 2).sum(-1))
    elements = ((np.exp(distances) - 1.0) / (np.exp(distances) + 1.0)).tolist()
    costs = [[0.0] * num_stripes for _ in range(num_stripes)]
    for i in range(num_stripes):
        for j in range(num_stripes):
            if i == 0 and j == 0:
                best = 0.0
            elif i == 0:
                best = costs[i][j - 1]
            elif j == 0:
                best = costs[i - 1][j]
            else:
                best = min(costs[i - 1][j], costs[i][j - 1])
            costs[i][j] = best + elements[i][j]
    return costs[-1][-1]


def make_stripes(num_images, num_stripes, channels, rng):
    features = rng.standard_normal((num_images, num_stripes, channels), dtype=np.float32)
    return np.maximum(features, np.float32(0.0))


def _timed_peak(function):
    tracemalloc.start()
    start = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - start
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, peak_bytes / 2**20


def make_identity_stripes(pids, camids, num_identities, num_stripes, channels, rng):
    """ReLU stripes around an identity centre plus a camera offset; each distractor (identity
    num_identities) gets a centre of its own, so that its norm is like everyone else's."""
    centres = rng.standard_normal((num_identities, num_stripes, channels), dtype=np.float32)
    camera_offsets = rng.standard_normal((NUM_CAMERAS, num_stripes, channels), dtype=np.float32)
    features = rng.standard_normal((len(pids), num_stripes, channels), dtype=np.float32)
    distractor = pids == num_identities
    features[~distractor] += centres[pids[~distractor]]
    features[distractor] += rng.standard_normal(
        (int(distractor.sum()), num_stripes, channels), dtype=np.float32
    )
    features += np.float32(0.5) * camera_offsets[camids]
    return np.maximum(features, np.float32(0.0)) / np.float32(np.sqrt(channels))


def run_re_ranking(scale, stripe_counts, channels, seed):
    """Local re-ranking in tiles against the global re-ranking of 2,048-d features.

    Both start from features with planted identities (bench_evaluation's generator for the
    global ones, the same identities for the stripes): without identity structure some images
    come out near every other one (hubs), which inflates the sparse Jaccard step of every
    re-ranking alike.
    """
    num_query, num_gallery, _ = SCALES[scale]
    num_identities, num_distractors = RE_RANKING_IDENTITIES[scale]
    data = make_synthetic(num_query, num_gallery, num_identities, num_distractors, 2048, seed)
    rng = np.random.default_rng(seed)
    print(f"\nk-reciprocal re-ranking, {num_query} queries x {num_gallery} gallery images")
    print(f"{'distance':>28} | {'time':>8} | {'peak memory':>11}")
    _, seconds, peak = _timed_peak(
        lambda: re_ranking_from_features(data.query_features, data.gallery_features)
    )
    print(f"{'global (2,048-d, cosine)':>28} | {seconds:>6.1f} s | {peak:>7.0f} MiB")
    for num_stripes in stripe_counts:
        query_local = prepare_stripes(
            make_identity_stripes(
                data.query_pids, data.query_camids, num_identities, num_stripes, channels, rng
            )
        )
        gallery_local = prepare_stripes(
            make_identity_stripes(
                data.gallery_pids, data.gallery_camids, num_identities, num_stripes, channels, rng
            )
        )
        _, seconds, peak = _timed_peak(
            lambda query_local=query_local, gallery_local=gallery_local: re_ranking_with_pairwise(
                query_local, gallery_local, aligned_distance_pairwise, aligned_distance_row_pairs
            )
        )
        label = f"local (H = {num_stripes}, {channels} channels)"
        print(f"{label:>28} | {seconds:>6.1f} s | {peak:>7.0f} MiB")


def run(scale, stripe_counts, channels, seed):
    num_query, num_gallery, num_sampled = SCALES[scale]
    rng = np.random.default_rng(seed)
    print(
        f"aligned local distance, {num_query} x {num_gallery} pairs, {channels} channels, "
        f"reference on {num_sampled} sampled pairs, extrapolated"
    )
    print(
        f"{'H':>3} | {'blockwise':>10} | {'per-pair reference':>19} | {'speed-up':>8} | "
        f"{'peak memory':>11} | {'largest relative difference':>27}"
    )
    for num_stripes in stripe_counts:
        query = make_stripes(num_query, num_stripes, channels, rng)
        gallery = make_stripes(num_gallery, num_stripes, channels, rng)

        tracemalloc.start()
        start = time.perf_counter()
        distances = aligned_local_distance(query, gallery)
        blockwise_seconds = time.perf_counter() - start
        _, peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        rows = rng.integers(0, num_query, num_sampled)
        columns = rng.integers(0, num_gallery, num_sampled)
        query64, gallery64 = query.astype(np.float64), gallery.astype(np.float64)
        start = time.perf_counter()
        reference = np.array(
            [
                per_pair_aligned_distance(query64[row], gallery64[column])
                for row, column in zip(rows, columns)
            ]
        )
        reference_seconds = (time.perf_counter() - start) / num_sampled * num_query * num_gallery
        difference = np.max(np.abs(distances[rows, columns] - reference) / np.abs(reference))
        print(
            f"{num_stripes:>3} | {blockwise_seconds:>8.1f} s | {reference_seconds:>17.0f} s | "
            f"{reference_seconds / blockwise_seconds:>7.1f}x | "
            f"{peak_bytes / 2**20:>7.0f} MiB | {difference:>27.1e}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small scale, seconds")
    parser.add_argument(
        "--stripes", default="8,16", help="comma-separated stripe counts H (default 8,16)"
    )
    parser.add_argument("--channels", type=int, default=128, help="channels per stripe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--re_ranking", action="store_true", help="also time local and global re-ranking"
    )
    parser.add_argument(
        "--skip_distance", action="store_true", help="skip the query-gallery distance table"
    )
    arguments = parser.parse_args()
    stripe_counts = [int(value) for value in arguments.stripes.split(",")]
    scale = "quick" if arguments.quick else "market1501"
    if not arguments.skip_distance:
        run(scale, stripe_counts, arguments.channels, arguments.seed)
    if arguments.re_ranking:
        run_re_ranking(scale, stripe_counts, arguments.channels, arguments.seed)


if __name__ == "__main__":
    main()
