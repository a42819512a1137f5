"""MSMT17 (V1 or V2), read through its list files.

Layout V2: ``MSMT17_V2/`` holding ``mask_train_v2/``, ``mask_test_v2/`` and the list files
``list_train.txt``, ``list_val.txt``, ``list_query.txt``, ``list_gallery.txt``. Layout V1:
``MSMT17_V1/`` holding ``train/``, ``test/`` and the same list files. Each list line is
``<path relative to the image folder> <identity>``, e.g.
``0000/0000_000_01_0303morning_0015_0.jpg 0``. The camera is the third ``_`` field of the file
name (01..15), kept 1-based like the other datasets. Train and val lists together form the
training set (the protocol of Wei et al.); query and gallery images live in the test folder.
"""

from __future__ import annotations

import os
import re

import pandas as pd
from absl import logging

from datasets import image_files, records, scanning

MSMT17_LAYOUTS = {
    # folder name -> (training image folder, test image folder)
    "MSMT17_V2": ("mask_train_v2", "mask_test_v2"),
    "MSMT17_V1": ("train", "test"),
}
MSMT17_LIST_FILE_NAMES = {
    "train": ("list_train.txt", "list_val.txt"),
    "query": ("list_query.txt",),
    "gallery": ("list_gallery.txt",),
}
MSMT17_DOWNLOAD_HINT = (
    "the official page https://www.pkuvmc.com/dataset.html (by request; Wei et al., 'Person "
    "Transfer GAN to Bridge Domain Gap for Person Re-Identification', CVPR 2018)"
)
# Wei et al. (CVPR 2018), Section 3: 32,621 training images of 1,041 identities (train + val
# lists), 11,659 query and 82,161 gallery images of 3,060 test identities.
MSMT17_PUBLISHED_COUNTS = {
    "train": records.PublishedCounts(num_images=32621, num_identities=1041),
    "query": records.PublishedCounts(num_images=11659, num_identities=3060),
    "gallery": records.PublishedCounts(num_images=82161, num_identities=3060),
}
MSMT17_COUNTS_SOURCE = "Wei et al., CVPR 2018"

_MSMT17_FILE_NAME_PATTERN = re.compile(
    r"^(\d+)_(\d+)_(\d+)_([0-9a-z]+)_(\d+)_(\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE
)


def parse_msmt17_file_name(file_name: str) -> tuple[int, int]:
    """Reads identity and camera from an MSMT17 file name.

    Args:
        file_name: Base name such as "0000_000_01_0303morning_0015_0.jpg" (a leading folder is
            ignored).

    Returns:
        (identity_ID, camera_ID): ints; the identity is the one the name writes (the list file's
        label is the authority when loading), the camera the third field, 1-based.

    Raises:
        ValueError: The name does not follow the MSMT17 pattern.
    """
    match = _MSMT17_FILE_NAME_PATTERN.match(os.path.basename(file_name))
    if match is None:
        raise ValueError(
            f"{file_name!r} is not an MSMT17 file name like '0000_000_01_0303morning_0015_0.jpg'"
        )
    return int(match.group(1)), int(match.group(3))


def parse_msmt17_list_line(line: str) -> tuple[str, int, int]:
    """Parses one line of an MSMT17 list file.

    Args:
        line: E.g. "0000/0000_000_01_0303morning_0015_0.jpg 0".

    Returns:
        (relative_path, identity_ID, camera_ID): identity from the line's label, camera from the
        file name (1-based).

    Raises:
        ValueError: The line does not have a path and an integer label, or the name does not
            parse.
    """
    fields = line.split()
    if len(fields) != 2:
        raise ValueError(f"{line!r} is not an MSMT17 list line '<relative path> <identity>'")
    relative_path, label = fields
    try:
        identity_ID = int(label)
    except ValueError as error:
        raise ValueError(f"{line!r}: the identity {label!r} is not an integer") from error
    _, camera_ID = parse_msmt17_file_name(relative_path)
    return relative_path, identity_ID, camera_ID


def _read_split(
    dataset_dir: str,
    image_folder_name: str,
    list_file_names: tuple[str, ...],
    *,
    split_name: str,
    verify_images: bool,
) -> tuple[pd.DataFrame, list[str]]:
    """Reads one split from its list files; bad lines and missing images are counted skips."""
    candidates = []
    bad_lines: list[str] = []
    for list_file_name in list_file_names:
        with open(os.path.join(dataset_dir, list_file_name), encoding="utf-8") as list_file:
            for line_number, line in enumerate(list_file, start=1):
                if not line.strip():
                    continue
                try:
                    relative_path, identity_ID, camera_ID = parse_msmt17_list_line(line)
                except ValueError:
                    bad_lines.append(f"{list_file_name}:{line_number}")
                    continue
                image_file_path = os.path.join(dataset_dir, image_folder_name, relative_path)
                candidates.append((image_file_path, identity_ID, camera_ID))
    messages = []
    if bad_lines:
        message = image_files.format_skip_message(
            "MSMT17", split_name, "list line does not parse", bad_lines
        )
        logging.warning(message)
        messages.append(message)
    split_records, usable_messages = scanning.filter_usable_images(
        candidates, dataset_name="MSMT17", split_name=split_name, verify_images=verify_images
    )
    return split_records, messages + usable_messages


def load_msmt17(root_folder_path: str, *, verify_images: bool = False) -> records.ReIDDataset:
    """Loads MSMT17 from ``root_folder_path/MSMT17_V2`` (preferred) or ``.../MSMT17_V1``.

    Args:
        root_folder_path: Folder containing ``MSMT17_V2`` or ``MSMT17_V1``, or one of them.
        verify_images: Decode every image and skip undecodable ones (takes many minutes).

    Returns:
        The ReIDDataset named "MSMT17".

    Raises:
        FileNotFoundError: Neither layout is found.
        ValueError: A split has no usable image.
    """
    all_list_file_names = [name for names in MSMT17_LIST_FILE_NAMES.values() for name in names]
    errors = []
    for folder_name, (train_folder_name, test_folder_name) in MSMT17_LAYOUTS.items():
        try:
            dataset_dir = scanning.find_dataset_dir(
                root_folder_path,
                dataset_name="MSMT17",
                candidate_relative_dirs=(folder_name,),
                required_entries=(train_folder_name, test_folder_name, *all_list_file_names),
                download_hint=MSMT17_DOWNLOAD_HINT,
            )
        except FileNotFoundError as error:
            errors.append(str(error))
            continue
        splits = {}
        messages: list[str] = []
        for split_name, list_file_names in MSMT17_LIST_FILE_NAMES.items():
            image_folder_name = train_folder_name if split_name == "train" else test_folder_name
            splits[split_name], split_messages = _read_split(
                dataset_dir,
                image_folder_name,
                list_file_names,
                split_name=split_name,
                verify_images=verify_images,
            )
            messages.extend(split_messages)
        messages.extend(
            records.compare_with_published_counts(
                "MSMT17", splits, MSMT17_PUBLISHED_COUNTS, MSMT17_COUNTS_SOURCE
            )
        )
        return records.build_reid_dataset(
            "MSMT17", splits["train"], splits["query"], splits["gallery"], messages, dataset_dir
        )
    raise FileNotFoundError(" / ".join(errors))
