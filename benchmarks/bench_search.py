"""Gallery search: exact NumPy vs faiss flat vs faiss IVF, time and agreement, in one run.

    python -m benchmarks.bench_search                 # 100,000 gallery images, 2,048-d
    python -m benchmarks.bench_search --num_gallery 20000 --dimension 512 --quick

Features have planted identity structure (clusters of a few images around random centres, as
ReID embeddings have), so IVF's recall is measured on the kind of data it will see. Each index
answers the same queries; the table gives build and search time, queries per second, and the
fraction of each query's top-k that brute force (the exact row) also returns (recall@k).
"""

import time

import numpy as np
from absl import app, flags

from evaluation.search import GalleryIndex, default_ivf_parameters

flags.DEFINE_integer("num_gallery", 100_000, "Gallery images.")
flags.DEFINE_integer("num_query", 1_000, "Queries.")
flags.DEFINE_integer("dimension", 2048, "Embedding dimension (resnet50 FlipReID: 4,096).")
flags.DEFINE_integer("top_k", 10, "Results per query.")
flags.DEFINE_bool("quick", False, "A small scale that runs in seconds.")
FLAGS = flags.FLAGS


def _planted_features(num_gallery, num_query, dimension, num_identities):
    """Gallery and query images of the same identities: noisy copies of shared centres."""
    random = np.random.default_rng(0)
    centres = random.standard_normal((num_identities, dimension), dtype=np.float32)

    def draw(num_items):
        labels = random.integers(0, num_identities, size=num_items)
        noise = random.standard_normal((num_items, dimension), dtype=np.float32)
        return centres[labels] + 0.6 * noise

    return draw(num_gallery), draw(num_query)


def _recall(found, expected):
    return float(np.mean([np.intersect1d(a, b).size / b.size for a, b in zip(found, expected)]))


def main(argv):
    del argv
    num_gallery, num_query, dimension = FLAGS.num_gallery, FLAGS.num_query, FLAGS.dimension
    if FLAGS.quick:
        num_gallery, num_query, dimension = 20_000, 200, 256
    num_identities = max(num_gallery // 20, 2)
    gallery, query = _planted_features(num_gallery, num_query, dimension, num_identities)
    print(
        f"Gallery {num_gallery:,} x {dimension}, {num_query:,} queries, top-{FLAGS.top_k}, "
        "cosine distance"
    )
    nlist, nprobe = default_ivf_parameters(num_gallery)
    rows, reference = [], None
    for name, index_type, nprobe_value in (
        ("exact (NumPy)", "exact", None),
        ("faiss flat", "flat", None),
        (f"faiss IVF (nlist {nlist}, nprobe {nprobe})", "ivf", None),
        (f"faiss IVF (nlist {nlist}, nprobe {max(1, nprobe // 4)})", "ivf", max(1, nprobe // 4)),
    ):
        start = time.perf_counter()
        index = GalleryIndex(gallery, index_type=index_type, nprobe=nprobe_value)
        build_seconds = time.perf_counter() - start
        start = time.perf_counter()
        result = index.search(query, FLAGS.top_k)
        search_seconds = time.perf_counter() - start
        if reference is None:
            reference = result
        recall = _recall(result.indices, reference.indices)
        rows.append((name, build_seconds, search_seconds, num_query / search_seconds, recall))
    print(f"{'index':<36} {'build s':>8} {'search s':>9} {'queries/s':>10} {'recall@k':>9}")
    for name, build_seconds, search_seconds, rate, recall in rows:
        print(f"{name:<36} {build_seconds:8.2f} {search_seconds:9.2f} {rate:10.0f} {recall:9.4f}")


if __name__ == "__main__":
    app.run(main)
