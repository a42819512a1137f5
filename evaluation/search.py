"""Top-k search of query embeddings in a gallery: exact NumPy, or a faiss index for large ones.

The index type follows the gallery size (`choose_index_type`):

- ``exact``: NumPy brute force over blocks of queries, the distances of
  `evaluation.distances.compute_distance_matrix` and its (distance, gallery index) order.
  Nothing to build or save; best below about 20,000 gallery images.
- ``flat``: a faiss flat index (exhaustive, so still exact, but multi-threaded BLAS and a heap
  instead of NumPy's partition); built once and saved beside the features.
- ``ivf``: a faiss inverted-file index (k-means cells, `nprobe` of them searched per query),
  approximate, for galleries above 500,000 images where even a flat scan is slow.

Distances are those of `evaluation.distances`: cosine is 1 - cosine similarity of the
L2-normalised features (faiss inner product on normalised rows), euclidean the L2 distance,
squared_euclidean its square.

Optional k-reciprocal re-ranking (`search_gallery(..., use_re_ranking=True)`) re-orders each
query's first `num_re_ranking_candidates` results: the re-ranking of
`evaluation.re_ranking.re_ranking_from_features` is computed among all queries and the union
of their candidates, so a large gallery never enters it whole.

No TensorFlow here: NumPy and faiss only.
"""

import csv
import dataclasses
import hashlib
import json
import os

import faiss
import numpy as np

from evaluation.distances import (
    get_distance_metric,
    iterate_distance_blocks,
    prepare_features,
)
from evaluation.re_ranking import re_ranking_from_features, smallest_k_stable

INDEX_TYPES = ("auto", "exact", "flat", "ivf")
# Gallery sizes where the next index type starts to pay off; see the module docstring.
EXACT_SEARCH_MAX_GALLERY = 20_000
FLAT_INDEX_MAX_GALLERY = 500_000
_INDEX_FORMAT_VERSION = 1
# Query rows per NumPy block: 256 x 1M float32 distances is 1 GB at most.
_QUERY_BLOCK_SIZE = 256


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The top-k gallery items of every query, nearest first.

    Attributes:
        indices: int64 (num_query, k), gallery row indices.
        distances: float32 (num_query, k), the distances of those items (smaller is closer).
    """

    indices: np.ndarray
    distances: np.ndarray


def choose_index_type(num_gallery):
    """The index type for a gallery of `num_gallery` items: "exact", "flat" or "ivf"."""
    if num_gallery <= EXACT_SEARCH_MAX_GALLERY:
        return "exact"
    if num_gallery <= FLAT_INDEX_MAX_GALLERY:
        return "flat"
    return "ivf"


def default_ivf_parameters(num_gallery):
    """(nlist, nprobe) for an IVF index: about 4 sqrt(N) cells, one in eight searched.

    faiss' guidance is 4 sqrt(N) to 16 sqrt(N) cells with at least 39 training points each;
    searching an eighth of them keeps ReID recall near exact at a fraction of the flat cost.
    """
    nlist = int(max(1, min(4 * np.sqrt(num_gallery), num_gallery // 39)))
    nprobe = int(max(1, np.ceil(nlist / 8)))
    return nlist, nprobe


def _check_k(k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (the number of results per query) must be a positive int, got {k!r}.")


def _faiss_operand(features, metric, name):
    """float32 C-contiguous rows that faiss compares as the metric asks."""
    return np.ascontiguousarray(prepare_features(features, metric, name)[0], dtype=np.float32)


def _distances_from_faiss(values, metric):
    """faiss scores (inner products or squared L2) -> the metric's float32 distances."""
    values = values.astype(np.float32, copy=True)
    if metric == "cosine":
        values = np.float32(1.0) - values
    # Rounding can push both kinds slightly below zero, as in evaluation.distances.
    np.maximum(values, np.float32(0.0), out=values)
    if metric == "euclidean":
        np.sqrt(values, out=values)
    return values


def features_fingerprint(gallery_features):
    """SHA-1 of the float32 gallery features (shape included); ties a saved index to them."""
    features = np.ascontiguousarray(gallery_features, dtype=np.float32)
    digest = hashlib.sha1(str(features.shape).encode())
    digest.update(memoryview(features).cast("B"))
    return digest.hexdigest()


