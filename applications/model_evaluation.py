"""Test-set evaluation of an inference model: embed query and gallery images, then score them.

The TensorFlow half of evaluation (a forward pass over image files, optionally averaged with the
horizontal flip) lives here, so that the `evaluation` package stays pure NumPy: it receives the
features and returns the metrics. Images that cannot be decoded are left out with their records
and returned by name, never fatal and never silent (the policy of `datasets.image_files`).
"""

import time
import weakref

import numpy as np

from applications.backend import keras, tf
from datasets.image_files import NUM_NAMED_EXAMPLES, SkippedImageLog
from datasets.pipeline import build_testing_dataset
from evaluation.report import evaluate_features

# Keys of evaluate_model's result that hold lists of undecodable image files rather than metrics.
SKIPPED_QUERY_KEY = "skipped_query_image_file_paths"
SKIPPED_GALLERY_KEY = "skipped_gallery_image_file_paths"

# One traced forward function per (model, flip setting): tracing anew at every evaluation costs
# seconds and makes TensorFlow warn about retracing.
_FORWARD_FUNCTIONS = weakref.WeakKeyDictionary()


def _forward_function(inference_model, use_horizontal_flipping):
    functions = _FORWARD_FUNCTIONS.setdefault(inference_model, {})
    if use_horizontal_flipping not in functions:
        # A weak reference inside the function, so that the cache never keeps a model alive.
        model_reference = weakref.ref(inference_model)

        def forward(images):
            if not use_horizontal_flipping:
                return model_reference()(images, training=False)
            # One pass over both views of the batch, then the average of each pair.
            both = tf.concat([images, tf.image.flip_left_right(images)], axis=0)
            original, flipped = tf.split(model_reference()(both, training=False), 2, axis=0)
            return (original + flipped) / 2

        # Any batch size of the pipeline's uint8 images: one trace serves every batch.
        image_shape = tuple(inference_model.input_shape[1:])
        functions[use_horizontal_flipping] = tf.function(
            forward, input_signature=[tf.TensorSpec((None, *image_shape), tf.uint8)]
        )
    return functions[use_horizontal_flipping]


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
    if skipped_images is None:
        skipped_images = SkippedImageLog("images")
    dataset = build_testing_dataset(
        image_file_paths,
        image_height=image_height,
        image_width=image_width,
        batch_size=batch_size,
        return_positions=True,
        skipped_images=skipped_images,
    )
    forward = _forward_function(inference_model, use_horizontal_flipping)
    features_list, positions_list = [], []
    progress_bar = keras.utils.Progbar(len(image_file_paths), verbose=verbose, unit_name="image")
    for images, positions in dataset:
        positions = positions.numpy()
        if positions.size == 0:
            # Every image of this batch was undecodable; the model is not called on nothing.
            continue
        features_list.append(np.asarray(forward(images), dtype=np.float32))
        positions_list.append(positions)
        # Skipped files count as done, so the bar still ends at the number of files.
        progress_bar.update(int(positions[-1]) + 1)
    if not positions_list or positions_list[-1][-1] != len(image_file_paths) - 1:
        # The last files were undecodable: the bar has not reached its end yet.
        progress_bar.update(len(image_file_paths), finalize=True)
    if features_list:
        features = np.concatenate(features_list, axis=0)
        positions = np.concatenate(positions_list).astype(np.int64)
    else:
        features = np.zeros((0, int(inference_model.output_shape[-1])), dtype=np.float32)
        positions = np.zeros(0, dtype=np.int64)
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

    def extract(split, split_name):
        image_file_paths = split["image_file_path"].to_numpy(dtype=str)
        features, positions = extract_features(
            inference_model,
            image_file_paths,
            image_height=image_height,
            image_width=image_width,
            batch_size=batch_size,
            use_horizontal_flipping=use_horizontal_flipping,
            verbose=verbose,
            return_positions=True,
            skipped_images=SkippedImageLog(split_name),
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
        return features, split.iloc[positions], skipped

    query_features, query, skipped_query = extract(query, "query")
    gallery_features, gallery, skipped_gallery = extract(gallery, "gallery")
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
