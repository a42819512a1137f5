"""CUHK03 under the new 767/700 protocol (CUHK03-NP), detected or labeled boxes.

Layout (Zhong et al.'s widely used conversion): ``cuhk03-np/detected/`` and
``cuhk03-np/labeled/``, each holding ``bounding_box_train/``, ``query/`` and
``bounding_box_test/`` of PNG files named like ``0001_c1_1.png``: identity 0001, camera 1 or 2
(the two views of the camera pair, 1-based), image index 1.
"""

from __future__ import annotations

import re

from datasets import market1501, records, scanning

CUHK03_FOLDER_NAME = "cuhk03-np"
CUHK03_VARIANTS = ("detected", "labeled")
CUHK03_DOWNLOAD_HINT = (
    "https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP (Zhong et al., "
    "'Re-ranking Person Re-identification with k-reciprocal Encoding', CVPR 2017; original "
    "CUHK03: Li et al., CVPR 2014)"
)
# Zhong et al. (CVPR 2017), Table 1 and the CUHK03-NP README: 767 training and 700 test
# identities; detected 7,365 / 1,400 / 5,332 and labeled 7,368 / 1,400 / 5,328 images.
CUHK03_PUBLISHED_COUNTS = {
    "detected": {
        "train": records.PublishedCounts(num_images=7365, num_identities=767),
        "query": records.PublishedCounts(num_images=1400, num_identities=700),
        "gallery": records.PublishedCounts(num_images=5332, num_identities=700),
    },
    "labeled": {
        "train": records.PublishedCounts(num_images=7368, num_identities=767),
        "query": records.PublishedCounts(num_images=1400, num_identities=700),
        "gallery": records.PublishedCounts(num_images=5328, num_identities=700),
    },
}
CUHK03_COUNTS_SOURCE = "Zhong et al., CVPR 2017"

# Identity and camera lead the name, as in every Market-style copy; the common loaders match just
# that prefix, so the rest may be an image index ("_1") or a Market-style "s1_000001_00".
_CUHK03_FILE_NAME_PATTERN = re.compile(
    r"^(-1|\d+)_c(\d+)(?:_\d+|s\d+_[\w]+)\.(?:png|jpg|jpeg)$", re.IGNORECASE
)


def parse_cuhk03_file_name(file_name: str) -> tuple[int, int]:
    """Reads identity and camera from a CUHK03-NP file name.

    Args:
        file_name: Base name such as "0001_c1_1.png".

    Returns:
        (identity_ID, camera_ID): ints, camera 1 or 2 as written in the name.

    Raises:
        ValueError: The name does not follow the CUHK03-NP pattern.
    """
    match = _CUHK03_FILE_NAME_PATTERN.match(file_name)
    if match is None:
        raise ValueError(f"{file_name!r} is not a CUHK03-NP file name like '0001_c1_1.png'")
    return int(match.group(1)), int(match.group(2))


def normalize_cuhk03_variant(cuhk03_variant: str) -> str:
    """Maps "detected", "labeled", "CUHK03_detected" or "CUHK03_labeled" to the variant name.

    Raises:
        ValueError: Any other value; the message lists the valid ones.
    """
    variant = str(cuhk03_variant)
    if variant.lower().startswith("cuhk03_"):
        variant = variant[len("cuhk03_") :]
    variant = variant.lower()
    if variant not in CUHK03_VARIANTS:
        valid = list(CUHK03_VARIANTS) + [f"CUHK03_{name}" for name in CUHK03_VARIANTS]
        raise ValueError(f"cuhk03_variant={cuhk03_variant!r} is not one of {valid}")
    return variant


def load_cuhk03(
    root_folder_path: str, *, cuhk03_variant: str = "detected", verify_images: bool = False
) -> records.ReIDDataset:
    """Loads CUHK03-NP from ``root_folder_path/cuhk03-np/<variant>``.

    Args:
        root_folder_path: Folder containing ``cuhk03-np``, or ``cuhk03-np`` itself, or the
            variant folder itself.
        cuhk03_variant: "detected" (default) or "labeled" (or "CUHK03_detected"/"CUHK03_labeled").
        verify_images: Decode every image and skip undecodable ones.

    Returns:
        The ReIDDataset named "CUHK03_detected" or "CUHK03_labeled".

    Raises:
        FileNotFoundError: The dataset folder is not found.
        ValueError: Unknown variant, or a split has no usable image.
    """
    variant = normalize_cuhk03_variant(cuhk03_variant)
    dataset_name = f"CUHK03_{variant}"
    dataset_dir = scanning.find_dataset_dir(
        root_folder_path,
        dataset_name=dataset_name,
        candidate_relative_dirs=(f"{CUHK03_FOLDER_NAME}/{variant}", variant),
        required_entries=tuple(market1501.MARKET1501_SPLIT_FOLDER_NAMES.values()),
        download_hint=CUHK03_DOWNLOAD_HINT,
    )
    return market1501.load_market1501_layout(
        dataset_dir,
        dataset_name=dataset_name,
        parse_file_name=parse_cuhk03_file_name,
        published_counts=CUHK03_PUBLISHED_COUNTS[variant],
        counts_source=CUHK03_COUNTS_SOURCE,
        verify_images=verify_images,
    )
