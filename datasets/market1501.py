"""Market-1501 and every dataset stored in its layout (user folders, Synthetic).

Layout: ``Market-1501-v15.09.15/`` holding ``bounding_box_train/`` (train), ``query/`` and
``bounding_box_test/`` (gallery). A file name such as ``0002_c1s1_000451_03.jpg`` reads
identity 0002, camera 1, sequence 1, frame 000451, detection box 03. Identity -1 marks junk
boxes, dropped from every split; identity 0 marks distractors, kept in the gallery.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

from datasets import records, scanning

MARKET1501_FOLDER_NAME = "Market-1501-v15.09.15"
MARKET1501_SPLIT_FOLDER_NAMES = {
    "train": "bounding_box_train",
    "query": "query",
    "gallery": "bounding_box_test",
}
MARKET1501_DOWNLOAD_HINT = (
    "the official page https://zheng-lab-anu.github.io/Project/project_reid.html "
    "(Zheng et al., 'Scalable Person Re-identification: A Benchmark', ICCV 2015)"
)
# Zheng et al. (ICCV 2015), Table 1 and the dataset's README: 12,936 training images of 751
# identities, 3,368 query images of 750 identities, 19,732 gallery images of which 3,819 are junk
# (-1); 15,913 gallery images (750 identities + distractor 0) remain once junk is dropped, the
# number every widely used loader (e.g. reid-strong-baseline) prints.
MARKET1501_PUBLISHED_COUNTS = {
    "train": records.PublishedCounts(num_images=12936, num_identities=751),
    "query": records.PublishedCounts(num_images=3368, num_identities=750),
    "gallery": records.PublishedCounts(num_images=15913, num_identities=751),
}
MARKET1501_COUNTS_SOURCE = "Zheng et al., ICCV 2015"

_MARKET1501_FILE_NAME_PATTERN = re.compile(
    r"^(-1|\d+)_c(\d+)s(\d+)_(\d+)_(\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE
)


def parse_market1501_file_name(file_name: str) -> tuple[int, int]:
    """Reads identity and camera from a Market-1501 file name.

    Args:
        file_name: Base name such as "0002_c1s1_000451_03.jpg" or "-1_c3s2_001234_00.jpg".

    Returns:
        (identity_ID, camera_ID): ints; identity -1 is junk, 0 a distractor; camera is 1-based as
        written in the name.

    Raises:
        ValueError: The name does not follow the Market-1501 pattern.
    """
    match = _MARKET1501_FILE_NAME_PATTERN.match(file_name)
    if match is None:
        raise ValueError(
            f"{file_name!r} is not a Market-1501 file name like '0002_c1s1_000451_03.jpg'"
        )
    return int(match.group(1)), int(match.group(2))


def load_market1501_layout(
    dataset_dir: str,
    *,
    dataset_name: str,
    parse_file_name: Callable[[str], tuple[int, int]] = parse_market1501_file_name,
    published_counts: Mapping[str, records.PublishedCounts] | None = None,
    counts_source: str = "",
    verify_images: bool = False,
) -> records.ReIDDataset:
    """Loads a folder holding ``bounding_box_train``, ``query`` and ``bounding_box_test``.

    Args:
        dataset_dir: The folder holding the three split folders.
        dataset_name: Name given to the dataset and used in messages.
        parse_file_name: File name -> (identity_ID, camera_ID), raising ValueError.
        published_counts: Split name -> published counts to compare with; None skips the check.
        counts_source: Where the published counts come from, for the message.
        verify_images: Decode every image and skip undecodable ones (slow on real datasets).

    Returns:
        The ReIDDataset; junk (-1) is dropped from all splits.

    Raises:
        ValueError: A split has no usable image.
    """
    splits = {}
    messages: list[str] = []
    for split_name, folder_name in MARKET1501_SPLIT_FOLDER_NAMES.items():
        split_records, split_messages = scanning.scan_image_folder(
            os.path.join(dataset_dir, folder_name),
            parse_file_name,
            dataset_name=dataset_name,
            split_name=split_name,
            verify_images=verify_images,
        )
        splits[split_name] = split_records
        messages.extend(split_messages)
    if published_counts is not None:
        messages.extend(
            records.compare_with_published_counts(
                dataset_name, splits, published_counts, counts_source
            )
        )
    return records.build_reid_dataset(
        dataset_name, splits["train"], splits["query"], splits["gallery"], messages, dataset_dir
    )


def load_market1501(root_folder_path: str, *, verify_images: bool = False) -> records.ReIDDataset:
    """Loads Market-1501 from ``root_folder_path/Market-1501-v15.09.15`` (or that folder itself).

    Args:
        root_folder_path: Folder containing ``Market-1501-v15.09.15``, or that folder.
        verify_images: Decode every image and skip undecodable ones (takes minutes).

    Returns:
        The ReIDDataset named "Market1501".

    Raises:
        FileNotFoundError: The dataset folder is not found.
        ValueError: A split has no usable image.
    """
    dataset_dir = scanning.find_dataset_dir(
        root_folder_path,
        dataset_name="Market1501",
        candidate_relative_dirs=(MARKET1501_FOLDER_NAME,),
        required_entries=tuple(MARKET1501_SPLIT_FOLDER_NAMES.values()),
        download_hint=MARKET1501_DOWNLOAD_HINT,
    )
    return load_market1501_layout(
        dataset_dir,
        dataset_name="Market1501",
        published_counts=MARKET1501_PUBLISHED_COUNTS,
        counts_source=MARKET1501_COUNTS_SOURCE,
        verify_images=verify_images,
    )


def is_market1501_layout_folder(folder_path: str) -> bool:
    """Tells whether ``folder_path`` holds the three Market-1501 split folders."""
    return all(
        os.path.isdir(os.path.join(folder_path, folder_name))
        for folder_name in MARKET1501_SPLIT_FOLDER_NAMES.values()
    )


def load_user_folder(folder_path: str, *, verify_images: bool = False) -> records.ReIDDataset:
    """Loads a user's own dataset stored in the Market-1501 layout and naming.

    Args:
        folder_path: Folder holding ``bounding_box_train``, ``query``, ``bounding_box_test`` with
            Market-1501 file names (identity -1 junk is dropped, identity 0 distractors kept).
        verify_images: Decode every image and skip undecodable ones.

    Returns:
        The ReIDDataset, named by the folder path as given.

    Raises:
        FileNotFoundError: The folder lacks one of the split folders.
        ValueError: A split has no usable image.
    """
    if not is_market1501_layout_folder(folder_path):
        raise FileNotFoundError(
            f"{folder_path!r} is not a dataset folder in the Market-1501 layout: it must hold "
            f"{list(MARKET1501_SPLIT_FOLDER_NAMES.values())} with names like "
            "'0002_c1s1_000451_03.jpg'."
        )
    return load_market1501_layout(
        os.path.abspath(folder_path), dataset_name=str(folder_path), verify_images=verify_images
    )
