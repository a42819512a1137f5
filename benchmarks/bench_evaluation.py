"""Times the evaluation engine against plain references on synthetic ReID features.

Usage:
    python -m benchmarks.bench_evaluation              # Market1501 scale, ~2-3 minutes, ~9 GB
    python -m benchmarks.bench_evaluation --quick      # small scale, seconds
    python -m benchmarks.bench_evaluation --scale msmt17   # feature-based re-ranking only

Features are L2-normalised float32 vectors with planted structure: an identity centre, a
camera offset and per-image noise; distractors are pure noise with their own identity label.
Peak memory is the peak of traced allocations (``tracemalloc``, which sees every NumPy buffer)
during the call, above what was allocated before it; tracing stays on for both sides.
"""

import argparse
import dataclasses
import time
import tracemalloc

import numpy as np

from evaluation.distances import compute_distance_matrix
from evaluation.metrics import compute_CMC_mAP, evaluate_ranking
from evaluation.re_ranking import re_ranking, re_ranking_from_features
from evaluation.reference import reference_market1501, reference_re_ranking

SCALES = {
    # name: (num_query, num_gallery, num_identities, num_distractors, dim)
    "market1501": (3368, 15913, 750, 2798, 2048),
    "quick": (300, 1500, 100, 200, 256),
    "msmt17": (11659, 82161, 3060, 0, 2048),
}
NUM_CAMERAS = 6


@dataclasses.dataclass
class Synthetic:
    query_features: np.ndarray
    gallery_features: np.ndarray
    query_pids: np.ndarray
    gallery_pids: np.ndarray
    query_camids: np.ndarray
    gallery_camids: np.ndarray


def make_synthetic(num_query, num_gallery, num_identities, num_distractors, dim, seed=0):
    """Seeded features with identity and camera structure (see the module docstring)."""
    rng = np.random.default_rng(seed)
    scale = np.float32(1.0 / np.sqrt(dim))
    centres = rng.standard_normal((num_identities, dim), dtype=np.float32) * scale
    camera_offsets = rng.standard_normal((NUM_CAMERAS, dim), dtype=np.float32) * (0.7 * scale)

    def images(pids, camids, distractor):
        features = rng.standard_normal((pids.shape[0], dim), dtype=np.float32)
        features *= np.float32(2.2) * scale
        features += camera_offsets[camids]
        features[~distractor] += centres[pids[~distractor]]
        features /= np.linalg.norm(features, axis=1, keepdims=True)
        return features

    query_pids = rng.integers(0, num_identities, num_query)
    gallery_pids = np.concatenate(
        [
            rng.permutation(np.resize(np.arange(num_identities), num_gallery - num_distractors)),
            np.full(num_distractors, num_identities),
        ]
    )
    query_camids = rng.integers(0, NUM_CAMERAS, num_query)
    gallery_camids = rng.integers(0, NUM_CAMERAS, num_gallery)
    query_features = images(query_pids, query_camids, np.zeros(num_query, dtype=bool))
    gallery_features = images(gallery_pids, gallery_camids, gallery_pids == num_identities)
    return Synthetic(
        query_features, gallery_features, query_pids, gallery_pids, query_camids, gallery_camids
    )


def measure(function, *args, **kwargs):
    """Runs function once; returns (result, seconds, peak traced bytes above the start)."""
    tracemalloc.reset_peak()
    start_bytes = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    result = function(*args, **kwargs)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - start_bytes
    return result, seconds, peak


def plain_distance(query_features, gallery_features):
    """1 - cosine similarity with one full NumPy matrix product."""
    query = query_features / np.linalg.norm(query_features, axis=1, keepdims=True)
    gallery = gallery_features / np.linalg.norm(gallery_features, axis=1, keepdims=True)
    return 1.0 - query @ gallery.T


def format_row(name, fast, reference, difference):
    (_, fast_seconds, fast_peak), (_, reference_seconds, reference_peak) = fast, reference
    return (
        f"| {name} | {fast_seconds:.2f} | {reference_seconds:.2f} | "
        f"{reference_seconds / fast_seconds:.1f}x | {fast_peak / 2**20:,.0f} | "
        f"{reference_peak / 2**20:,.0f} | {reference_peak / max(fast_peak, 1):.1f}x | "
        f"{difference} |"
    )


