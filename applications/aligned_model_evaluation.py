"""Test-set evaluation of local-branch models and of mutually learned models.

``evaluate_models`` takes a list of models (one model is a list of one) and is
``applications.model_evaluation.evaluate_model`` extended to:
- a model with a local branch (two outputs: embedding and stripe features): AlignedReID's six
  rows (``evaluation.aligned_evaluation``);
- several models (mutual learning): each model evaluated on its own, its metrics under
  ``model_<i>_`` (1-based), the best model's copied without prefix and ``best_model`` = its i;
- ``normalize_feature`` (AlignedReID's ``--normalize_feature``): the global features, and each
  stripe, L2-normalised before any distance, as AlignedReID's test does.
One plain model without normalize_feature gives exactly evaluate_model's result.
Undecodable query and gallery images are left out with their records and returned by name under
SKIPPED_QUERY_KEY and SKIPPED_GALLERY_KEY, with or without a local branch.
"""

import dataclasses
import time

from applications.model_evaluation import (
    SKIPPED_GALLERY_KEY,
    SKIPPED_QUERY_KEY,
    evaluate_model,
    extract_split_features,
    save_features_file,
)
from evaluation.aligned_evaluation import (
    evaluate_aligned_features,
    format_row_metrics,
    l2_normalize_features,
    metrics_by_row,
)
from evaluation.report import evaluate_features, format_metrics

# Between a test set's label and a metric name: "DukeMTMC_reID/mAP" (Combined's other test sets).
TEST_SET_SEPARATOR = "/"


def has_local_output(inference_model):
    """Tells whether the inference model also outputs local features (two outputs)."""
    return len(inference_model.outputs) == 2


@dataclasses.dataclass(frozen=True)
class _ExtractedTestSet:
    """The features of a test set's decodable images, as the model gives them.

    Attributes:
        query: DataFrame of the decodable query images (their records only).
        gallery: DataFrame of the decodable gallery images.
        query_features: float32 (num_query, D), the global features.
        gallery_features: float32 (num_gallery, D).
        query_local: float32 (num_query, H_map, C) local features, None for a plain model.
        gallery_local: float32 (num_gallery, H_map, C), or None.
        skipped_query: list of str, the undecodable query files, in input order.
        skipped_gallery: list of str, the undecodable gallery files.
        images_per_second: float, images extracted per second.
    """

    query: object
    gallery: object
    query_features: object
    gallery_features: object
    query_local: object
    gallery_local: object
    skipped_query: list
    skipped_gallery: list
    images_per_second: float


def _extract_test_set(inference_model, query, gallery, **extraction_options):
    """_ExtractedTestSet of both splits (see extract_split_features for the options)."""
    start_time = time.perf_counter()
    query_outputs, query, skipped_query = extract_split_features(
        inference_model, query, "query", **extraction_options
    )
    gallery_outputs, gallery, skipped_gallery = extract_split_features(
        inference_model, gallery, "gallery", **extraction_options
    )
    images_per_second = (len(query) + len(gallery)) / (time.perf_counter() - start_time)
    # A plain model has no local features (None).
    query_features, query_local = (*query_outputs, None)[:2]
    gallery_features, gallery_local = (*gallery_outputs, None)[:2]
    return _ExtractedTestSet(
        query,
        gallery,
        query_features,
        gallery_features,
        query_local,
        gallery_local,
        skipped_query,
        skipped_gallery,
        images_per_second,
    )


def _save_test_set(features_file_path, test_set):
    """Writes the features as the model gives them (before any normalisation) to an npz."""
    local_arrays = (
        dict(
            query_local_features=test_set.query_local,
            gallery_local_features=test_set.gallery_local,
        )
        if test_set.query_local is not None
        else {}
    )
    save_features_file(
        features_file_path,
        test_set.query,
        test_set.gallery,
        query_features=test_set.query_features,
        gallery_features=test_set.gallery_features,
        **local_arrays,
    )


