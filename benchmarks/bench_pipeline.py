"""Throughput of the tf.data input pipelines on synthetic JPEGs.

Writes N blocky 128x64 JPEGs to a temporary folder and measures images per second of:
decode + resize only (a plain parallel map, no bad-file handling), the training pipeline
without and with augmentation (and with deterministic=True, the cost of ordered output, and with
2 % of the files undecodable, the cost of replacing them), and the testing pipeline (also with
positions, the mode that leaves bad files out), at each output size.

    python benchmarks/bench_pipeline.py --num_images 500 --num_batches 20
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import applications.core.backend  # noqa: E402, F401  (selects legacy Keras before TensorFlow loads)
from applications.core.backend import tf  # noqa: E402
from datasets.image_files import SkippedImageLog  # noqa: E402
from datasets.pipeline import (  # noqa: E402
    build_testing_dataset,
    build_training_dataset,
    decode_and_resize,
)

IDENTITY_NUM_PER_BATCH = 16
IMAGE_NUM_PER_IDENTITY = 4
BATCH_SIZE = IDENTITY_NUM_PER_BATCH * IMAGE_NUM_PER_IDENTITY


def write_synthetic_images(folder_path, num_images, image_num_per_identity=5, seed=0):
    """Blocky random 128x64 JPEGs (random 8x8 blocks upscaled), like coarse person crops."""
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for index in range(num_images):
        blocks = rng.integers(0, 256, size=(16, 8, 3), dtype=np.uint8)
        image = cv2.resize(blocks, (64, 128), interpolation=cv2.INTER_NEAREST)
        image = cv2.add(image, rng.integers(0, 20, size=image.shape, dtype=np.uint8))
        path = os.path.join(folder_path, f"{index:05d}.jpg")
        cv2.imwrite(path, image)
        paths.append(path)
        labels.append(index // image_num_per_identity)
    return paths, labels


def measure(dataset, num_batches, warmup_batches=3):
    """Images per second over num_batches batches, after warm-up batches."""
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    num_images = 0
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(iterator)
        images = batch[0] if isinstance(batch, tuple) else batch
        num_images += int(images.shape[0])
    return num_images / (time.perf_counter() - start)


def plant_bad_files(paths, fraction=0.02):
    """Overwrites every 1/fraction-th file with corrupt JPEG data (whole header and end)."""
    bad_paths = paths[:: int(round(1 / fraction))]
    for path in bad_paths:
        with open(path, "rb") as file:
            contents = bytearray(file.read())
        start = contents.find(b"\xff\xda") + 20
        contents[start : len(contents) - 4 : 7] = b"\xff" * len(
            contents[start : len(contents) - 4 : 7]
        )
        with open(path.replace(".jpg", "_bad.jpg"), "wb") as file:
            file.write(contents)
    return [path.replace(".jpg", "_bad.jpg") if path in bad_paths else path for path in paths]


def build_variants(paths, labels, image_height, image_width, bad_paths):
    decode_only = (
        tf.data.Dataset.from_tensor_slices(paths)
        .repeat()
        .map(
            lambda path: decode_and_resize(path, image_height, image_width),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .batch(BATCH_SIZE)
        .prefetch(tf.data.AUTOTUNE)
    )
    common = dict(
        identity_num_per_batch=IDENTITY_NUM_PER_BATCH,
        image_num_per_identity=IMAGE_NUM_PER_IDENTITY,
        image_height=image_height,
        image_width=image_width,
        # Every transform on, so the augmentation does all its work.
        random_crop_probability=1.0,
        horizontal_flip_probability=0.5,
        patch_replacement_probability=1.0,
        random_erasing_probability=1.0,
    )
    # The testing pipeline ends; repeat its file list so it never runs dry while timed.
    testing, testing_with_positions = (
        build_testing_dataset(
            paths * 50,
            image_height=image_height,
            image_width=image_width,
            batch_size=BATCH_SIZE,
            return_positions=return_positions,
        )
        for return_positions in (False, True)
    )
    return {
        "decode+resize only": decode_only,
        "train, no augmentation": build_training_dataset(
            paths, labels, use_data_augmentation=False, **common
        ),
        "train, augmentation": build_training_dataset(paths, labels, **common),
        "train, augmentation, deterministic": build_training_dataset(
            paths, labels, deterministic=True, **common
        ),
        "train, augmentation, 2% bad files": build_training_dataset(
            bad_paths, labels, skipped_images=SkippedImageLog("bench"), **common
        ),
        "testing": testing,
        "testing, with positions": testing_with_positions,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=500, help="synthetic JPEGs to write")
    parser.add_argument(
        "--num_batches", type=int, default=20, help=f"timed batches of {BATCH_SIZE} per variant"
    )
    arguments = parser.parse_args()
    sizes = [(256, 128), (384, 128)]
    with tempfile.TemporaryDirectory() as folder_path:
        paths, labels = write_synthetic_images(folder_path, arguments.num_images)
        bad_paths = plant_bad_files(paths)
        results = {}
        for image_height, image_width in sizes:
            variants = build_variants(paths, labels, image_height, image_width, bad_paths)
            for name, dataset in variants.items():
                results.setdefault(name, {})[(image_height, image_width)] = measure(
                    dataset, arguments.num_batches
                )
    reference = "decode+resize only"
    header = f"{'variant':40s}" + "".join(f"{f'{h}x{w} img/s':>16s}{'ratio':>8s}" for h, w in sizes)
    print(
        f"{arguments.num_images} JPEGs 128x64, batch {BATCH_SIZE} "
        f"(P={IDENTITY_NUM_PER_BATCH}, K={IMAGE_NUM_PER_IDENTITY}), {os.cpu_count()} CPUs; "
        f"ratio = img/s / '{reference}'"
    )
    print(header)
    print("-" * len(header))
    for name, by_size in results.items():
        row = f"{name:40s}"
        for size in sizes:
            row += f"{by_size[size]:16.0f}{by_size[size] / results[reference][size]:8.2f}"
        print(row)


if __name__ == "__main__":
    main()