class GalleryIndex:
    """A searchable gallery of embeddings.

    Args:
        gallery_features: float (num_gallery, D) embeddings.
        metric: "cosine", "euclidean" or "squared_euclidean".
        index_type: "auto" (by size, see choose_index_type), "exact", "flat" or "ivf".
        nlist: IVF cells (None: default_ivf_parameters).
        nprobe: IVF cells searched per query (None: default_ivf_parameters).
        seed: seed of the IVF k-means.

    Raises:
        ValueError: bad features, unknown metric or index type, or IVF parameters that do not
            fit the gallery.
    """

    def __init__(
        self,
        gallery_features,
        *,
        metric="cosine",
        index_type="auto",
        nlist=None,
        nprobe=None,
        seed=0,
        _faiss_index=None,
    ):
        get_distance_metric(metric)
        if index_type not in INDEX_TYPES:
            raise ValueError(f"Unknown index_type {index_type!r}; valid names: {INDEX_TYPES}.")
        self.metric = metric
        self.gallery_features = np.ascontiguousarray(gallery_features, dtype=np.float32)
        # Validates the features too; only the exact search keeps this second copy.
        prepared = prepare_features(self.gallery_features, metric, "gallery_features")
        self.num_gallery, self.dimension = self.gallery_features.shape
        if index_type == "auto":
            index_type = choose_index_type(self.num_gallery)
        self.index_type = index_type
        self.nlist, self.nprobe = None, None
        self.faiss_index = None
        if index_type == "ivf":
            default_nlist, default_nprobe = default_ivf_parameters(self.num_gallery)
            self.nlist = default_nlist if nlist is None else int(nlist)
            self.nprobe = default_nprobe if nprobe is None else int(nprobe)
            if not 1 <= self.nlist <= self.num_gallery:
                raise ValueError(
                    f"nlist={self.nlist} must be in [1, {self.num_gallery}] (the gallery size)."
                )
            self.nprobe = min(max(self.nprobe, 1), self.nlist)
        self._prepared = prepared if index_type == "exact" else None
        if index_type != "exact":
            self.faiss_index = (
                self._build_faiss_index(np.ascontiguousarray(prepared[0]), seed)
                if _faiss_index is None
                else _faiss_index
            )
            if index_type == "ivf":
                self.faiss_index.nprobe = self.nprobe

    def _build_faiss_index(self, operand, seed):
        """A faiss index over operand, float32 (num_gallery, D): the prepared features."""
        faiss_metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        if self.index_type == "flat":
            index = (
                faiss.IndexFlatIP(self.dimension)
                if self.metric == "cosine"
                else faiss.IndexFlatL2(self.dimension)
            )
        else:
            quantizer = (
                faiss.IndexFlatIP(self.dimension)
                if self.metric == "cosine"
                else faiss.IndexFlatL2(self.dimension)
            )
            index = faiss.IndexIVFFlat(quantizer, self.dimension, self.nlist, faiss_metric)
            index.cp.seed = int(seed)
            index.train(operand)
        index.add(operand)
        return index

    def _exact_top_k(self, query_features, k):
        query_prepared = prepare_features(query_features, self.metric, "query_features")
        num_query = query_prepared[0].shape[0]
        indices = np.empty((num_query, k), dtype=np.int64)
        distances = np.empty((num_query, k), dtype=np.float32)
        for start, block in iterate_distance_blocks(
            query_prepared, self._prepared, self.metric, _QUERY_BLOCK_SIZE
        ):
            stop = start + block.shape[0]
            indices[start:stop] = smallest_k_stable(block, k)[:, :k]
            distances[start:stop] = np.take_along_axis(block, indices[start:stop], axis=1)
        return indices, distances

    def _faiss_top_k(self, query_features, k):
        operand = _faiss_operand(query_features, self.metric, "query_features")
        values, indices = self.faiss_index.search(operand, k)
        missing = (indices < 0).any(axis=1)
        if missing.any():
            # An IVF search fills fewer than k places when the probed cells hold fewer items;
            # those queries are searched again over every cell.
            self.faiss_index.nprobe = self.nlist
            values[missing], indices[missing] = self.faiss_index.search(operand[missing], k)
            self.faiss_index.nprobe = self.nprobe
        return indices.astype(np.int64), _distances_from_faiss(values, self.metric)

    def search(self, query_features, k=10):
        """The k nearest gallery items of every query.

        Args:
            query_features: float (num_query, D).
            k: results per query; at most the gallery size is returned.

        Returns:
            SearchResult with (num_query, min(k, num_gallery)) arrays. The exact and flat
            indexes return the same items as brute force; ivf is approximate.

        Raises:
            ValueError: bad k, or features that are not (num_query, D) finite numbers.
        """
        _check_k(k)
        query_features = np.asarray(query_features)
        if query_features.ndim != 2 or query_features.shape[1] != self.dimension:
            raise ValueError(
                f"query_features must have shape (num_query, {self.dimension}) like the gallery, "
                f"got {query_features.shape}."
            )
        k = min(int(k), self.num_gallery)
        if self.index_type == "exact":
            indices, distances = self._exact_top_k(query_features, k)
        else:
            indices, distances = self._faiss_top_k(query_features, k)
        return SearchResult(indices=indices, distances=distances)

    def description(self):
        """A short human-readable summary, e.g. 'faiss ivf (nlist 4000, nprobe 500), cosine'."""
        if self.index_type == "exact":
            return f"exact NumPy search over {self.num_gallery} images, {self.metric} distance"
        extra = f" (nlist {self.nlist}, nprobe {self.nprobe})" if self.index_type == "ivf" else ""
        return (
            f"faiss {self.index_type} index{extra} over {self.num_gallery} images, "
            f"{self.metric} distance"
        )

    def _metadata(self, fingerprint):
        return {
            "format_version": _INDEX_FORMAT_VERSION,
            "index_type": self.index_type,
            "metric": self.metric,
            "num_gallery": self.num_gallery,
            "dimension": self.dimension,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "features_sha1": fingerprint,
        }

    def save(self, index_file_path):
        """Writes the faiss index and a JSON description of what it indexes beside it.

        Args:
            index_file_path: str, the index file; the description goes to
                index_file_path + ".json".

        Raises:
            ValueError: an exact index has nothing to save.
        """
        if self.faiss_index is None:
            raise ValueError("An exact (NumPy) gallery index has nothing to save.")
        faiss.write_index(self.faiss_index, index_file_path)
        with open(index_file_path + ".json", "w") as file:
            json.dump(self._metadata(features_fingerprint(self.gallery_features)), file, indent=2)