def _score_test_set(test_set, *, normalize_feature, **options):
    """A local-branch model's six rows, or the plain rows on L2-normalised features."""
    ranking_inputs = (
        test_set.query["identity_ID"].to_numpy(),
        test_set.gallery["identity_ID"].to_numpy(),
        test_set.query["camera_ID"].to_numpy(),
        test_set.gallery["camera_ID"].to_numpy(),
    )
    if test_set.query_local is not None:
        return evaluate_aligned_features(
            test_set.query_features,
            test_set.gallery_features,
            test_set.query_local,
            test_set.gallery_local,
            *ranking_inputs,
            normalize_features=normalize_feature,
            **options,
        )
    return evaluate_features(
        l2_normalize_features(test_set.query_features),
        l2_normalize_features(test_set.gallery_features),
        *ranking_inputs,
        **options,
    )


def _evaluate_extracted_model(
    inference_model,
    query,
    gallery,
    *,
    image_height,
    image_width,
    batch_size,
    use_horizontal_flipping,
    distance_metric,
    use_re_ranking,
    cmc_config,
    features_file_path,
    normalize_feature,
    verbose,
):
    """A local-branch model's six rows, or a plain model's rows on normalised features."""
    test_set = _extract_test_set(
        inference_model,
        query,
        gallery,
        image_height=image_height,
        image_width=image_width,
        batch_size=batch_size,
        use_horizontal_flipping=use_horizontal_flipping,
        verbose=verbose,
    )
    if features_file_path is not None:
        _save_test_set(features_file_path, test_set)
    metrics = _score_test_set(
        test_set,
        normalize_feature=normalize_feature,
        distance_metric=distance_metric,
        use_re_ranking=use_re_ranking,
        cmc_config=cmc_config,
    )
    metrics["feature_extraction_images_per_second"] = float(test_set.images_per_second)
    metrics[SKIPPED_QUERY_KEY] = test_set.skipped_query
    metrics[SKIPPED_GALLERY_KEY] = test_set.skipped_gallery
    return metrics


def _features_file_path_of(features_file_path, model_index):
    if features_file_path is None:
        return None
    stem, extension = features_file_path.rsplit(".", 1)
    return f"{stem}_model_{model_index + 1}.{extension}"


def _evaluate_one_model(inference_model, query, gallery, *, normalize_feature, **options):
    """One model's metrics: evaluate_model's, or the local-branch / normalised rows."""
    if has_local_output(inference_model) or normalize_feature:
        return _evaluate_extracted_model(
            inference_model, query, gallery, normalize_feature=normalize_feature, **options
        )
    return evaluate_model(inference_model, query, gallery, **options)


def _with_best_model(per_model, use_re_ranking):
    """The best model's metrics unprefixed, every model's under model_<i>_, and best_model."""
    monitor = "re_ranking_mAP" if use_re_ranking else "mAP"
    best = max(range(len(per_model)), key=lambda index: (per_model[index][monitor], -index))
    metrics = dict(per_model[best])
    for index, model_metrics in enumerate(per_model):
        metrics.update({f"model_{index + 1}_{key}": v for key, v in model_metrics.items()})
    metrics["best_model"] = best + 1
    return metrics


def evaluate_models(
    inference_models,
    query,
    gallery,
    *,
    image_height,
    image_width,
    batch_size=64,
    use_horizontal_flipping=False,
    distance_metric="cosine",
    use_re_ranking=False,
    cmc_config="market1501",
    features_file_path=None,
    normalize_feature=False,
    verbose=1,
):
    """Evaluates each of the inference models (see the module docstring).

    Args:
        inference_models: list of keras.Model (one or two outputs); one model is a list of one.
        query: DataFrame with image_file_path, identity_ID and camera_ID.
        gallery: DataFrame with the same columns.
        image_height: int.
        image_width: int.
        batch_size: int.
        use_horizontal_flipping: bool, flip test-time augmentation.
        distance_metric: str, the global distance.
        use_re_ranking: bool, also score re-ranked distances (every row).
        cmc_config: str.
        features_file_path: str or None, npz of the features (one file per model, suffixed
            _model_<i>, with several models).
        normalize_feature: bool, L2-normalise the global features and each stripe before any
            distance (AlignedReID's --normalize_feature at test time).
        verbose: int.

    Returns:
        dict str -> float: evaluate_model's keys; with a local branch, the six rows' keys of
        evaluation.aligned_evaluation.evaluate_aligned_features (scored on the decodable images
        only) plus feature_extraction_images_per_second; in every case SKIPPED_QUERY_KEY and
        SKIPPED_GALLERY_KEY hold the undecodable files left out (list of str, input order);
        with several models, every key also under model_<i>_, and best_model (1-based index
        of the model with the best mAP, re-ranked mAP with re-ranking).

    Raises:
        ValueError: inference_models is empty, or no query or no gallery image could be
            decoded (the first files named).
    """
    if not inference_models:
        raise ValueError("inference_models must list at least one model, got none.")
    options = dict(
        image_height=image_height,
        image_width=image_width,
        batch_size=batch_size,
        use_horizontal_flipping=use_horizontal_flipping,
        distance_metric=distance_metric,
        use_re_ranking=use_re_ranking,
        cmc_config=cmc_config,
        normalize_feature=normalize_feature,
        verbose=verbose,
    )
    if len(inference_models) == 1:
        return _evaluate_one_model(
            inference_models[0], query, gallery, features_file_path=features_file_path, **options
        )
    per_model = [
        _evaluate_one_model(
            model,
            query,
            gallery,
            features_file_path=_features_file_path_of(features_file_path, index),
            **options,
        )
        for index, model in enumerate(inference_models)
    ]
    return _with_best_model(per_model, use_re_ranking)


