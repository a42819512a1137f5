"""tf.data input pipelines: identity-balanced augmented training batches and ordered testing.

Images leave both pipelines as uint8 RGB (batch, image_height, image_width, 3): the host-to-
accelerator copy is four times smaller than float32, and the model normalises them itself.

Training: an `IdentityBalancedSampler` (NumPy) emits P x K image indices per batch; each image
is read, checked, decoded (JPEG to `cv2.imread`'s pixels, PNG/BMP/GIF) and resized in parallel,
then batched back into the sampler's P x K order and augmented once per batch with albumentations.
Every image carries its own seed (the run's seed and its position in the stream), so the
augmentation does not depend on which thread runs it or when.

The per-image stage always keeps its order (the P x K row structure depends on it); the
augmentation then runs in a parallel map, and with `deterministic=False` (the default) whole
batches may come out of order. Batch contents and row order (K contiguous rows per identity) do
not depend on `deterministic`.

Bad files (the policy is `datasets.image_files`'): the loaders already skip files that fail the
cheap structural check. A file that still cannot be decoded here is skipped and recorded in a
`SkippedImageLog`, never fatal, never silent. In training, its row is filled by the next image
of the same identity (in a fixed, seeded order), so every batch keeps its P x K structure; only
when no image of that identity decodes does the row hold a flat ImageNet-mean image. In testing
(`return_positions=True`), the image is left out and the positions of the kept images come with
each batch, so features never shift against their records.
"""

from collections.abc import Sequence

import numpy as np

from applications.core.backend import tf
from datasets.augmentation import IMAGENET_MEAN_RGB, AlbumentationsAugmentor
from datasets.exif_orientation import apply_exif_orientation, jpeg_exif_orientation
from datasets.image_files import UNDECODABLE, SkippedImageLog, image_contents_look_whole_tf
from datasets.resizing import resize_like_cv2
from datasets.sampler import build_identity_sampler, compute_steps_per_epoch

__all__ = [
    "build_testing_dataset",
    "build_training_dataset",
    "compute_steps_per_epoch",
    "decode_and_resize",
]

NO_DECODABLE_IMAGE = "no image of this identity decodes; a flat image stands in"


def decode_and_resize(image_file_path: tf.Tensor, image_height: int, image_width: int) -> tf.Tensor:
    """Reads one image file into uint8 (image_height, image_width, 3) RGB.

    JPEGs decode to exactly `cv2.imread`'s pixels, as in FlipReID (`tf.io.decode_jpeg` with
    the accurate integer inverse DCT, OpenCV's default; `tf.io.decode_image`'s default gave 68 %
    of values up to 18 levels apart, and is 1.2x faster), turned as their EXIF orientation says,
    as `cv2.imread` turns them (`datasets.exif_orientation`). PNG, BMP and GIF files go through
    `tf.io.decode_image`, which is exact for them. A file that does not look like a whole image
    (``datasets.image_files``' structural rule) fails with an InvalidArgumentError naming it,
    before the decoder sees it.

    Args:
        image_file_path: string scalar.
        image_height: output H.
        image_width: output W.

    Returns:
        uint8 (image_height, image_width, 3), resized to exactly the pixels of FlipReID's
        `cv2.resize` (bilinear, half-pixel centres, OpenCV's fixed-point rounding;
        `datasets.resizing`).
    """
    contents = tf.io.read_file(image_file_path)
    check = tf.debugging.Assert(
        image_contents_look_whole_tf(contents),
        [
            "Cannot decode image file (not a JPEG, PNG, GIF or BMP file, or truncated):",
            image_file_path,
        ],
        name="check_image_file",
    )
    with tf.control_dependencies([check]):
        image = tf.cond(
            tf.io.is_jpeg(contents),
            lambda: apply_exif_orientation(
                tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE"),
                jpeg_exif_orientation(contents),
            ),
            lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
        )
    # Images already at the size (Market-1501's 128x64 at 128x64) skip the integer arithmetic,
    # about 6x the cost of tf.image.resize; cv2.resize returns them unchanged too.
    image = tf.cond(
        tf.reduce_all(tf.shape(image)[:2] == [image_height, image_width]),
        lambda: image,
        lambda: resize_like_cv2(image, image_height, image_width),
    )
    image.set_shape([image_height, image_width, 3])
    return image


