"""The record format every dataset loader returns, and the checks applied to finished records.

A split is a pandas DataFrame with one row per image and the columns of ``RECORD_COLUMNS``:
``image_file_path`` (absolute path, str), ``identity_ID`` (int64) and ``camera_ID`` (int64),
sorted by ``image_file_path`` so that every load gives the same order. Camera IDs are kept as the
dataset's file names write them (1-based for every supported dataset); evaluation only compares
them for equality. ``datasets.scanning`` turns folders and lists into records.

This module and the loaders use no TensorFlow, so loading is fast and testable on its own.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from absl import logging
from sklearn.preprocessing import LabelEncoder

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
