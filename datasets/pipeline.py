"""tf.data input pipelines: identity-balanced augmented training batches and ordered testing.

Images leave both pipelines as uint8 RGB (batch, image_height, image_width, 3): the host-to-
accelerator copy is four times smaller than float32, and the model normalises them itself.

Training: an `IdentityBalancedSampler` (NumPy) emits P x K image indices per batch; each image
is read, decoded (`tf.io.decode_image`, JPEG/PNG/BMP/GIF) and resized in a parallel `map`, then
batched back into the sampler's P x K order and augmented. Every image carries its
own seed (the run's seed and its position in the stream), so the augmentation does not depend on
which thread runs it or when.

The per-image decode map always keeps its order (the P x K row structure depends on it); the
albumentations augmentation then runs once per batch in a parallel map, and with
`deterministic=False` (the default) whole batches may come out of order. Batch contents and row
order (K contiguous rows per identity) do not depend on `deterministic`.

A bad file fails the pipeline with an InvalidArgumentError whose message names the file when
it is not an image (its first bytes) or is a truncated JPEG/PNG (no end marker), checked before
decoding. A file with a whole header and end but corrupt data in between fails inside the
decoder with TensorFlow's own message, which does not name it: `find_undecodable_image_files`
lists such files. Errors are never skipped silently.
"""

from collections.abc import Sequence

import numpy as np

from applications.backend import tf
from datasets.augmentation import AlbumentationsAugmentor, augment_image_tf
from datasets.sampler import IdentityBalancedSampler, compute_steps_per_epoch

__all__ = [
    "AUGMENTATION_BACKENDS",
    "build_testing_dataset",
    "build_training_dataset",
    "compute_steps_per_epoch",
    "decode_and_resize",
    "find_undecodable_image_files",
]

AUGMENTATION_BACKENDS = ("albumentations", "tensorflow")

# First bytes of the formats tf.io.decode_image reads.
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
# Bytes at the end of a JPEG searched for its end marker (encoders may pad after it).
_TAIL_LENGTH = 256


def _check_image_file(contents: tf.Tensor, image_file_path: tf.Tensor) -> tf.Tensor:
    """An assertion op that fails, naming the file, unless `contents` looks like a whole image.

    Checks the format's signature at the start and, for JPEG and PNG, the end marker (EOI /
    IEND) near the end, which catches non-image and truncated files before the decoder, whose
    own errors do not name the file.
    """
    is_image = tf.reduce_any(
        [
            tf.equal(tf.strings.substr(contents, 0, len(signature)), signature)
            for signature in _IMAGE_SIGNATURES
        ]
    )
    length = tf.strings.length(contents)
    tail = tf.io.decode_raw(
        tf.strings.substr(contents, tf.maximum(length - _TAIL_LENGTH, 0), _TAIL_LENGTH), tf.uint8
    )
    tail = tf.cast(tail, tf.int32)
    # 0xFF 0xD9 cannot occur inside JPEG entropy-coded data (0xFF is byte-stuffed there).
    has_jpeg_end = tf.reduce_any((tail[:-1] == 0xFF) & (tail[1:] == 0xD9))
    # A PNG ends with the 12-byte IEND chunk: length, "IEND", CRC.
    has_png_end = tf.equal(tf.strings.substr(contents, tf.maximum(length - 8, 0), 4), b"IEND")
    is_jpeg = tf.equal(tf.strings.substr(contents, 0, 3), _IMAGE_SIGNATURES[0])
    is_png = tf.equal(tf.strings.substr(contents, 0, 8), _IMAGE_SIGNATURES[1])
    is_whole = tf.logical_and(
        tf.logical_or(tf.logical_not(is_jpeg), has_jpeg_end),
        tf.logical_or(tf.logical_not(is_png), has_png_end),
    )
    return tf.debugging.Assert(
        tf.logical_and(is_image, is_whole),
        [
            "Cannot decode image file (not a JPEG, PNG, GIF or BMP file, or truncated):",
            image_file_path,
        ],
        name="check_image_file",
    )


def decode_and_resize(image_file_path: tf.Tensor, image_height: int, image_width: int) -> tf.Tensor:
    """Reads one image file into uint8 (image_height, image_width, 3) RGB.

    Args:
        image_file_path: string scalar.
        image_height: output H.
        image_width: output W.

    Returns:
        uint8 (image_height, image_width, 3), bilinear resize (as FlipReID's cv2.resize).
    """
    contents = tf.io.read_file(image_file_path)
    with tf.control_dependencies([_check_image_file(contents, image_file_path)]):
        image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image = tf.image.resize(image, [image_height, image_width], method="bilinear")
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    image.set_shape([image_height, image_width, 3])
    return image


def find_undecodable_image_files(image_file_paths: Sequence[str]) -> list[str]:
    """The files of `image_file_paths` that TensorFlow cannot decode (slow: eager, one by one)."""
    bad_paths = []
    for path in image_file_paths:
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
            bad_paths.append(path)
    return bad_paths


def _check_image_size(image_height: int, image_width: int) -> None:
    if image_height <= 0 or image_width <= 0:
        raise ValueError(
            f"image_height and image_width must be positive, got {image_height}x{image_width}."
        )


