"""Find people in your own images with a trained run: extract, search, compare CMC, export.

    python -m applications.search_images extract --weights_path RUN/inference_model.h5 \\
        --image_folder_path CAMERA_CROPS --features_file_path gallery.npz
    python -m applications.search_images search --gallery_features_path gallery.npz \\
        --query_path person.jpg --top_k 10 [--use_re_ranking]
    python -m applications.search_images compare_cmc --cmc_file_paths RUN_A,RUN_B \\
        --output_file_path cmc_comparison.png
    python -m applications.search_images export --weights_path RUN/inference_model.h5 \\
        --image_folder_path SOME_IMAGES --export_folder_path DIR

`extract` embeds every image under a folder into one .npz (features and file paths);
unreadable images are skipped, counted and named. `search` takes a query image, a folder of
them, or another features file, searches the gallery (exact for small galleries, a faiss index
built once and saved beside the gallery features for large ones), prints the top-k with
distances and writes them as CSV. `compare_cmc` draws the CMC curves of several runs
(their cmc_curve.csv) on one plot. `export` writes a run's saved weights as a SavedModel and
ONNX for serving (see applications/export.py), checked on images of the folder; unlike
solution.py's --export_folder_path it needs neither the dataset nor the model flags.

This module is an entry point: it reads its own flags once and calls library functions.
"""

import os
import sys

from absl import app, flags, logging

from applications.core import backend  # noqa: F401  (selects legacy Keras before TensorFlow)
from applications.export import export_for_serving
from applications.feature_extractor import (
    FeatureExtractor,
    extract_folder,
    format_extraction_summary,
    list_image_files,
    load_features,
)
from evaluation.search import (
    SearchResult,
    format_search_results,
    index_file_path_for,
    load_or_build_gallery_index,
    search_gallery,
    write_search_results_csv,
)
from evaluation.visualization import plot_cmc_curves, read_cmc_csv

COMMANDS = ("extract", "search", "compare_cmc", "export")
_MAX_PRINTED_QUERIES = 20
FLAGS = flags.FLAGS


def _define_flags():
    _define_model_flags()
    _define_search_flags()
    _define_cmc_flags()


def _define_model_flags():
    """Flags of the model, the images and the files that extract and export read."""
    flags.DEFINE_string(
        "weights_path",
        None,
        "extract/search: inference_model.h5 (or training_model.h5) of a run folder; the model "
        "is rebuilt from the model_config.json beside it. search: defaults to the weights "
        "recorded in the gallery features file.",
    )
    flags.DEFINE_bool(
        "use_horizontal_flipping",
        None,
        "extract/search/export: average each embedding with that of the mirrored image "
        "(default: the run's --use_horizontal_flipping_in_evaluation).",
    )
    flags.DEFINE_integer("batch_size", 64, "Images per forward pass.", lower_bound=1)
    flags.DEFINE_string(
        "image_folder_path",
        None,
        "extract: the folder of images, searched recursively. export: images for the parity check.",
    )
    flags.DEFINE_string(
        "export_folder_path",
        None,
        "export: the folder for saved_model/, model.onnx and export_config.json (it must not "
        "hold an export yet).",
    )
    flags.DEFINE_string("features_file_path", None, "extract: the .npz file to write.")


def _define_search_flags():
    """Flags of search: the features, the query, the index, re-ranking and the results file."""
    flags.DEFINE_string(
        "gallery_features_path", None, "search: the gallery .npz written by extract."
    )
    flags.DEFINE_string(
        "query_path",
        None,
        "search: a query image, a folder of query images, or a query .npz written by extract.",
    )
    flags.DEFINE_integer("top_k", 10, "search: results per query.", lower_bound=1)
    flags.DEFINE_enum(
        "distance_metric",
        "cosine",
        ["cosine", "euclidean", "squared_euclidean"],
        "search: distance between embeddings (the runs evaluate with cosine).",
    )
    flags.DEFINE_enum(
        "index_type",
        "auto",
        ["auto", "exact", "flat", "ivf"],
        "search: auto picks exact NumPy search up to 20,000 gallery images, a faiss flat index "
        "up to 500,000 and a faiss IVF index above; faiss indexes are saved beside the gallery "
        "features and reused.",
    )
    flags.DEFINE_integer(
        "nprobe",
        None,
        "search with an IVF index: cells searched per query (default an eighth of them; more "
        "is slower and closer to exact).",
        lower_bound=1,
    )
    flags.DEFINE_bool(
        "use_re_ranking",
        False,
        "search: re-order each query's first --re_ranking_candidates results by k-reciprocal "
        "re-ranking (Zhong et al. 2017).",
    )
    flags.DEFINE_integer(
        "re_ranking_candidates",
        100,
        "search: results per query that re-ranking re-orders.",
        lower_bound=1,
    )
    flags.DEFINE_string(
        "results_file_path",
        "search_results.csv",
        "search: CSV of query, rank, gallery image and distance; an existing file is kept and "
        "the results go to name_2.csv, name_3.csv, ...",
    )