def _check_image_size(image_height: int, image_width: int) -> None:
    if image_height <= 0 or image_width <= 0:
        raise ValueError(
            f"image_height and image_width must be positive, got {image_height}x{image_width}."
        )


def _check_num_workers(num_workers: int | None) -> int:
    """The map parallelism for ``num_workers`` (None: AUTOTUNE); rejects values below 1."""
    if num_workers is None:
        return tf.data.AUTOTUNE
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)):
        raise ValueError(f"num_workers must be a positive integer or None, got {num_workers!r}.")
    if num_workers < 1:
        raise ValueError(f"num_workers (--workers) must be at least 1, got {num_workers}.")
    return int(num_workers)


def _with_num_workers(dataset: tf.data.Dataset, num_workers: int | None) -> tf.data.Dataset:
    """Runs the pipeline on its own pool of ``num_workers`` threads (None: TensorFlow's pool)."""
    if num_workers is None:
        return dataset
    options = tf.data.Options()
    options.threading.private_threadpool_size = int(num_workers)
    return dataset.with_options(options)


class _ReplacementOrder:
    """For each image, the other images of its identity in a fixed, seeded order.

    Image i's candidates are its identity's images in one seeded permutation, read cyclically
    from i's own place: ``candidate(i, 0) == i``, then the replacements in turn.

    Args:
        labels: int (N,) identity labels.
        seed: seed of the permutations.
    """

    def __init__(self, labels: np.ndarray, seed: int):
        rng = np.random.default_rng([seed, 0x5EED])
        order = np.argsort(labels, kind="stable")
        _, group_starts, group_sizes = np.unique(
            labels[order], return_index=True, return_counts=True
        )
        members = order.copy()
        for start, size in zip(group_starts, group_sizes, strict=True):
            members[start : start + size] = rng.permutation(order[start : start + size])
        self.members = members.astype(np.int32)
        self.start = np.empty(len(labels), np.int32)
        self.size = np.empty(len(labels), np.int32)
        self.place = np.empty(len(labels), np.int32)
        for start, size in zip(group_starts, group_sizes, strict=True):
            group = members[start : start + size]
            self.start[group] = start
            self.size[group] = size
            self.place[group] = np.arange(size)

    def candidate(self, index: int, rank: int) -> int:
        """The image tried at ``rank`` (0: the image itself) in place of image ``index``."""
        size = int(self.size[index])
        return int(self.members[self.start[index] + (self.place[index] + rank) % size])


def _first_decodable(candidate_paths_fn, num_candidates, image_height, image_width):
    """A dataset of one (rank, image, found) element: the first candidate that decodes.

    Candidates are tried in rank order, each in its own element so that a failing decode only
    drops that element (``ignore_errors``); rank ``num_candidates`` is a flat ImageNet-mean
    image with found=False, so exactly one element always comes out.
    """
    fallback = tf.cast(tf.round(tf.constant(IMAGENET_MEAN_RGB)), tf.uint8)
    fallback = tf.broadcast_to(fallback, [image_height, image_width, 3])

    num_candidates = tf.cast(num_candidates, tf.int64)

    def attempt(rank):
        found = rank < num_candidates
        image = tf.cond(
            found,
            lambda: decode_and_resize(candidate_paths_fn(rank), image_height, image_width),
            lambda: fallback,
        )
        return rank, image, found

    candidates = tf.data.Dataset.range(num_candidates + 1)
    return candidates.map(attempt).ignore_errors().take(1)