def _model_metrics(metrics, model_number):
    prefix = f"model_{model_number}_"
    return {key[len(prefix) :]: value for key, value in metrics.items() if key.startswith(prefix)}


def _format_one(metrics, title):
    if "local_mAP" in metrics:
        return format_row_metrics(metrics, title)
    return format_metrics(metrics, title)


def split_test_sets(metrics):
    """Separates the metrics of Combined's other test sets ("<label>/<name>").

    Args:
        metrics: flat dict, the run's own test set unprefixed.

    Returns:
        (dict of the unprefixed metrics, dict label -> dict of that test set's metrics).
    """
    own, others = {}, {}
    for key, value in metrics.items():
        label, separator, name = key.partition(TEST_SET_SEPARATOR)
        if separator:
            others.setdefault(label, {})[name] = value
        else:
            own[key] = value
    return own, others


def format_evaluation(metrics, title):
    """Renders evaluate_models' metrics: one block per model with several, six rows with a
    local branch, else as evaluation.report.format_metrics; then one block per other test set
    ("<label>/<name>" keys, Combined's other datasets), titled with its label.

    Args:
        metrics: dict from evaluate_models.
        title: str, the first line.

    Returns:
        str.
    """
    metrics, others = split_test_sets(metrics)
    if others:
        blocks = [format_evaluation(metrics, title)]
        blocks += [format_evaluation(values, f"  on {label}:") for label, values in others.items()]
        return "\n".join(blocks)
    if "best_model" not in metrics:
        return _format_one(metrics, title)
    best = int(metrics["best_model"])
    blocks = [title]
    number = 1
    while f"model_{number}_mAP" in metrics:
        label = f"model {number}" + (" (best)" if number == best else "") + ":"
        blocks.append(_format_one(_model_metrics(metrics, number), label))
        number += 1
    return "\n".join(blocks)


def metrics_for_json(metrics):
    """Nests evaluate_models' flat metrics for metrics.json: one entry per row and per model.

    Args:
        metrics: dict from evaluate_models.

    Returns:
        dict: with a local branch, row name -> metrics (global, global_re_ranking, local, ...);
        with several models, "model_<i>" -> that model's entries and "best_model"; otherwise
        {"global": ...} for the plain rows. Combined's other test sets add "test_sets": label ->
        the same nesting of that test set's metrics.
    """
    metrics, others = split_test_sets(metrics)
    if others:
        nested = metrics_for_json(metrics)
        nested["test_sets"] = {label: metrics_for_json(values) for label, values in others.items()}
        return nested
    if "best_model" in metrics:
        nested = {"best_model": int(metrics["best_model"])}
        number = 1
        while f"model_{number}_mAP" in metrics:
            nested[f"model_{number}"] = metrics_for_json(_model_metrics(metrics, number))
            number += 1
        return nested
    if "local_mAP" in metrics:
        return metrics_by_row(metrics)
    rows = {"global": {k: v for k, v in metrics.items() if not k.startswith("re_ranking_")}}
    re_ranked = {
        k[len("re_ranking_") :]: v for k, v in metrics.items() if k.startswith("re_ranking_")
    }
    if re_ranked:
        rows["global_re_ranking"] = re_ranked
    return rows