def index_file_path_for(features_file_path, index_type, metric):
    """Where the index of a features file is kept: beside it, named by type and metric."""
    stem, _ = os.path.splitext(features_file_path)
    return f"{stem}.{index_type}_{metric}.faiss"


def load_or_build_gallery_index(
    gallery_features,
    features_file_path,
    *,
    metric="cosine",
    index_type="auto",
    nlist=None,
    nprobe=None,
):
    """The gallery's index, loaded from beside the features file when it is there and current.

    A faiss index is built once and saved next to `features_file_path` (see
    index_file_path_for); later calls load it if its description matches these features (same
    SHA-1, metric, type and IVF settings), and rebuild and overwrite it otherwise. Exact
    galleries have no index file.

    Args:
        gallery_features: float (num_gallery, D).
        features_file_path: str, the .npz the features came from.
        metric: distance name.
        index_type: "auto", "exact", "flat" or "ivf".
        nlist: IVF cells (None: default).
        nprobe: IVF cells searched per query (None: default).

    Returns:
        (GalleryIndex, status) with status "exact", "loaded" or "built".
    """
    gallery_features = np.ascontiguousarray(gallery_features, dtype=np.float32)
    if index_type == "auto":
        index_type = choose_index_type(gallery_features.shape[0])
    if index_type == "exact":
        return GalleryIndex(gallery_features, metric=metric, index_type="exact"), "exact"
    index_file_path = index_file_path_for(features_file_path, index_type, metric)
    if os.path.isfile(index_file_path) and os.path.isfile(index_file_path + ".json"):
        try:
            with open(index_file_path + ".json") as file:
                saved = json.load(file)
        except (OSError, ValueError):
            saved = None
        if saved is not None:
            default_nlist, default_nprobe = default_ivf_parameters(gallery_features.shape[0])
            expected = {
                "format_version": _INDEX_FORMAT_VERSION,
                "index_type": index_type,
                "metric": metric,
                "num_gallery": gallery_features.shape[0],
                "dimension": gallery_features.shape[1],
                "nlist": (default_nlist if nlist is None else int(nlist))
                if index_type == "ivf"
                else None,
                "features_sha1": features_fingerprint(gallery_features),
            }
            if all(saved.get(key) == value for key, value in expected.items()):
                faiss_index = faiss.read_index(index_file_path)
                index = GalleryIndex(
                    gallery_features,
                    metric=metric,
                    index_type=index_type,
                    nlist=expected["nlist"],
                    nprobe=(default_nprobe if nprobe is None else nprobe)
                    if index_type == "ivf"
                    else None,
                    _faiss_index=faiss_index,
                )
                return index, "loaded"
    index = GalleryIndex(
        gallery_features, metric=metric, index_type=index_type, nlist=nlist, nprobe=nprobe
    )
    index.save(index_file_path)
    return index, "built"