class _TrainingRows:
    """Loads the sampler's rows: each image, or the first other image of its identity that decodes.

    A row whose image cannot be decoded takes the next image of the same identity in
    ``_ReplacementOrder``; every failed file is recorded in ``skipped_images``.

    Args:
        image_file_paths: N image file paths (str).
        labels: int (N,) identity labels.
        seed: seed of the replacement order.
        image_height: H of the output images.
        image_width: W of the output images.
        skipped_images: where undecodable files are recorded; None records into a private log.
    """

    def __init__(self, image_file_paths, labels, seed, image_height, image_width, skipped_images):
        self.image_file_paths = image_file_paths
        self.labels = labels
        self.image_height = image_height
        self.image_width = image_width
        if skipped_images is None:
            skipped_images = SkippedImageLog("training images")
        self.skipped_images = skipped_images
        self.replacements = _ReplacementOrder(labels, seed)
        self._path_table = tf.constant(image_file_paths, tf.string)
        self._label_table = tf.constant(labels.astype(np.int32), tf.int32)
        self._members = tf.constant(self.replacements.members)
        self._starts, self._sizes, self._places = (
            tf.constant(values)
            for values in (self.replacements.start, self.replacements.size, self.replacements.place)
        )

    def decoded_batches(self, sampler, initial_batch_index, num_workers, num_parallel_calls):
        """The sampler's batches from ``initial_batch_index`` on, decoded and resized.

        Returns:
            A dataset of (int64 (P*K,) stream positions, uint8 (P*K, H, W, 3) images,
            int32 (P*K,) labels).
        """
        batch_size = sampler.batch_size
        dataset = tf.data.Dataset.from_generator(
            lambda: sampler.iterate(start_batch_index=initial_batch_index),
            output_signature=tf.TensorSpec(shape=(batch_size,), dtype=tf.int32),
        )
        dataset = dataset.unbatch().enumerate(start=initial_batch_index * batch_size)
        # Ordered output keeps the sampler's P x K rows: each row yields exactly one element, and
        # a deterministic interleave hands them on in input order. The small dataset per row,
        # which lets a failed decode drop only that attempt, cost about 25 % more CPU per image
        # than a plain map here (400-470 vs 500-560 us at 256x128, before augmentation).
        dataset = dataset.interleave(
            self._load,
            cycle_length=None if num_workers is None else num_workers,
            block_length=1,
            num_parallel_calls=num_parallel_calls,
            deterministic=True,
        )
        return dataset.batch(batch_size, drop_remainder=True).map(self._drop_bookkeeping)

    def _load(self, position, index):
        # position: the image's place in the endless stream (batch number * P*K + row); it
        # seeds the image's augmentation.
        start, size, place = self._starts[index], self._sizes[index], self._places[index]

        def candidate_path(rank):
            offset = (place + tf.cast(rank, tf.int32)) % size
            return tf.gather(self._path_table, self._members[start + offset])

        attempts = _first_decodable(candidate_path, size, self.image_height, self.image_width)
        return attempts.map(
            lambda rank, image, found: (position, index, rank, image, self._label_table[index])
        )

    def _record_skipped(self, indices, ranks):
        # Rows whose first candidates failed: each failed file is recorded (once per file).
        replacements, image_file_paths = self.replacements, self.image_file_paths
        for index, rank in zip(indices.tolist(), ranks.tolist(), strict=True):
            for failed_rank in range(min(rank, int(replacements.size[index]))):
                self.skipped_images.record(
                    image_file_paths[replacements.candidate(index, failed_rank)], UNDECODABLE
                )
            if rank >= replacements.size[index]:
                self.skipped_images.record(
                    f"identity label {self.labels[index]} ({image_file_paths[index]} and its "
                    f"{replacements.size[index] - 1} other images)",
                    NO_DECODABLE_IMAGE,
                )
        return ranks

    def _drop_bookkeeping(self, positions, indices, ranks, images, batch_labels):
        # One Python call per batch, and only for a batch that met a bad file.
        ranks = tf.cond(
            tf.reduce_any(ranks > 0),
            lambda: tf.numpy_function(
                self._record_skipped, [indices, ranks], tf.int64, stateful=True
            ),
            lambda: ranks,
        )
        with tf.control_dependencies([ranks]):
            batch_labels = tf.identity(batch_labels)
        return positions, images, batch_labels


