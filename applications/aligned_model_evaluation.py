"""Test-set evaluation of local-branch models and of mutually learned models.

``evaluate_models`` is ``applications.model_evaluation.evaluate_model`` extended to:
- a model with a local branch (two outputs: embedding and stripe features): AlignedReID's six
  rows (``evaluation.aligned_evaluation``);
- a list of models (mutual learning): each model evaluated on its own, its metrics under
  ``model_<i>_`` (1-based), the best model's copied without prefix and ``best_model`` = its i;
- ``normalize_feature`` (AlignedReID's ``--normalize_feature``): the global features, and each
  stripe, L2-normalised before any distance, as AlignedReID's test does.
A single plain model without normalize_feature gives exactly evaluate_model's result.
Undecodable query and gallery images are left out with their records and returned by name under
SKIPPED_QUERY_KEY and SKIPPED_GALLERY_KEY, with or without a local branch.
"""

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
    start_time = time.perf_counter()
    has_local = has_local_output(inference_model)
    extraction_options = dict(
        image_height=image_height,
        image_width=image_width,
        batch_size=batch_size,
        use_horizontal_flipping=use_horizontal_flipping,
        verbose=verbose,
    )
    query_outputs, query, skipped_query = extract_split_features(
        inference_model, query, "query", **extraction_options
    )
    gallery_outputs, gallery, skipped_gallery = extract_split_features(
        inference_model, gallery, "gallery", **extraction_options
    )
    # A plain model has no local features (None).
    query_features, query_local = (*query_outputs, None)[:2]
    gallery_features, gallery_local = (*gallery_outputs, None)[:2]
    images_per_second = (len(query) + len(gallery)) / (time.perf_counter() - start_time)
    if features_file_path is not None:
        # The features as the model gives them (before any normalisation).
        local_arrays = (
            dict(query_local_features=query_local, gallery_local_features=gallery_local)
            if has_local
            else {}
        )
        save_features_file(
            features_file_path,
            query,
            gallery,
            query_features=query_features,
            gallery_features=gallery_features,
            **local_arrays,
        )
    ranking_inputs = (
        query["identity_ID"].to_numpy(),
        gallery["identity_ID"].to_numpy(),
        query["camera_ID"].to_numpy(),
        gallery["camera_ID"].to_numpy(),
    )
    options = dict(
        distance_metric=distance_metric, use_re_ranking=use_re_ranking, cmc_config=cmc_config
    )
    if has_local:
        metrics = evaluate_aligned_features(
            query_features,
            gallery_features,
            query_local,
            gallery_local,
            *ranking_inputs,
            normalize_features=normalize_feature,
            **options,
        )
    else:
        metrics = evaluate_features(
            l2_normalize_features(query_features),
            l2_normalize_features(gallery_features),
            *ranking_inputs,
            **options,
        )
    metrics["feature_extraction_images_per_second"] = float(images_per_second)
    metrics[SKIPPED_QUERY_KEY] = skipped_query
    metrics[SKIPPED_GALLERY_KEY] = skipped_gallery
    return metrics


def _features_file_path_of(features_file_path, model_index):
    if features_file_path is None:
        return None
    stem, extension = features_file_path.rsplit(".", 1)
    return f"{stem}_model_{model_index + 1}.{extension}"


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
    """Evaluates one inference model or each of several (see the module docstring).

    Args:
        inference_models: a keras.Model (one or two outputs) or a list of them.
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
        ValueError: no query or no gallery image could be decoded (the first files named).
    """
    options = dict(
        image_height=image_height,
        image_width=image_width,
        batch_size=batch_size,
        use_horizontal_flipping=use_horizontal_flipping,
        distance_metric=distance_metric,
        use_re_ranking=use_re_ranking,
        cmc_config=cmc_config,
        verbose=verbose,
    )
    if isinstance(inference_models, (list, tuple)):
        per_model = [
            evaluate_models(
                model,
                query,
                gallery,
                features_file_path=_features_file_path_of(features_file_path, index),
                normalize_feature=normalize_feature,
                **options,
            )
            for index, model in enumerate(inference_models)
        ]
        monitor = "re_ranking_mAP" if use_re_ranking else "mAP"
        best = max(range(len(per_model)), key=lambda index: (per_model[index][monitor], -index))
        metrics = dict(per_model[best])
        for index, model_metrics in enumerate(per_model):
            metrics.update({f"model_{index + 1}_{key}": v for key, v in model_metrics.items()})
        metrics["best_model"] = best + 1
        return metrics
    if has_local_output(inference_models) or normalize_feature:
        return _evaluate_extracted_model(
            inference_models,
            query,
            gallery,
            features_file_path=features_file_path,
            normalize_feature=normalize_feature,
            **options,
        )
    return evaluate_model(
        inference_models, query, gallery, features_file_path=features_file_path, **options
    )


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
