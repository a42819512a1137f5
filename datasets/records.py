"""The record format every dataset loader returns, and the scanning code the loaders share.

A split is a pandas DataFrame with one row per image and the columns of ``RECORD_COLUMNS``:
``image_file_path`` (absolute path, str), ``identity_ID`` (int64) and ``camera_ID`` (int64),
sorted by ``image_file_path`` so that every load gives the same order. Camera IDs are kept as the
dataset's file names write them (1-based for every supported dataset); evaluation only compares
them for equality.

This module and the loaders use no TensorFlow, so loading is fast and testable on its own.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from absl import logging
from sklearn.preprocessing import LabelEncoder

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

RECORD_COLUMNS = ("image_file_path", "identity_ID", "camera_ID")
JUNK_IDENTITY_ID = -1
DISTRACTOR_IDENTITY_ID = 0
SPLIT_NAMES = ("train", "query", "gallery")


@dataclasses.dataclass
class ReIDDataset:
    """A loaded person re-identification dataset.

    Attributes:
        name: The registry name the dataset was loaded under, e.g. "Market1501".
        train: Training images, a DataFrame with the columns of ``RECORD_COLUMNS``.
        query: Query images, same columns.
        gallery: Gallery images, same columns (may hold distractors, identity 0).
        label_encoder: LabelEncoder fitted on ``train.identity_ID``; its ``transform`` maps
            training identities to labels 0..num_train_identities-1.
        num_train_identities: Number of distinct identities in ``train``.
        messages: Human-readable notes for the evaluation output: counted skips and
            differences from the published image counts.
    """

    name: str
    train: pd.DataFrame
    query: pd.DataFrame
    gallery: pd.DataFrame
    label_encoder: LabelEncoder
    num_train_identities: int
    messages: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class PublishedCounts:
    """Image and identity counts a dataset's authors published for one split.

    Attributes:
        num_images: Number of images, after dropping junk (identity -1) images.
        num_identities: Number of distinct identities, or None when not published.
    """

    num_images: int
    num_identities: int | None = None


def build_records(
    image_file_paths: Sequence[str],
    identity_IDs: Sequence[int],
    camera_IDs: Sequence[int],
) -> pd.DataFrame:
    """Builds a split DataFrame in the shared record format.

    Args:
        image_file_paths: Image paths, N str; made absolute.
        identity_IDs: Identity of each image, N ints.
        camera_IDs: Camera of each image, N ints.

    Returns:
        DataFrame with N rows and the columns ``RECORD_COLUMNS`` (str, int64, int64), sorted by
        ``image_file_path`` with a fresh 0..N-1 index.
    """
    records = pd.DataFrame(
        {
            "image_file_path": pd.Series(
                [os.path.abspath(path) for path in image_file_paths], dtype=str
            ),
            "identity_ID": np.asarray(identity_IDs, dtype=np.int64).reshape(-1),
            "camera_ID": np.asarray(camera_IDs, dtype=np.int64).reshape(-1),
        }
    )
    return records.sort_values("image_file_path", kind="stable").reset_index(drop=True)


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


def compare_with_published_counts(
    dataset_name: str,
    splits: Mapping[str, pd.DataFrame],
    published_counts: Mapping[str, PublishedCounts],
    source: str,
) -> list[str]:
    """Compares each split's size with the published one; a difference is a warning, not an error.

    Args:
        dataset_name: Dataset name for the messages.
        splits: Split name -> records.
        published_counts: Split name -> published counts (splits missing here are not checked).
        source: Where the published numbers come from, quoted in the message.

    Returns:
        One message per split that differs, each also logged as a warning.
    """
    messages = []
    for split_name, records in splits.items():
        if split_name not in published_counts:
            continue
        expected = published_counts[split_name]
        num_images = len(records)
        num_identities = int(records["identity_ID"].nunique())
        differs = num_images != expected.num_images or (
            expected.num_identities is not None and num_identities != expected.num_identities
        )
        if not differs:
            continue
        published = f"{expected.num_images:,} images"
        if expected.num_identities is not None:
            published += f" / {expected.num_identities:,} identities"
        message = (
            f"{dataset_name} {split_name}: found {num_images:,} images / {num_identities:,} "
            f"identities, published {published} ({source}); is this copy complete?"
        )
        logging.warning(message)
        messages.append(message)
    return messages


def build_reid_dataset(
    name: str,
    train: pd.DataFrame,
    query: pd.DataFrame,
    gallery: pd.DataFrame,
    messages: Sequence[str],
    dataset_dir: str,
) -> ReIDDataset:
    """Checks that no split is empty and assembles a ReIDDataset with a fitted label encoder.

    Args:
        name: Registry name of the dataset.
        train: Training records.
        query: Query records.
        gallery: Gallery records.
        messages: Notes gathered while loading.
        dataset_dir: Folder the data came from, named in the empty-split error.

    Returns:
        The ReIDDataset.

    Raises:
        ValueError: A split has no usable image.
    """
    for split_name, records in zip(SPLIT_NAMES, (train, query, gallery), strict=True):
        if records.empty:
            raise ValueError(
                f"{name}: the {split_name} split has no usable image in {dataset_dir!r}. "
                f"Notes from loading: {list(messages) or 'none'}."
            )
    label_encoder = LabelEncoder().fit(train["identity_ID"].to_numpy())
    return ReIDDataset(
        name=name,
        train=train,
        query=query,
        gallery=gallery,
        label_encoder=label_encoder,
        num_train_identities=len(label_encoder.classes_),
        messages=list(messages),
    )


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