def _augmented_batches(dataset, augmentor, seed, num_parallel_calls, deterministic):
    """(positions, images, labels) batches -> (images, labels), augmented unless augmentor is None.

    Args:
        dataset: batches from ``_TrainingRows.decoded_batches``.
        augmentor: an AlbumentationsAugmentor, or None for no augmentation.
        seed: the run's seed; image i of a batch is augmented with (seed, positions[i]).
        num_parallel_calls: parallelism of the augmentation map.
        deterministic: True keeps the batches in order.

    Returns:
        A dataset of (uint8 (P*K, H, W, 3) images, int32 (P*K,) labels).
    """
    if augmentor is None:
        return dataset.map(lambda positions, images, labels: (images, labels))

    def augment(positions, images, labels):
        augmented = tf.numpy_function(
            augmentor.augment_batch, [images, positions, seed], tf.uint8, stateful=False
        )
        augmented.set_shape(images.shape)
        return augmented, labels

    # One tf.numpy_function call per batch: per-image calls measured 4-5x slower, the hand-over
    # between TF threads and the GIL dominating the ~0.6 ms of augmentation.
    return dataset.map(augment, num_parallel_calls=num_parallel_calls, deterministic=deterministic)


def _matching_files_and_labels(image_file_paths, labels):
    """The paths as a list of str and the labels as an array; rejects different lengths."""
    image_file_paths = [str(path) for path in image_file_paths]
    labels = np.asarray(labels)
    if len(image_file_paths) != len(labels):
        raise ValueError(
            f"Got {len(image_file_paths)} image files but {len(labels)} labels; they must match."
        )
    return image_file_paths, labels


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
    patch_replacement_probability: float = 0.0,
    random_erasing_probability: float = 0.0,
    crop_ratio: float = 1.0,
    ratio_crop_probability: float = 0.0,
    seed: int = 0,
    num_workers: int | None = None,
    deterministic: bool = False,
    initial_batch_index: int = 0,
    skipped_images: SkippedImageLog | None = None,
    sampling_mode: str = "balanced",
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
        crop_ratio: AlignedReID's ratio crop, the smallest fraction of each side kept (1: off).
        ratio_crop_probability: probability of the ratio crop (AlignedReID --crop_prob).
        seed: seed of the sampling, of the replacement order and of the augmentation.
        num_workers: input-pipeline threads (FlipReID's --workers): the parallelism of each map
            and the size of the pipeline's own thread pool; None lets tf.data tune it.
        deterministic: True fixes the order of the batches too (for tests); the batch contents
            and their row order do not depend on it.
        initial_batch_index: start the stream at this batch (resuming a run, or a later
            training stage): the batches and their augmentation are those an uninterrupted
            stream gives from that batch on, since both depend only on the seed and the
            position in the stream.
        skipped_images: where undecodable files are recorded (each once, with a warning the
            first time); read it for the run's messages and its end-of-run count. None records
            into a private log (the warnings still appear).
        sampling_mode: the identity sampler (datasets.sampler.SAMPLING_MODES): "balanced"
            (IdentityBalancedSampler) or "flipreid" (FlipReID's, FlipReIDSampler).

    Returns:
        A dataset of (uint8 (P*K, H, W, 3) images, int32 (P*K,) labels), endless.

    Raises:
        ValueError: fewer identities than --identity_num_per_batch, mismatched lengths, a bad
            num_workers or image size.
    """
    image_file_paths, labels = _matching_files_and_labels(image_file_paths, labels)
    _check_image_size(image_height, image_width)
    num_parallel_calls = _check_num_workers(num_workers)
    sampler = build_identity_sampler(
        labels,
        sampling_mode=sampling_mode,
        identity_num_per_batch=identity_num_per_batch,
        image_num_per_identity=image_num_per_identity,
        seed=seed,
    )
    augmentor = None
    if use_data_augmentation:
        # Validates the arguments now rather than on first use inside the pipeline.
        augmentor = AlbumentationsAugmentor(
            image_height,
            image_width,
            padding_length=padding_length,
            padding_ratio=padding_ratio,
            random_crop_probability=random_crop_probability,
            horizontal_flip_probability=horizontal_flip_probability,
            patch_replacement_probability=patch_replacement_probability,
            random_erasing_probability=random_erasing_probability,
            crop_ratio=crop_ratio,
            ratio_crop_probability=ratio_crop_probability,
        )
    rows = _TrainingRows(image_file_paths, labels, seed, image_height, image_width, skipped_images)
    dataset = rows.decoded_batches(sampler, initial_batch_index, num_workers, num_parallel_calls)
    dataset = _augmented_batches(dataset, augmentor, seed, num_parallel_calls, deterministic)
    return _with_num_workers(dataset.prefetch(tf.data.AUTOTUNE), num_workers)


def build_testing_dataset(
    image_file_paths: Sequence[str],
    *,
    image_height: int,
    image_width: int,
    batch_size: int = 64,
    num_workers: int | None = None,
    return_positions: bool = False,
    skipped_images: SkippedImageLog | None = None,
) -> tf.data.Dataset:
    """The images of `image_file_paths`, once, in file order, decoded and resized.

    Args:
        image_file_paths: N image files.
        image_height: H of the output images.
        image_width: W of the output images.
        batch_size: images per batch; the last, partial batch is kept.
        num_workers: input-pipeline threads (order is always kept); None lets tf.data tune it.
        return_positions: True yields (images, positions) and leaves undecodable files out:
            positions (int64) are the rows of `image_file_paths` the images belong to, so the
            caller keeps only those records. False yields images only, row i being file i, and
            an undecodable file fails the iteration with an error naming it.
        skipped_images: with return_positions, where undecodable files are recorded; None
            records into a private log (the warnings still appear).

    Returns:
        A dataset of uint8 (batch, H, W, 3) images (ceil(N / batch_size) batches), or of
        (images, int64 (batch,) positions), batches then holding up to batch_size images.
    """
    _check_image_size(image_height, image_width)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    num_parallel_calls = _check_num_workers(num_workers)
    image_file_paths = [str(path) for path in image_file_paths]
    path_table = tf.constant(image_file_paths, tf.string)
    if not return_positions:
        dataset = tf.data.Dataset.from_tensor_slices(path_table).map(
            lambda path: decode_and_resize(path, image_height, image_width),
            num_parallel_calls=num_parallel_calls,
            deterministic=True,
        )
        return _with_num_workers(dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE), num_workers)

    if skipped_images is None:
        skipped_images = SkippedImageLog("testing images")

    def load(position):
        attempts = _first_decodable(lambda rank: path_table[position], 1, image_height, image_width)
        return attempts.map(lambda rank, image, found: (image, position, found))

    def record_skipped(positions):
        for position in positions.tolist():
            skipped_images.record(image_file_paths[position], UNDECODABLE)
        return positions

    def keep_decoded(images, positions, found):
        recorded = tf.cond(
            tf.reduce_all(found),
            lambda: positions[:0],
            lambda: tf.numpy_function(record_skipped, [positions[~found]], tf.int64, stateful=True),
        )
        with tf.control_dependencies([recorded]):
            return tf.boolean_mask(images, found), tf.boolean_mask(positions, found)

    dataset = tf.data.Dataset.range(len(image_file_paths)).interleave(
        load,
        cycle_length=None if num_workers is None else num_workers,
        block_length=1,
        num_parallel_calls=num_parallel_calls,
        deterministic=True,
    )
    dataset = dataset.batch(batch_size).map(keep_decoded)
    return _with_num_workers(dataset.prefetch(tf.data.AUTOTUNE), num_workers)
