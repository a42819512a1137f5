"""Tiny on-disk copies of each dataset's layout, written by the tests into a temporary folder."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

import cv2
import numpy as np

MARKET1501_TRAIN_FILE_NAMES = (
    "0002_c1s1_000451_03.jpg",
    "0002_c2s1_000551_01.jpg",
    "0007_c1s1_001051_02.jpg",
    "0007_c3s2_002051_01.jpg",
    "0010_c2s1_003051_01.jpg",
    "0010_c6s1_004051_01.jpg",
)
MARKET1501_QUERY_FILE_NAMES = (
    "0001_c1s1_001051_00.jpg",
    "0003_c2s1_000151_00.jpg",
    "0004_c3s1_000251_00.jpg",
)
MARKET1501_GALLERY_FILE_NAMES = (
    "0001_c2s1_001101_01.jpg",
    "0001_c3s1_001201_02.jpg",
    "0003_c4s1_000301_01.jpg",
    "0004_c5s1_000401_03.jpg",
    "0004_c1s1_000261_00.jpg",
    "0000_c1s1_000100_01.jpg",
    "0000_c4s3_000200_05.jpg",
    "-1_c1s1_000300_01.jpg",
    "-1_c2s2_000400_02.jpg",
)


def write_image(image_file_path: str, seed: int = 0, height: int = 8, width: int = 4) -> None:
    """Writes a small valid image (format from the extension) with random pixels."""
    os.makedirs(os.path.dirname(image_file_path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(image_file_path, pixels)


def write_images(folder_path: str, file_names: Iterable[str]) -> None:
    """Writes one small image per file name into ``folder_path``."""
    for index, file_name in enumerate(file_names):
        write_image(os.path.join(folder_path, file_name), seed=index)


def write_market1501_layout(
    dataset_dir: str,
    train_file_names: Iterable[str],
    query_file_names: Iterable[str],
    gallery_file_names: Iterable[str],
) -> str:
    """Writes ``bounding_box_train``, ``query`` and ``bounding_box_test`` under ``dataset_dir``."""
    write_images(os.path.join(dataset_dir, "bounding_box_train"), train_file_names)
    write_images(os.path.join(dataset_dir, "query"), query_file_names)
    write_images(os.path.join(dataset_dir, "bounding_box_test"), gallery_file_names)
    return dataset_dir


def write_market1501(root_folder_path: str) -> str:
    """Writes a tiny Market-1501 (with junk, distractors and a Thumbs.db) under the root."""
    dataset_dir = write_market1501_layout(
        os.path.join(root_folder_path, "Market-1501-v15.09.15"),
        MARKET1501_TRAIN_FILE_NAMES,
        MARKET1501_QUERY_FILE_NAMES,
        MARKET1501_GALLERY_FILE_NAMES,
    )
    with open(os.path.join(dataset_dir, "bounding_box_test", "Thumbs.db"), "wb") as file:
        file.write(b"not an image")
    return dataset_dir


def write_dukemtmc_reid(root_folder_path: str) -> str:
    """Writes a tiny DukeMTMC-reID under the root: 3 train ids, 2 query ids, 1 gallery-only id."""
    return write_market1501_layout(
        os.path.join(root_folder_path, "DukeMTMC-reID"),
        ["0001_c1_f0000001.jpg", "0001_c2_f0000101.jpg", "0002_c3_f0046985.jpg",
         "0002_c4_f0047985.jpg", "0005_c2_f0046985.jpg", "0005_c8_f0050985.jpg"],
        ["0003_c1_f0001000.jpg", "0004_c5_f0002000.jpg"],
        ["0003_c2_f0001100.jpg", "0004_c6_f0002100.jpg", "0004_c7_f0002200.jpg",
         "0009_c1_f0003000.jpg"],
    )  # fmt: skip


MSMT17_TRAIN_LINES = (
    "0000/0000_000_01_0303morning_0015_0.jpg 0",
    "0000/0000_001_05_0303morning_0016_1.jpg 0",
    "0001/0001_000_11_0303noon_0100_0.jpg 1",
)
MSMT17_VAL_LINES = ("0002/0002_000_15_0304afternoon_0200_0.jpg 2",)
MSMT17_QUERY_LINES = (
    "0000/0000_000_02_0303morning_0035_0.jpg 0",
    "0001/0001_000_07_0304noon_0135_2.jpg 1",
)
MSMT17_GALLERY_LINES = (
    "0000/0000_001_03_0303morning_0045_0.jpg 0",
    "0001/0001_001_09_0304noon_0165_1.jpg 1",
    "0001/0001_002_10_0304noon_0175_0.jpg 1",
)


def write_msmt17(root_folder_path: str, version: int = 2) -> str:
    """Writes a tiny MSMT17 (V1 or V2 folder names) with its four list files under the root."""
    if version == 2:
        dataset_dir = os.path.join(root_folder_path, "MSMT17_V2")
        train_folder_name, test_folder_name = "mask_train_v2", "mask_test_v2"
    else:
        dataset_dir = os.path.join(root_folder_path, "MSMT17_V1")
        train_folder_name, test_folder_name = "train", "test"
    lists = {
        "list_train.txt": (train_folder_name, MSMT17_TRAIN_LINES),
        "list_val.txt": (train_folder_name, MSMT17_VAL_LINES),
        "list_query.txt": (test_folder_name, MSMT17_QUERY_LINES),
        "list_gallery.txt": (test_folder_name, MSMT17_GALLERY_LINES),
    }
    for list_file_name, (folder_name, lines) in lists.items():
        write_images(os.path.join(dataset_dir, folder_name), [line.split()[0] for line in lines])
        os.makedirs(dataset_dir, exist_ok=True)
        with open(os.path.join(dataset_dir, list_file_name), "w", encoding="utf-8") as file:
            file.write("\n".join(lines) + "\n")
    return dataset_dir


def write_cuhk03(root_folder_path: str) -> str:
    """Writes tiny CUHK03-NP detected and labeled folders (PNG) under the root."""
    base_dir = os.path.join(root_folder_path, "cuhk03-np")
    write_market1501_layout(
        os.path.join(base_dir, "detected"),
        ["0001_c1_1.png", "0001_c2_6.png", "0002_c1_1.png", "0002_c2_7.png"],
        ["0003_c1_1.png", "0004_c2_6.png"],
        ["0003_c2_6.png", "0004_c1_2.png", "0004_c1_3.png"],
    )
    write_market1501_layout(
        os.path.join(base_dir, "labeled"),
        ["0001_c1_1.png", "0001_c2_6.png", "0002_c1_1.png"],
        ["0003_c1_1.png"],
        ["0003_c2_6.png", "0003_c2_7.png"],
    )
    return base_dir


# Planted faults, as found in real copies of datasets. The first four fail the cheap load-time
# check; "corrupt_png" fails any decoder; "corrupt_jpeg" keeps its header and end marker and
# OpenCV still decodes it, but TensorFlow's decoder does not.
BAD_IMAGE_KINDS = (
    "header_only_jpeg",
    "text_file",
    "truncated_jpeg",
    "empty",
    "corrupt_png",
    "corrupt_jpeg",
)


def write_bad_image_file(image_file_path: str, kind: str) -> str:
    """Writes a bad image file of one of the ``BAD_IMAGE_KINDS``; returns its path."""
    os.makedirs(os.path.dirname(image_file_path), exist_ok=True)
    pixels = np.random.default_rng(7).integers(0, 256, size=(24, 12, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", pixels)[1].tobytes()
    if kind == "header_only_jpeg":
        # Everything up to the start of the compressed data.
        contents = jpeg[: jpeg.find(b"\xff\xda") + 12]
    elif kind == "text_file":
        contents = b"404 Not Found\n"
    elif kind == "truncated_jpeg":
        contents = jpeg[: len(jpeg) * 2 // 3]
    elif kind == "empty":
        contents = b""
    elif kind == "corrupt_png":
        png = bytearray(cv2.imencode(".png", pixels)[1].tobytes())
        start = png.find(b"IDAT") + 20
        png[start : start + 40] = bytes(value ^ 0x5A for value in png[start : start + 40])
        contents = bytes(png)
    elif kind == "corrupt_jpeg":
        corrupt = bytearray(jpeg)
        start = corrupt.find(b"\xff\xda") + 20
        for position in range(start, len(corrupt) - 4, 7):
            corrupt[position] = 0xFF
        contents = bytes(corrupt)
    else:
        raise ValueError(f"Unknown kind {kind!r}; valid kinds: {BAD_IMAGE_KINDS}")
    with open(image_file_path, "wb") as file:
        file.write(contents)
    return image_file_path


def tree_digest(folder_path: str) -> str:
    """SHA-256 over every file's path (relative to `folder_path`) and bytes: a dataset folder's
    fingerprint, to check that a run left it untouched."""
    digest = hashlib.sha256()
    for parent, folder_names, file_names in sorted(os.walk(folder_path)):
        folder_names.sort()
        for file_name in sorted(file_names):
            file_path = os.path.join(parent, file_name)
            digest.update(os.path.relpath(file_path, folder_path).encode() + b"\0")
            with open(file_path, "rb") as file:
                digest.update(hashlib.sha256(file.read()).digest())
    return digest.hexdigest()
