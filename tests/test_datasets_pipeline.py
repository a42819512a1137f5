"""Tests of the tf.data training and testing pipelines on tiny images written with cv2."""

import os

import cv2
import numpy as np
import pytest

import datasets
from applications.core.backend import tf
from datasets.augmentation import IMAGENET_MEAN_RGB
from datasets.image_files import SkippedImageLog
from datasets.pipeline import (
    NO_DECODABLE_IMAGE,
    build_testing_dataset,
    build_training_dataset,
    decode_and_resize,
)
from tests import dataset_fixtures
from tests.dataset_fixtures import BAD_IMAGE_KINDS, write_bad_image_file

HEIGHT, WIDTH = 16, 8
NO_AUGMENTATION = dict(
    random_crop_probability=0.0,
    horizontal_flip_probability=0.0,
    patch_replacement_probability=0.0,
    random_erasing_probability=0.0,
)


def _colour(index):
    """A distinct RGB colour per file index (steps of 40 survive JPEG's small errors)."""
    return np.array([40 * (index % 6), 40 * ((index // 6) % 6), 40 * (index // 36) + 20])


def _write(path, rgb_image):
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb_image, cv2.COLOR_RGB2BGR))
    return str(path)


@pytest.fixture
def constant_colour_files(tmp_path):
    """Files of 7 identities (1 to 5 images each); each file is one distinct colour."""
    image_counts = [3, 1, 5, 2, 4, 2, 3]
    paths, labels = [], []
    for identity, count in enumerate(image_counts):
        for _ in range(count):
            index = len(paths)
            image = np.empty((24, 12, 3), np.uint8)
            image[:] = _colour(index)
            extension = "png" if index % 2 else "jpg"
            paths.append(_write(tmp_path / f"{index:03d}.{extension}", image))
            labels.append(identity)
    return paths, np.array(labels)


def _file_indices(images, num_files):
    """Maps each decoded image back to its file by its mean colour."""
    colours = np.stack([_colour(index) for index in range(num_files)])
    means = images.reshape(len(images), -1, 3).mean(axis=1)
    distances = np.abs(means[:, None, :] - colours[None, :, :]).max(axis=-1)
    assert (distances.min(axis=1) < 8).all(), "an image matches no file colour"
    return distances.argmin(axis=1)


def test_training_batches_have_P_identities_of_K_contiguous_matching_images(
    constant_colour_files,
):
    paths, labels = constant_colour_files
    P, K = 3, 4
    dataset = build_training_dataset(
        paths,
        labels,
        identity_num_per_batch=P,
        image_num_per_identity=K,
        image_height=HEIGHT,
        image_width=WIDTH,
        use_data_augmentation=False,
    )
    assert dataset.element_spec[0].shape.as_list() == [P * K, HEIGHT, WIDTH, 3]
    seen_identities = set()
    for images, batch_labels in dataset.take(10):
        assert images.dtype == tf.uint8 and images.shape == (P * K, HEIGHT, WIDTH, 3)
        assert batch_labels.dtype == tf.int32 and batch_labels.shape == (P * K,)
        batch_labels = batch_labels.numpy()
        rows = batch_labels.reshape(P, K)
        assert (rows == rows[:, :1]).all() and len(set(rows[:, 0])) == P
        file_indices = _file_indices(images.numpy(), len(paths))
        assert np.array_equal(labels[file_indices], batch_labels)
        # Identity 1 has a single file: it fills all K rows (sampled with replacement).
        if 1 in rows[:, 0]:
            assert len(set(file_indices[batch_labels == 1])) == 1
        seen_identities.update(rows[:, 0])
    assert seen_identities == set(labels)


def test_training_pipeline_is_deterministic_for_a_seed(constant_colour_files):
    paths, labels = constant_colour_files
    make = lambda seed: build_training_dataset(
        paths,
        labels,
        identity_num_per_batch=2,
        image_num_per_identity=2,
        image_height=HEIGHT,
        image_width=WIDTH,
        padding_ratio=0.25,
        seed=seed,
        deterministic=True,
    )
    first = [images.numpy() for images, _ in make(1).take(4)]
    again = [images.numpy() for images, _ in make(1).take(4)]
    other = [images.numpy() for images, _ in make(2).take(4)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_non_deterministic_mode_yields_the_same_batches(constant_colour_files):
    paths, labels = constant_colour_files
    kwargs = dict(
        identity_num_per_batch=2,
        image_num_per_identity=2,
        image_height=HEIGHT,
        image_width=WIDTH,
        seed=4,
    )
    ordered = build_training_dataset(paths, labels, deterministic=True, **kwargs)
    unordered = build_training_dataset(paths, labels, deterministic=False, **kwargs)
    as_set = lambda dataset: {images.numpy().tobytes() for images, _ in dataset.take(6)}
    # Only whole batches may come out of order; look far enough to cover any reordering.
    assert as_set(ordered) <= {images.numpy().tobytes() for images, _ in unordered.take(12)}


def test_training_flip_with_probability_one_is_fliplr_of_the_resized_image(tmp_path):
    rng = np.random.default_rng(0)
    path = _write(tmp_path / "person.png", rng.integers(0, 256, (30, 14, 3), dtype=np.uint8))
    dataset = build_training_dataset(
        [path],
        [0],
        identity_num_per_batch=1,
        image_num_per_identity=2,
        image_height=HEIGHT,
        image_width=WIDTH,
        **{**NO_AUGMENTATION, "horizontal_flip_probability": 1.0},
    )
    images, _ = next(iter(dataset))
    expected = np.fliplr(decode_and_resize(tf.constant(path), HEIGHT, WIDTH).numpy())
    for image in images.numpy():
        assert np.array_equal(image, expected)


def test_training_augmentation_with_probability_zero_is_decode_and_resize(tmp_path):
    rng = np.random.default_rng(1)
    path = _write(tmp_path / "person.jpg", rng.integers(0, 256, (30, 14, 3), dtype=np.uint8))
    dataset = build_training_dataset(
        [path],
        [0],
        identity_num_per_batch=1,
        image_num_per_identity=1,
        image_height=HEIGHT,
        image_width=WIDTH,
        **NO_AUGMENTATION,
    )
    images, _ = next(iter(dataset))
    expected = decode_and_resize(tf.constant(path), HEIGHT, WIDTH).numpy()
    assert np.array_equal(images.numpy()[0], expected)


def test_decode_and_resize_reads_png_and_jpeg(tmp_path):
    image = np.zeros((20, 10, 3), np.uint8)
    image[:10] = (200, 30, 90)  # RGB; top half coloured, bottom half black
    for extension in ["png", "jpg"]:
        path = _write(tmp_path / f"image.{extension}", image)
        decoded = decode_and_resize(tf.constant(path), 20, 10).numpy()
        tolerance = 0 if extension == "png" else 12
        assert decoded.dtype == np.uint8 and decoded.shape == (20, 10, 3)
        assert np.abs(decoded[2:8].astype(int) - (200, 30, 90)).max() <= tolerance
        assert decoded[13:].max() <= tolerance


def test_testing_pipeline_keeps_file_order_and_the_last_partial_batch(constant_colour_files):
    paths, _ = constant_colour_files
    paths = paths[:7]
    dataset = build_testing_dataset(paths, image_height=HEIGHT, image_width=WIDTH, batch_size=3)
    batches = [images.numpy() for images in dataset]
    assert [len(batch) for batch in batches] == [3, 3, 1]
    assert all(
        batch.dtype == np.uint8 and batch.shape[1:] == (HEIGHT, WIDTH, 3) for batch in batches
    )
    assert np.array_equal(_file_indices(np.concatenate(batches), 7), np.arange(7))


def _bad_path(tmp_path, kind):
    extension = "png" if "png" in kind else "jpg"
    return write_bad_image_file(str(tmp_path / f"bad_{kind}.{extension}"), kind)


@pytest.mark.parametrize("kind", ["header_only_jpeg", "text_file", "truncated_jpeg", "empty"])
def test_positionless_testing_fails_naming_a_bad_file(tmp_path, constant_colour_files, kind):
    paths, _ = constant_colour_files
    testing = build_testing_dataset(
        [*paths[:2], _bad_path(tmp_path, kind)], image_height=HEIGHT, image_width=WIDTH
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"bad_{kind}"):
        list(testing)


def test_training_replaces_every_kind_of_bad_file_within_its_identity(
    tmp_path, constant_colour_files
):
    paths, labels = constant_colour_files
    # One bad file of each kind, spread over the identities; identity 7's only image is bad.
    bad_paths = [_bad_path(tmp_path, kind) for kind in BAD_IMAGE_KINDS]
    bad_labels = [index % 7 for index in range(len(bad_paths))]
    lonely_path = write_bad_image_file(str(tmp_path / "lonely.jpg"), "truncated_jpeg")
    all_paths = [*paths, *bad_paths, lonely_path]
    all_labels = np.array([*labels, *bad_labels, 7])
    log = SkippedImageLog("Tiny train")
    P, K = 4, 4
    dataset = build_training_dataset(
        all_paths,
        all_labels,
        identity_num_per_batch=P,
        image_num_per_identity=K,
        image_height=HEIGHT,
        image_width=WIDTH,
        use_data_augmentation=False,
        skipped_images=log,
        num_workers=2,
    )
    mean_colour = np.round(IMAGENET_MEAN_RGB)
    for images, batch_labels in dataset.take(12):
        images, batch_labels = images.numpy(), batch_labels.numpy()
        rows = batch_labels.reshape(P, K)
        assert (rows == rows[:, :1]).all() and len(set(rows[:, 0])) == P
        lonely = batch_labels == 7
        assert (images[lonely].reshape(-1, 3) == mean_colour).all()
        # Every other row is a good file of the row's own identity.
        file_indices = _file_indices(images[~lonely], len(paths))
        assert np.array_equal(labels[file_indices], batch_labels[~lonely])
    # Every identity is drawn several times in 12 batches, so every bad file was met, once
    # counted however often drawn.
    skipped_files = [path for path in log.skipped_file_paths if not path.startswith("identity")]
    assert sorted(skipped_files) == sorted([*bad_paths, lonely_path])
    assert log.num_skipped == len(bad_paths) + 2
    assert any(NO_DECODABLE_IMAGE in message for message in log.messages())
    assert any("Tiny train: skipped 7 images (image undecodable)" in m for m in log.messages())


def test_training_with_bad_files_gives_the_same_batches_every_time(tmp_path, constant_colour_files):
    paths, labels = constant_colour_files
    all_paths = [*paths, _bad_path(tmp_path, "corrupt_png"), _bad_path(tmp_path, "corrupt_jpeg")]
    all_labels = np.array([*labels, 0, 2])
    make = lambda: build_training_dataset(
        all_paths,
        all_labels,
        identity_num_per_batch=3,
        image_num_per_identity=3,
        image_height=HEIGHT,
        image_width=WIDTH,
        seed=5,
        deterministic=True,
    )
    first = [images.numpy() for images, _ in make().take(6)]
    again = [images.numpy() for images, _ in make().take(6)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_testing_leaves_bad_files_out_and_keeps_positions_aligned(tmp_path, constant_colour_files):
    paths, _ = constant_colour_files
    # Bad files interleaved with good ones, two of them next to each other.
    order = [0, "header_only_jpeg", 1, 2, "corrupt_png", "corrupt_jpeg", 3, 4, "empty", 5]
    all_paths = [paths[item] if isinstance(item, int) else _bad_path(tmp_path, item)
                 for item in order]  # fmt: skip
    log = SkippedImageLog("Tiny gallery")
    dataset = build_testing_dataset(
        all_paths,
        image_height=HEIGHT,
        image_width=WIDTH,
        batch_size=3,
        return_positions=True,
        skipped_images=log,
    )
    batches = [(images.numpy(), positions.numpy()) for images, positions in dataset]
    images = np.concatenate([batch[0] for batch in batches])
    positions = np.concatenate([batch[1] for batch in batches])
    good_positions = [position for position, item in enumerate(order) if isinstance(item, int)]
    assert positions.tolist() == good_positions
    # Row r is the file at positions[r]: features stay with their records.
    expected_files = [order[position] for position in good_positions]
    assert _file_indices(images, len(paths)).tolist() == expected_files
    assert sorted(log.skipped_file_paths) == sorted(
        path for path, item in zip(all_paths, order, strict=True) if not isinstance(item, int)
    )
    assert log.messages() == [
        "Tiny gallery: skipped 4 images (image undecodable): bad_header_only_jpeg.jpg, "
        "bad_corrupt_png.png, bad_corrupt_jpeg.jpg, ..."
    ]


def test_testing_with_positions_and_no_bad_file_is_plain_order(constant_colour_files):
    paths, _ = constant_colour_files
    dataset = build_testing_dataset(
        paths, image_height=HEIGHT, image_width=WIDTH, batch_size=4, return_positions=True
    )
    batches = list(dataset)
    assert [len(positions) for _, positions in batches] == [4, 4, 4, 4, 4]
    positions = np.concatenate([positions.numpy() for _, positions in batches])
    assert positions.tolist() == list(range(len(paths)))


def test_fewer_identities_than_P_names_the_flag(constant_colour_files):
    paths, labels = constant_colour_files
    with pytest.raises(ValueError, match="--identity_num_per_batch"):
        build_training_dataset(
            paths,
            labels,
            identity_num_per_batch=8,
            image_num_per_identity=2,
            image_height=HEIGHT,
            image_width=WIDTH,
        )


def test_mismatched_inputs_are_rejected(constant_colour_files):
    paths, labels = constant_colour_files
    kwargs = dict(
        identity_num_per_batch=2, image_num_per_identity=2, image_height=HEIGHT, image_width=WIDTH
    )
    with pytest.raises(ValueError, match="labels"):
        build_training_dataset(paths, labels[:-1], **kwargs)


def test_num_workers_changes_parallelism_not_batches(constant_colour_files):
    paths, labels = constant_colour_files
    kwargs = dict(
        identity_num_per_batch=2,
        image_num_per_identity=2,
        image_height=HEIGHT,
        image_width=WIDTH,
        seed=3,
        deterministic=True,
    )
    reference = [
        images.numpy() for images, _ in build_training_dataset(paths, labels, **kwargs).take(3)
    ]
    one_worker = build_training_dataset(paths, labels, num_workers=1, **kwargs)
    assert one_worker.options().threading.private_threadpool_size == 1
    assert all(
        np.array_equal(a, images.numpy())
        for a, (images, _) in zip(reference, one_worker.take(3), strict=True)
    )
    testing = build_testing_dataset(paths, image_height=HEIGHT, image_width=WIDTH, num_workers=2)
    assert testing.options().threading.private_threadpool_size == 2
    assert np.array_equal(
        _file_indices(np.concatenate(list(testing)), len(paths)), np.arange(len(paths))
    )
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_workers"):
            build_training_dataset(paths, labels, num_workers=bad, **kwargs)


def test_planted_faults_from_load_to_batches(tmp_path):
    """The planted-fault set: each fault is skipped and counted at load or in the pipelines."""
    dataset_dir = dataset_fixtures.write_market1501(str(tmp_path))
    train_dir = os.path.join(dataset_dir, "bounding_box_train")
    gallery_dir = os.path.join(dataset_dir, "bounding_box_test")
    planted = {
        os.path.join(gallery_dir, "0001_c4s1_000001_00.jpg"): "header_only_jpeg",
        os.path.join(gallery_dir, "0003_c5s1_000002_00.jpg"): "corrupt_jpeg",
        os.path.join(train_dir, "0002_c3s1_000001_00.jpg"): "text_file",
        os.path.join(train_dir, "0007_c4s1_000001_00.jpg"): "truncated_jpeg",
        os.path.join(train_dir, "0010_c3s1_000001_00.jpg"): "empty",
        os.path.join(train_dir, "0002_c4s1_000002_00.png"): "corrupt_png",
        os.path.join(train_dir, "0007_c5s1_000002_00.jpg"): "corrupt_jpeg",
    }
    for path, kind in planted.items():
        dataset_fixtures.write_bad_image_file(path, kind)
    dataset = datasets.load_dataset("Market1501", str(tmp_path))
    skipped_at_load = [m for m in dataset.messages if "skipped" in m]
    assert len(skipped_at_load) == 4  # empty, not an image, truncated (train), truncated (gallery)

    training_log = SkippedImageLog("Market1501 train")
    training = build_training_dataset(
        dataset.train["image_file_path"],
        dataset.label_encoder.transform(dataset.train["identity_ID"]),
        identity_num_per_batch=3,
        image_num_per_identity=2,
        image_height=HEIGHT,
        image_width=WIDTH,
        skipped_images=training_log,
    )
    for images, batch_labels in training.take(8):
        rows = batch_labels.numpy().reshape(3, 2)
        assert images.shape == (6, HEIGHT, WIDTH, 3)
        assert (rows == rows[:, :1]).all() and len(set(rows[:, 0])) == 3
    assert sorted(os.path.basename(path) for path in training_log.skipped_file_paths) == [
        "0002_c4s1_000002_00.png",
        "0007_c5s1_000002_00.jpg",
    ]

    gallery_log = SkippedImageLog("Market1501 gallery")
    gallery_paths = dataset.gallery["image_file_path"].tolist()
    batches = list(
        build_testing_dataset(
            gallery_paths,
            image_height=HEIGHT,
            image_width=WIDTH,
            batch_size=4,
            return_positions=True,
            skipped_images=gallery_log,
        )
    )
    positions = np.concatenate([positions.numpy() for _, positions in batches])
    corrupt_row = gallery_paths.index(os.path.join(gallery_dir, "0003_c5s1_000002_00.jpg"))
    assert positions.tolist() == [row for row in range(len(gallery_paths)) if row != corrupt_row]
    assert gallery_log.messages() == [
        "Market1501 gallery: skipped 1 image (image undecodable): 0003_c5s1_000002_00.jpg"
    ]
