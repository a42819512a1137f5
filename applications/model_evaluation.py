"""Test-set evaluation of an inference model: embed query and gallery images, then score them.

The TensorFlow half of evaluation (a forward pass over image files, optionally averaged with the
horizontal flip) lives here, so that the `evaluation` package stays pure NumPy: it receives the
features and returns the metrics.
"""

import time
import weakref

import numpy as np

from applications.backend import keras, tf
from datasets.pipeline import build_testing_dataset
from evaluation.report import evaluate_features

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
):
    """Embeds images in file order.

    Args:
        inference_model: keras.Model mapping uint8 images (batch, H, W, 3) to float32 (batch, D).
        image_file_paths: sequence of str, the images to embed.
        image_height: int, height the images are resized to.
        image_width: int, width the images are resized to.
        batch_size: int, images per forward pass.
        use_horizontal_flipping: bool, average each embedding with that of the flipped image
            (flip test-time augmentation), as the FlipReID training model does internally.
        verbose: int, 1 shows a Keras progress bar, 0 is silent.

    Returns:
        float32 array (len(image_file_paths), D), row i belongs to image_file_paths[i].
    """
    image_file_paths = list(image_file_paths)
    if not image_file_paths:
        raise ValueError("extract_features got no image files to embed.")
    dataset = build_testing_dataset(
        image_file_paths, image_height=image_height, image_width=image_width, batch_size=batch_size
    )
    forward = _forward_function(inference_model, use_horizontal_flipping)
    features_list = []
    progress_bar = keras.utils.Progbar(len(image_file_paths), verbose=verbose, unit_name="image")
    for images in dataset:
        features = np.asarray(forward(images), dtype=np.float32)
        features_list.append(features)
        progress_bar.add(features.shape[0])
    return np.concatenate(features_list, axis=0)


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
        features_file_path: str or None; when given, the features, identities and cameras of
            both splits are written there as an npz file.
        verbose: int, 1 shows progress bars.

    Returns:
        dict str -> float, see evaluation.report.evaluate_features, plus
        feature_extraction_images_per_second.
    """
    start_time = time.perf_counter()

    def extract(split):
        return extract_features(
            inference_model,
            split["image_file_path"],
            image_height=image_height,
            image_width=image_width,
            batch_size=batch_size,
            use_horizontal_flipping=use_horizontal_flipping,
            verbose=verbose,
        )

    query_features, gallery_features = extract(query), extract(gallery)
    images_per_second = (len(query) + len(gallery)) / (time.perf_counter() - start_time)
    if features_file_path is not None:
        np.savez(
            features_file_path,
            query_features=query_features,
            gallery_features=gallery_features,
            query_identity_IDs=query["identity_ID"].to_numpy(),
            gallery_identity_IDs=gallery["identity_ID"].to_numpy(),
            query_camera_IDs=query["camera_ID"].to_numpy(),
            gallery_camera_IDs=gallery["camera_ID"].to_numpy(),
            query_image_file_paths=query["image_file_path"].to_numpy(dtype=str),
            gallery_image_file_paths=gallery["image_file_path"].to_numpy(dtype=str),
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
    return metrics