def _define_cmc_flags():
    """Flags of compare_cmc."""
    flags.DEFINE_list(
        "cmc_file_paths",
        None,
        "compare_cmc: run folders (their cmc_curve.csv) or cmc_curve.csv files, comma-separated.",
    )
    flags.DEFINE_list(
        "labels", None, "compare_cmc: legend labels, one per run (default: the folder names)."
    )
    flags.DEFINE_string("output_file_path", "cmc_comparison.png", "compare_cmc: the PNG to write.")


# Flags each command reads, the required ones first.
COMMAND_FLAGS = {
    "extract": (
        ("weights_path", "image_folder_path", "features_file_path"),
        ("use_horizontal_flipping", "batch_size"),
    ),
    "search": (
        ("gallery_features_path", "query_path"),
        (
            "weights_path",
            "use_horizontal_flipping",
            "batch_size",
            "top_k",
            "distance_metric",
            "index_type",
            "nprobe",
            "use_re_ranking",
            "re_ranking_candidates",
            "results_file_path",
        ),
    ),
    "compare_cmc": (("cmc_file_paths",), ("labels", "output_file_path")),
    "export": (
        ("weights_path", "image_folder_path", "export_folder_path"),
        ("use_horizontal_flipping",),
    ),
}


def _free_file_path(file_path):
    """file_path, or name_2.ext, name_3.ext, ... when it exists: nothing is overwritten."""
    stem, extension = os.path.splitext(file_path)
    candidate, number = file_path, 1
    while os.path.exists(candidate):
        number += 1
        candidate = f"{stem}_{number}{extension}"
    return candidate


def run_extract(
    *,
    weights_path,
    image_folder_path,
    features_file_path,
    use_horizontal_flipping=None,
    batch_size=64,
):
    """Embeds a folder of images into one .npz and prints what was embedded and skipped."""
    extractor = FeatureExtractor(
        weights_path, use_horizontal_flipping=use_horizontal_flipping, batch_size=batch_size
    )
    summary = extract_folder(extractor, image_folder_path, features_file_path)
    print(format_extraction_summary(summary))
    return summary


def _query_features(
    query_path, gallery_description, weights_path, use_horizontal_flipping, batch_size
):
    """Features and paths of the queries: a features file, an image or a folder."""
    if query_path.endswith(".npz"):
        features, paths, description = load_features(query_path)
        if description.get("model_config") != gallery_description.get("model_config"):
            print("Warning: the query and gallery features come from different model settings.")
        return features, paths
    weights_path = weights_path or gallery_description.get("weights_path")
    if not weights_path:
        raise ValueError("Pass --weights_path: the gallery features file does not name one.")
    if use_horizontal_flipping is None:
        # Queries must be embedded like the gallery was.
        use_horizontal_flipping = gallery_description.get("use_horizontal_flipping")
    if os.path.isdir(query_path):
        image_file_paths, num_other_files = list_image_files(query_path)
    elif os.path.isfile(query_path):
        image_file_paths, num_other_files = [query_path], 0
    else:
        raise FileNotFoundError(
            f"No query image, folder or features file at --query_path {query_path}."
        )
    extractor = FeatureExtractor(
        weights_path, use_horizontal_flipping=use_horizontal_flipping, batch_size=batch_size
    )
    features, kept, unreadable = extractor.extract_files(
        image_file_paths, verbose=int(len(image_file_paths) > 1)
    )
    summary = dict(
        num_images=len(kept),
        unreadable_image_file_paths=unreadable,
        num_other_files=num_other_files,
        features_file_path=query_path,
    )
    if unreadable or num_other_files:
        print("\n".join(format_extraction_summary(summary).splitlines()[1:]))
    if not kept:
        raise ValueError(f"No readable query image at --query_path {query_path}.")
    return features, kept


