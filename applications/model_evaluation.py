"""Test-set evaluation of an inference model: embed query and gallery images, then score them.

The TensorFlow half of evaluation (a forward pass over image files, optionally averaged with the
horizontal flip: `applications.embedding`) is called here, so that the `evaluation` package stays
pure NumPy: it receives the features and returns the metrics. Images that cannot be decoded are
left out with their records and returned by name, never fatal and never silent (the policy of
`datasets.image_files`).
"""

import time

import numpy as np

from applications.embedding import extract_embeddings
from datasets.image_files import NUM_NAMED_EXAMPLES, SkippedImageLog
from evaluation.report import evaluate_features

# Keys of evaluate_model's result that hold lists of undecodable image files rather than metrics.
SKIPPED_QUERY_KEY = "skipped_query_image_file_paths"
SKIPPED_GALLERY_KEY = "skipped_gallery_image_file_paths"


def extract_features(
    inference_model,
    image_file_paths,
    *,
    image_height,
    image_width,
    batch_size=64,
    use_horizontal_flipping=False,
    verbose=1,
    return_positions=False,
    skipped_images=None,
):
    """Embeds images in file order, leaving out (and recording) those that cannot be decoded.

    Args:
        inference_model: keras.Model mapping uint8 images (batch, H, W, 3) to float32 (batch, D).
        image_file_paths: sequence of str, the images to embed.
        image_height: int, height the images are resized to.
        image_width: int, width the images are resized to.
        batch_size: int, images per forward pass.
        use_horizontal_flipping: bool, average each embedding with that of the flipped image
            (flip test-time augmentation), as the FlipReID training model does internally.
        verbose: int, 1 shows a Keras progress bar, 0 is silent.
        return_positions: bool. True: return the features of the decodable images and their
            positions in image_file_paths. False: return one row per file, and raise if any
            file cannot be decoded (a row may then never silently belong to another file).
        skipped_images: datasets.image_files.SkippedImageLog or None, where undecodable files
            are recorded (each once, with a warning the first time); None records into a
            private log.

    Returns:
        With return_positions, (float32 (M, D) features, int64 (M,) positions): row r belongs
        to image_file_paths[positions[r]], M <= len(image_file_paths). Without it, float32
        (len(image_file_paths), D), row i belongs to image_file_paths[i].

    Raises:
        ValueError: no image files; or, without return_positions, an undecodable file (named).
    """
    image_file_paths = [str(path) for path in image_file_paths]
    if not image_file_paths:
        raise ValueError("extract_features got no image files to embed.")
    (features,), positions = extract_embeddings(
        inference_model,
        image_file_paths,
        image_height=image_height,
        image_width=image_width,
        batch_size=batch_size,
        use_horizontal_flipping=use_horizontal_flipping,
        verbose=verbose,
        skipped_images=skipped_images,
    )
    if return_positions:
        return features, positions
    if len(positions) != len(image_file_paths):
        is_kept = np.zeros(len(image_file_paths), dtype=bool)
        is_kept[positions] = True
        undecodable = [path for path, kept in zip(image_file_paths, is_kept) if not kept]
        named = ", ".join(undecodable[:NUM_NAMED_EXAMPLES])
        more = ", ..." if len(undecodable) > NUM_NAMED_EXAMPLES else ""
        raise ValueError(
            f"Cannot decode {len(undecodable)} image file(s): {named}{more}. Remove or replace "
            "them, or call extract_features with return_positions=True to leave them out."
        )
    return features


def extract_split_features(inference_model, split, split_name, **extraction_options):
    """Embeds the decodable images of a query or gallery split, with their records.

    Args:
        inference_model: keras.Model, uint8 images (batch, H, W, 3) -> one or several outputs.
        split: pandas DataFrame with image_file_path, identity_ID and camera_ID columns.
        split_name: str, "query" or "gallery" (in warnings and errors).
        **extraction_options: image_height, image_width, batch_size, use_horizontal_flipping
            and verbose of applications.embedding.extract_embeddings.

    Returns:
        (outputs, records, skipped): a list with one float32 array (M, ...) per model output,
        the M records of the embedded images in feature order (DataFrame), and the undecodable
        image files left out (list of str, input order).

    Raises:
        ValueError: none of the split's images could be decoded (the first files named).
    """
    image_file_paths = split["image_file_path"].to_numpy(dtype=str)
    outputs, positions = extract_embeddings(
        inference_model,
        image_file_paths,
        skipped_images=SkippedImageLog(split_name),
        **extraction_options,
    )
    is_kept = np.zeros(len(split), dtype=bool)
    is_kept[positions] = True
    skipped = image_file_paths[~is_kept].tolist()
    if not is_kept.any():
        raise ValueError(
            f"None of the {len(split)} {split_name} images could be decoded (e.g. "
            f"{', '.join(skipped[:NUM_NAMED_EXAMPLES])}); check that they are whole JPEG "
            "or PNG files."
        )
    # The records of the embedded images only, in the order of their features.
    return outputs, split.iloc[positions], skipped