def run_comparison(scale):
    data = make_synthetic(*SCALES[scale])
    print(
        f"scale {scale}: {data.query_features.shape[0]} queries, "
        f"{data.gallery_features.shape[0]} gallery, dim {data.query_features.shape[1]}"
    )
    labels = (data.query_pids, data.gallery_pids, data.query_camids, data.gallery_camids)
    rows = []

    fast = measure(compute_distance_matrix, data.query_features, data.gallery_features)
    reference = measure(plain_distance, data.query_features, data.gallery_features)
    difference = np.abs(fast[0] - reference[0]).max()
    rows.append(format_row("distance q x g (cosine)", fast, reference, f"{difference:.1e}"))
    distmat = fast[0]

    fast = measure(compute_CMC_mAP, distmat, *labels, max_rank=50)
    reference = measure(reference_market1501, distmat, *labels, max_rank=50)
    cmc_equal = np.array_equal(fast[0][0], reference[0][0])
    map_difference = abs(fast[0][1] - reference[0][1])
    rows.append(
        format_row(
            "compute_CMC_mAP (market1501)",
            fast,
            reference,
            f"cmc identical: {cmc_equal}; mAP {map_difference:.1e}",
        )
    )
    result = evaluate_ranking(distmat, *labels)

    distances = measure(
        lambda: (
            distmat,
            compute_distance_matrix(data.query_features, data.query_features),
            compute_distance_matrix(data.gallery_features, data.gallery_features),
        )
    )[0]
    fast = measure(re_ranking, *distances)
    fast_features = measure(re_ranking_from_features, data.query_features, data.gallery_features)
    reference = measure(reference_re_ranking, *distances)
    difference = np.abs(fast[0] - reference[0]).max()
    difference_features = np.abs(fast_features[0] - reference[0]).max()
    rows.append(format_row("re_ranking (matrices)", fast, reference, f"{difference:.1e}"))
    rows.append(
        format_row(
            "re_ranking_from_features", fast_features, reference, f"{difference_features:.1e}"
        )
    )
    re_ranked = evaluate_ranking(fast[0], *labels)

    print(
        "| step | fast s | reference s | speed-up | fast peak MiB | reference peak MiB | "
        "memory ratio | largest difference |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(
        f"synthetic data: rank-1 {result.cmc[0]:.2%}, mAP {result.mAP:.2%}, "
        f"mINP {result.mINP:.2%}, excluded queries {result.num_excluded_queries}; "
        f"re-ranked rank-1 {re_ranked.cmc[0]:.2%}, mAP {re_ranked.mAP:.2%}"
    )


def run_msmt17():
    data = make_synthetic(*SCALES["msmt17"])
    print(
        f"scale msmt17: {data.query_features.shape[0]} queries, "
        f"{data.gallery_features.shape[0]} gallery, dim {data.query_features.shape[1]}"
    )
    output, seconds, peak = measure(
        re_ranking_from_features, data.query_features, data.gallery_features
    )
    result = evaluate_ranking(
        output, data.query_pids, data.gallery_pids, data.query_camids, data.gallery_camids
    )
    print("| step | seconds | peak MiB (incl. the q x g output) |")
    print("|---|---|---|")
    print(f"| re_ranking_from_features | {seconds:.0f} | {peak / 2**20:,.0f} |")
    print(f"re-ranked rank-1 {result.cmc[0]:.2%}, mAP {result.mAP:.2%}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=["market1501", "msmt17"], default="market1501")
    parser.add_argument("--quick", action="store_true", help="run at a small scale")
    arguments = parser.parse_args()
    tracemalloc.start()
    if arguments.quick:
        run_comparison("quick")
    elif arguments.scale == "msmt17":
        run_msmt17()
    else:
        run_comparison("market1501")


if __name__ == "__main__":
    main()
