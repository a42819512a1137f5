"""Turns a dataset's folders into records: finds the dataset folder, scans its image files.

Every loader goes through ``filter_usable_images``, so every one applies the same bad-image
policy (``datasets.image_files``): files that fail the checks are skipped and counted in
messages that name the first few.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

import pandas as pd
from absl import logging

from datasets.image_files import (
    FILE_EMPTY,
    FILE_MISSING,
    NOT_AN_IMAGE,
    TRUNCATED,
    UNDECODABLE,
    check_image_file,
    format_skip_message,
    is_decodable_image,
    is_image_file_name,
)
from datasets.records import JUNK_IDENTITY_ID, build_records


def filter_usable_images(
    candidates: Iterable[tuple[str, int, int]],
    *,
    dataset_name: str,
    split_name: str,
    verify_images: bool,
) -> tuple[pd.DataFrame, list[str]]:
    """Keeps the candidate images that pass ``datasets.image_files``' checks; counts the others.

    Args:
        candidates: (image_file_path, identity_ID, camera_ID) triples.
        dataset_name: Dataset name for the messages.
        split_name: Split name for the messages.
        verify_images: When True, also decode every image with OpenCV and skip the undecodable
            ones (minutes on a real dataset); when False only the cheap structural check runs
            (exists, not empty, image signature, end-of-image marker).

    Returns:
        (records, messages): the usable images in the record format, and one message per kind
        of skip (missing, empty, not an image, truncated, undecodable), each also logged as a
        warning.
    """
    kept: list[tuple[str, int, int]] = []
    skipped: dict[str, list[str]] = {
        reason: [] for reason in (FILE_MISSING, FILE_EMPTY, NOT_AN_IMAGE, TRUNCATED, UNDECODABLE)
    }
    for image_file_path, identity_ID, camera_ID in candidates:
        reason = check_image_file(image_file_path)
        if reason is None and verify_images and not is_decodable_image(image_file_path):
            reason = UNDECODABLE
        if reason is None:
            kept.append((image_file_path, identity_ID, camera_ID))
        else:
            name = image_file_path if reason == FILE_MISSING else os.path.basename(image_file_path)
            skipped[reason].append(name)
    messages = []
    for reason, examples in skipped.items():
        if examples:
            message = format_skip_message(dataset_name, split_name, reason, examples)
            logging.warning(message)
            messages.append(message)
    records = build_records(
        [row[0] for row in kept], [row[1] for row in kept], [row[2] for row in kept]
    )
    return records, messages


def scan_image_folder(
    folder_path: str,
    parse_file_name: Callable[[str], tuple[int, int]],
    *,
    dataset_name: str,
    split_name: str,
    verify_images: bool,
    drop_junk: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    """Reads one split stored as a flat folder of images whose names carry identity and camera.

    Files without an image extension (e.g. the ``Thumbs.db`` files in Market-1501) are ignored
    silently; image files whose name does not parse are skipped and counted.

    Args:
        folder_path: The split's folder.
        parse_file_name: Pure function file name -> (identity_ID, camera_ID), raising ValueError.
        dataset_name: Dataset name for the messages.
        split_name: Split name for the messages.
        verify_images: See ``filter_usable_images``.
        drop_junk: Drop images of identity -1 (junk), counting them in a message.

    Returns:
        (records, messages) as in ``filter_usable_images``.
    """
    file_names = sorted(name for name in os.listdir(folder_path) if is_image_file_name(name))
    unparsable: list[str] = []
    junk: list[str] = []
    candidates = []
    for file_name in file_names:
        try:
            identity_ID, camera_ID = parse_file_name(file_name)
        except ValueError:
            unparsable.append(file_name)
            continue
        if drop_junk and identity_ID == JUNK_IDENTITY_ID:
            junk.append(file_name)
            continue
        candidates.append((os.path.join(folder_path, file_name), identity_ID, camera_ID))
    messages = []
    if unparsable:
        message = format_skip_message(
            dataset_name, split_name, "file name does not parse", unparsable
        )
        logging.warning(message)
        messages.append(message)
    if junk:
        message = (
            f"{dataset_name} {split_name}: dropped {len(junk)} junk image"
            f"{'s' if len(junk) != 1 else ''} (identity -1)"
        )
        logging.info(message)
        messages.append(message)
    records, usable_messages = filter_usable_images(
        candidates, dataset_name=dataset_name, split_name=split_name, verify_images=verify_images
    )
    return records, messages + usable_messages


def find_dataset_dir(
    root_folder_path: str,
    *,
    dataset_name: str,
    candidate_relative_dirs: Sequence[str],
    required_entries: Sequence[str],
    download_hint: str,
) -> str:
    """Finds the dataset folder under ``root_folder_path`` or accepts the folder itself.

    Args:
        root_folder_path: The folder that contains the dataset folder, or the dataset folder.
        dataset_name: Dataset name for the error.
        candidate_relative_dirs: Relative paths tried under ``root_folder_path`` in order, e.g.
            ("Market-1501-v15.09.15",); "" (the root itself) is always tried last.
        required_entries: Sub-folders or files the dataset folder must contain.
        download_hint: Where the dataset comes from, quoted in the error.

    Returns:
        The absolute path of the first candidate that holds every required entry.

    Raises:
        FileNotFoundError: No candidate holds every required entry.
    """
    root_folder_path = os.path.abspath(os.path.expanduser(str(root_folder_path)))
    candidates = [os.path.join(root_folder_path, rel) for rel in candidate_relative_dirs]
    candidates.append(root_folder_path)
    for candidate in candidates:
        if all(os.path.exists(os.path.join(candidate, entry)) for entry in required_entries):
            return os.path.normpath(candidate)
    expected = " or ".join(repr(rel) for rel in candidate_relative_dirs) or "the dataset folder"
    root_state = "" if os.path.isdir(root_folder_path) else " (that folder does not exist)"
    raise FileNotFoundError(
        f"{dataset_name}: expected the folder {expected} containing {list(required_entries)} "
        f"under {root_folder_path!r}{root_state}; looked in {candidates}. "
        f"{dataset_name} comes from {download_hint}."
    )