def build_training_dataset(
    image_file_paths: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    *,
    identity_num_per_batch: int,
    image_num_per_identity: int,
    image_height: int,
    image_width: int,
    use_data_augmentation: bool = True,
    padding_length: int = 0,
    padding_ratio: float = 0.05,
    random_crop_probability: float = 1.0,
    horizontal_flip_probability: float = 0.5,
    patch_replacement_probability: float = 0.8,
    random_erasing_probability: float = 0.8,
    augmentation_backend: str = "albumentations",
    seed: int = 0,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    deterministic: bool = False,
) -> tf.data.Dataset:
    """Endless identity-balanced, augmented training batches.

    Args:
        image_file_paths: N image files (JPEG/PNG).
        labels: N int identity labels (e.g. LabelEncoder-encoded identity_ID).
        identity_num_per_batch: P, distinct identities per batch (at most the number of identities).
        image_num_per_identity: K, images per identity, in K contiguous rows.
        image_height: H of the output images.
        image_width: W of the output images.
        use_data_augmentation: False skips all augmentation (decode and resize only).
        padding_length: minimum padding in pixels before the random crop (FlipReID: 0).
        padding_ratio: padding as a fraction of H and W before the random crop (FlipReID: 0.05).
        random_crop_probability: probability of the pad-and-crop.
        horizontal_flip_probability: probability of a horizontal flip.
        patch_replacement_probability: probability of the random grayscale patch replacement.
        random_erasing_probability: probability of random erasing.
        augmentation_backend: "albumentations" (NumPy/OpenCV through tf.numpy_function; the
            faster one on our CPUs) or "tensorflow" (stateless TF ops).
        seed: seed of the sampling and of the augmentation.
        num_parallel_calls: parallelism of the per-image map.
        deterministic: True fixes the order of the batches too (for tests); the batch contents
            and their row order do not depend on it.

    Returns:
        A dataset of (uint8 (P*K, H, W, 3) images, int32 (P*K,) labels), endless.

    Raises:
        ValueError: fewer identities than --identity_num_per_batch, mismatched lengths, or an
            unknown backend.
    """
    image_file_paths = [str(path) for path in image_file_paths]
    labels = np.asarray(labels)
    if len(image_file_paths) != len(labels):
        raise ValueError(
            f"Got {len(image_file_paths)} image files but {len(labels)} labels; they must match."
        )
    if augmentation_backend not in AUGMENTATION_BACKENDS:
        raise ValueError(
            f"Unknown augmentation_backend {augmentation_backend!r}; "
            f"valid: {AUGMENTATION_BACKENDS}."
        )
    _check_image_size(image_height, image_width)
    sampler = IdentityBalancedSampler(
        labels,
        identity_num_per_batch=identity_num_per_batch,
        image_num_per_identity=image_num_per_identity,
        seed=seed,
    )
    batch_size = sampler.batch_size
    augmentation_kwargs = dict(
        padding_length=padding_length,
        padding_ratio=padding_ratio,
        random_crop_probability=random_crop_probability,
        horizontal_flip_probability=horizontal_flip_probability,
        patch_replacement_probability=patch_replacement_probability,
        random_erasing_probability=random_erasing_probability,
    )
    augment_image = augment_batch = None
    if use_data_augmentation:
        # Validates the arguments now rather than on first use inside the pipeline.
        augmentor = AlbumentationsAugmentor(image_height, image_width, **augmentation_kwargs)
        if augmentation_backend == "albumentations":

            def augment_batch(positions, images):
                images = tf.numpy_function(
                    augmentor.augment_batch, [images, positions, seed], tf.uint8, stateful=False
                )
                images.set_shape([batch_size, image_height, image_width, 3])
                return images

        else:

            def augment_image(position, image):
                return augment_image_tf(
                    image, tf.stack([tf.constant(seed, tf.int64), position]), **augmentation_kwargs
                )

    path_table = tf.constant(image_file_paths, tf.string)
    label_table = tf.constant(labels.astype(np.int32), tf.int32)

    def load(position, index):
        # position: the image's place in the endless stream (batch number * P*K + row); it
        # seeds the image's augmentation.
        image = decode_and_resize(tf.gather(path_table, index), image_height, image_width)
        if augment_image is not None:
            image = augment_image(position, image)
        return position, image, tf.gather(label_table, index)

    dataset = tf.data.Dataset.from_generator(
        lambda: iter(sampler),
        output_signature=tf.TensorSpec(shape=(batch_size,), dtype=tf.int32),
    )
    dataset = dataset.unbatch().enumerate()
    # Ordered output keeps the sampler's P x K rows; images cost about the same to decode, so
    # ordering costs little throughput here (see the benchmark).
    dataset = dataset.map(load, num_parallel_calls=num_parallel_calls, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if augment_batch is not None:
        # One tf.numpy_function call per batch: per-image calls measured 4-5x slower, the
        # hand-over between TF threads and the GIL dominating the ~0.6 ms of augmentation.
        dataset = dataset.map(
            lambda positions, images, labels_: (augment_batch(positions, images), labels_),
            num_parallel_calls=num_parallel_calls,
            deterministic=deterministic,
        )
    else:
        dataset = dataset.map(lambda positions, images, labels_: (images, labels_))
    return dataset.prefetch(tf.data.AUTOTUNE)


def build_testing_dataset(
    image_file_paths: Sequence[str],
    *,
    image_height: int,
    image_width: int,
    batch_size: int = 64,
    num_parallel_calls: int = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """The images of `image_file_paths`, once, in file order, decoded and resized.

    Args:
        image_file_paths: N image files; row i of the output is file i (features are matched
            to records by position).
        image_height: H of the output images.
        image_width: W of the output images.
        batch_size: images per batch; the last, partial batch is kept.
        num_parallel_calls: parallelism of the per-image map (order is always kept).

    Returns:
        A dataset of uint8 (batch, H, W, 3) images, ceil(N / batch_size) batches.
    """
    _check_image_size(image_height, image_width)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    dataset = tf.data.Dataset.from_tensor_slices(
        tf.constant([str(path) for path in image_file_paths], tf.string)
    )
    dataset = dataset.map(
        lambda path: decode_and_resize(path, image_height, image_width),
        num_parallel_calls=num_parallel_calls,
        deterministic=True,
    )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
