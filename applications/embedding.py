"""Embeddings of images: one forward function (with flip averaging) and one extraction loop.

Every embedding that is evaluated, searched, served or benchmarked comes from `embed_images`:
the inference model's outputs in float32, optionally averaged with those of the mirrored images
(flip test-time augmentation, as the FlipReID training model does internally). Extraction from
image files goes through `extract_embeddings`, which runs the evaluation pipeline
(`datasets.pipeline.build_testing_dataset`), leaves out (and records) undecodable files and
shows one progress bar per call.
"""

import weakref

import numpy as np

from applications.core.backend import keras, tf
from datasets.image_files import SkippedImageLog
from datasets.pipeline import build_testing_dataset

# One traced forward function per (model, flip setting): tracing anew at every evaluation costs
# seconds and makes TensorFlow warn about retracing.
_EMBEDDING_FUNCTIONS = weakref.WeakKeyDictionary()


def embedding_model(inference_model):
    """The inference model reduced to its embedding output (B, D), sharing its weights.

    With AlignedReID's local branch the inference model has a second output, the local
    features; search, pictures and serving use the embedding alone.
    """
    if len(inference_model.outputs) == 1:
        return inference_model
    return keras.Model(inference_model.inputs, inference_model.outputs[0], name="embedding_model")


def embed_images(model, images, use_horizontal_flipping):
    """The model's outputs for a batch, in float32, optionally averaged with the flipped batch's.

    Args:
        model: keras.Model, images (B, H, W, 3) -> one output (B, ...) or a list of outputs.
        images: uint8 (or float in [0, 255]) tensor (B, H, W, 3).
        use_horizontal_flipping: bool, average each output with that of the mirrored image. A
            horizontal flip moves no row, so stripe (local) features average like the embedding.

    Returns:
        float32 tensor (B, ...), or a list of them with a model of several outputs.
    """
    if use_horizontal_flipping:
        # One pass over both views of the batch, then the average of each pair.
        images = tf.concat([images, tf.image.flip_left_right(images)], axis=0)
    outputs = model(images, training=False)
    is_list = isinstance(outputs, (list, tuple))
    outputs = [tf.cast(output, tf.float32) for output in (outputs if is_list else [outputs])]
    if use_horizontal_flipping:
        outputs = [tf.add(*tf.split(output, 2, axis=0)) / 2 for output in outputs]
    return outputs if is_list else outputs[0]


def embedding_function(model, use_horizontal_flipping):
    """`embed_images` traced once for the model: uint8 (None, H, W, 3) at its input size.

    Args:
        model: keras.Model with a fixed input size (None, H, W, 3).
        use_horizontal_flipping: bool.

    Returns:
        A tf.function images -> embed_images(model, images, use_horizontal_flipping), one trace
        for every batch size; cached per model without keeping the model alive.
    """
    functions = _EMBEDDING_FUNCTIONS.setdefault(model, {})
    if use_horizontal_flipping not in functions:
        # A weak reference inside the function, so that the cache never keeps a model alive.
        model_reference = weakref.ref(model)

        def forward(images):
            return embed_images(model_reference(), images, use_horizontal_flipping)

        image_shape = tuple(model.input_shape[1:])
        # No autograph: the only branch is on a Python bool, and conversion would only warn.
        functions[use_horizontal_flipping] = tf.function(
            forward,
            input_signature=[tf.TensorSpec((None, *image_shape), tf.uint8)],
            autograph=False,
        )
    return functions[use_horizontal_flipping]


def _output_shapes(model):
    """The shapes after the batch axis of each of the model's outputs (list of tuples)."""
    shapes = model.output_shape
    return [tuple(shape[1:]) for shape in (shapes if isinstance(shapes, list) else [shapes])]


def extract_embeddings(
    model,
    image_file_paths,
    *,
    image_height,
    image_width,
    batch_size=64,
    use_horizontal_flipping=False,
    verbose=1,
    skipped_images=None,
):
    """Embeds the decodable images in file order, with a progress bar over all the files.

    Args:
        model: keras.Model, uint8 images (batch, H, W, 3) -> one or several float32 outputs.
        image_file_paths: sequence of str, N files (N > 0).
        image_height: int, height the images are resized to.
        image_width: int, width the images are resized to.
        batch_size: int, images per forward pass.
        use_horizontal_flipping: bool, flip test-time augmentation (see embed_images).
        verbose: int, 1 shows a Keras progress bar, 0 is silent.
        skipped_images: datasets.image_files.SkippedImageLog or None, where undecodable files
            are recorded (each once, with a warning the first time); None records into a
            private log.

    Returns:
        (outputs, positions): a list with one float32 array (M, ...) per model output, and int64
        (M,) positions, M <= N: row r belongs to image_file_paths[positions[r]].
    """
    image_file_paths = [str(path) for path in image_file_paths]
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
    forward = embedding_function(model, use_horizontal_flipping)
    output_shapes = _output_shapes(model)
    output_parts, positions_parts = [[] for _ in output_shapes], []
    progress_bar = keras.utils.Progbar(len(image_file_paths), verbose=verbose, unit_name="image")
    for images, positions in dataset:
        positions = positions.numpy()
        if positions.size == 0:
            # Every image of this batch was undecodable; the model is not called on nothing.
            continue
        outputs = forward(images)
        for parts, output in zip(output_parts, outputs if len(output_shapes) > 1 else [outputs]):
            parts.append(np.asarray(output, dtype=np.float32))
        positions_parts.append(positions)
        # Skipped files count as done, so the bar still ends at the number of files.
        progress_bar.update(int(positions[-1]) + 1)
    if not positions_parts or positions_parts[-1][-1] != len(image_file_paths) - 1:
        # The last files were undecodable: the bar has not reached its end yet.
        progress_bar.update(len(image_file_paths), finalize=True)
    if not positions_parts:
        empty = [np.zeros((0, *shape), dtype=np.float32) for shape in output_shapes]
        return empty, np.zeros(0, dtype=np.int64)
    outputs = [np.concatenate(parts, axis=0) for parts in output_parts]
    return outputs, np.concatenate(positions_parts).astype(np.int64)