def run_search(
    *,
    gallery_features_path,
    query_path,
    weights_path=None,
    use_horizontal_flipping=None,
    batch_size=64,
    top_k=10,
    distance_metric="cosine",
    index_type="auto",
    nprobe=None,
    use_re_ranking=False,
    re_ranking_candidates=100,
    results_file_path="search_results.csv",
):
    """Searches the gallery for the queries, prints the top-k and writes them as CSV.

    Returns:
        str, the CSV file written (numbered when results_file_path existed).
    """
    gallery_features, gallery_paths, description = load_features(gallery_features_path)
    query_features, query_paths = _query_features(
        query_path, description, weights_path, use_horizontal_flipping, batch_size
    )
    if query_features.shape[1] != gallery_features.shape[1]:
        raise ValueError(
            f"Query embeddings have {query_features.shape[1]} dimensions but the gallery "
            f"{gallery_features_path} has {gallery_features.shape[1]}: embed both with the same "
            "run's weights."
        )
    index, status = load_or_build_gallery_index(
        gallery_features,
        gallery_features_path,
        metric=distance_metric,
        index_type=index_type,
        nprobe=nprobe,
    )
    print(f"Search: {index.description()}.")
    if status != "exact":
        index_file_path = index_file_path_for(gallery_features_path, index.index_type, index.metric)
        print(f"Index {'loaded from' if status == 'loaded' else 'saved to'} {index_file_path}")
    result = search_gallery(
        query_features,
        index,
        top_k,
        use_re_ranking=use_re_ranking,
        num_re_ranking_candidates=re_ranking_candidates,
    )
    results_file_path = _free_file_path(results_file_path)
    write_search_results_csv(results_file_path, query_paths, gallery_paths, result)
    shown = min(len(query_paths), _MAX_PRINTED_QUERIES)
    first_rows = SearchResult(indices=result.indices[:shown], distances=result.distances[:shown])
    print(format_search_results(query_paths[:shown], gallery_paths, first_rows))
    if shown < len(query_paths):
        print(f"... and {len(query_paths) - shown} more queries.")
    print(
        f"Top-{result.indices.shape[1]} results of {len(query_paths)} queries: {results_file_path}"
    )
    return results_file_path


def run_compare_cmc(*, cmc_file_paths, labels=None, output_file_path="cmc_comparison.png"):
    """Draws the CMC curves of several runs on one plot.

    Args:
        cmc_file_paths: run folders (their cmc_curve.csv) or CMC CSV files.
        labels: legend labels, one per path (None: the run folder names).
        output_file_path: the PNG (numbered when it exists).

    Returns:
        str, the PNG written.
    """
    labels = list(labels or [])
    if labels and len(labels) != len(cmc_file_paths):
        raise ValueError(
            f"--labels has {len(labels)} names for {len(cmc_file_paths)} --cmc_file_paths."
        )
    curves = {}
    for index, path in enumerate(cmc_file_paths):
        if os.path.isdir(path):
            file_path, run_folder_path = os.path.join(path, "cmc_curve.csv"), path
        else:
            file_path, run_folder_path = path, os.path.dirname(os.path.abspath(path))
        label = labels[index] if labels else os.path.basename(os.path.normpath(run_folder_path))
        if label in curves:
            label = f"{label} ({index + 1})"
        curves[label] = read_cmc_csv(file_path)
    output_file_path = _free_file_path(output_file_path)
    plot_cmc_curves(curves, output_file_path)
    print(f"CMC curves of {len(curves)} runs: {output_file_path}")
    return output_file_path


def run_export(
    *, weights_path, image_folder_path, export_folder_path, use_horizontal_flipping=None
):
    """Exports a run's weights for serving, checked on the folder's images (see export.py).

    Returns:
        dict, see applications.export.export_inference_model.
    """
    extractor = FeatureExtractor(weights_path, use_horizontal_flipping=use_horizontal_flipping)
    image_file_paths, _ = list_image_files(image_folder_path)
    return export_for_serving(
        extractor.inference_model,
        export_folder_path,
        image_height=extractor.image_height,
        image_width=extractor.image_width,
        export_with_flipping=extractor.use_horizontal_flipping,
        parity_image_file_paths=image_file_paths,
    )


def main(argv):
    commands = argv[1:]
    command = commands[0].replace("-", "_") if len(commands) == 1 else None
    if command not in COMMANDS:
        sys.exit(
            f"Usage: python -m applications.search_images {{{'|'.join(COMMANDS)}}} [--flags]; "
            f"got {' '.join(commands) or 'no command'}. --helpfull lists the flags."
        )
    required, optional = COMMAND_FLAGS[command]
    missing = [name for name in required if not FLAGS[name].value]
    if missing:
        sys.exit(f"Error: the {command} command needs {', '.join('--' + n for n in missing)}.")
    arguments = {name: FLAGS[name].value for name in required + optional}
    try:
        functions = {
            "extract": run_extract,
            "search": run_search,
            "compare_cmc": run_compare_cmc,
            "export": run_export,
        }
        functions[command](**arguments)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as error:
        logging.debug("Stopped by an error.", exc_info=True)
        sys.exit(f"Error: {error}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