def search_gallery(
    query_features,
    gallery_index,
    k=10,
    *,
    use_re_ranking=False,
    num_re_ranking_candidates=100,
    k1=20,
    k2=6,
    lambda_value=0.3,
):
    """Top-k search, optionally re-ranked with k-reciprocal encoding.

    Args:
        query_features: float (num_query, D).
        gallery_index: GalleryIndex.
        k: results per query.
        use_re_ranking: re-order each query's first num_re_ranking_candidates results by the
            k-reciprocal distance (Zhong et al.), computed among all queries and the union of
            their candidates; the returned distances are then re-ranked distances.
        num_re_ranking_candidates: candidates per query that re-ranking re-orders (at least k).
        k1: re-ranking's k1.
        k2: re-ranking's k2.
        lambda_value: re-ranking's weight of the original distance.

    Returns:
        SearchResult with (num_query, min(k, num_gallery)) arrays, nearest first.
    """
    _check_k(k)
    if not use_re_ranking:
        return gallery_index.search(query_features, k)
    _check_k(num_re_ranking_candidates)
    num_candidates = max(int(num_re_ranking_candidates), int(k))
    candidates = gallery_index.search(query_features, num_candidates).indices
    union, positions = np.unique(candidates, return_inverse=True)
    positions = positions.reshape(candidates.shape)
    re_ranked = re_ranking_from_features(
        query_features,
        gallery_index.gallery_features[union],
        k1=k1,
        k2=k2,
        lambda_value=lambda_value,
        metric=gallery_index.metric,
    )
    candidate_distances = np.take_along_axis(re_ranked, positions, axis=1)
    # Stable: equal re-ranked distances keep the original order.
    order = np.argsort(candidate_distances, axis=1, kind="stable")[:, : min(k, union.size)]
    return SearchResult(
        indices=np.take_along_axis(candidates, order, axis=1),
        distances=np.take_along_axis(candidate_distances, order, axis=1).astype(np.float32),
    )


def write_search_results_csv(
    file_path, query_image_file_paths, gallery_image_file_paths, search_result
):
    """Writes one row per (query, rank): query, rank (1-based), gallery image, distance.

    Args:
        file_path: str, the CSV file to write.
        query_image_file_paths: num_query str.
        gallery_image_file_paths: num_gallery str.
        search_result: SearchResult of those queries.
    """
    with open(file_path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["query_image_file_path", "rank", "gallery_image_file_path", "distance"])
        for query_path, indices, distances in zip(
            query_image_file_paths, search_result.indices, search_result.distances
        ):
            for rank, (index, distance) in enumerate(zip(indices, distances), start=1):
                writer.writerow(
                    [query_path, rank, gallery_image_file_paths[index], f"{distance:.6f}"]
                )


def format_search_results(query_image_file_paths, gallery_image_file_paths, search_result):
    """The results as text for stdout: each query, then its ranked gallery images."""
    lines = []
    for query_path, indices, distances in zip(
        query_image_file_paths, search_result.indices, search_result.distances
    ):
        lines.append(f"{query_path}")
        for rank, (index, distance) in enumerate(zip(indices, distances), start=1):
            lines.append(f"  {rank:3d}. {distance:.4f}  {gallery_image_file_paths[index]}")
    return "\n".join(lines)