def save_features_file(features_file_path, query, gallery, **feature_arrays):
    """Writes features.npz: the given feature arrays plus each split's identities, cameras, paths.

    Args:
        features_file_path: str, the .npz file to write.
        query: pandas DataFrame of the embedded query images, in feature order.
        gallery: pandas DataFrame of the embedded gallery images, in feature order.
        **feature_arrays: name -> array, e.g. query_features (Q, D), gallery_features (G, D).
    """
    np.savez(
        features_file_path,
        **feature_arrays,
        query_identity_IDs=query["identity_ID"].to_numpy(),
        gallery_identity_IDs=gallery["identity_ID"].to_numpy(),
        query_camera_IDs=query["camera_ID"].to_numpy(),
        gallery_camera_IDs=gallery["camera_ID"].to_numpy(),
        query_image_file_paths=query["image_file_path"].to_numpy(dtype=str),
        gallery_image_file_paths=gallery["image_file_path"].to_numpy(dtype=str),
    )


def evaluate_model(
    inference_model,
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
    verbose=1,
):
    """Embeds the query and gallery images and scores the ranking.

    Images that cannot be decoded are left out of the evaluation (with their records), and
    their paths are returned, so the caller can count them and say so.

    Args:
        inference_model: keras.Model, uint8 images (batch, H, W, 3) -> float32 (batch, D).
        query: pandas DataFrame with image_file_path, identity_ID and camera_ID columns.
        gallery: pandas DataFrame with the same columns.
        image_height: int.
        image_width: int.
        batch_size: int, images per forward pass.
        use_horizontal_flipping: bool, flip test-time augmentation.
        distance_metric: str, see evaluation.distances.
        use_re_ranking: bool, also report k-reciprocal re-ranked metrics.
        cmc_config: str, the CMC protocol.
        features_file_path: str or None; when given, the features, identities, cameras and
            file paths of the evaluated images of both splits are written there as an npz
            file.
        verbose: int, 1 shows progress bars.

    Returns:
        dict: the float metrics of evaluation.report.evaluate_features, computed on the
        decodable images only, plus feature_extraction_images_per_second (float), and under
        SKIPPED_QUERY_KEY and SKIPPED_GALLERY_KEY the undecodable image files left out (list
        of str in input order, empty when none).

    Raises:
        ValueError: no query or no gallery image could be decoded (the first files named).
    """
    start_time = time.perf_counter()
    options = dict(
        image_height=image_height,
        image_width=image_width,
        batch_size=batch_size,
        use_horizontal_flipping=use_horizontal_flipping,
        verbose=verbose,
    )
    (query_features,), query, skipped_query = extract_split_features(
        inference_model, query, "query", **options
    )
    (gallery_features,), gallery, skipped_gallery = extract_split_features(
        inference_model, gallery, "gallery", **options
    )
    images_per_second = (len(query) + len(gallery)) / (time.perf_counter() - start_time)
    if features_file_path is not None:
        save_features_file(
            features_file_path,
            query,
            gallery,
            query_features=query_features,
            gallery_features=gallery_features,
        )
    metrics = evaluate_features(
        query_features,
        gallery_features,
        query["identity_ID"].to_numpy(),
        gallery["identity_ID"].to_numpy(),
        query["camera_ID"].to_numpy(),
        gallery["camera_ID"].to_numpy(),
        distance_metric=distance_metric,
        use_re_ranking=use_re_ranking,
        cmc_config=cmc_config,
    )
    metrics["feature_extraction_images_per_second"] = float(images_per_second)
    metrics[SKIPPED_QUERY_KEY] = skipped_query
    metrics[SKIPPED_GALLERY_KEY] = skipped_gallery
    return metrics
