"""Training on several datasets together ("Combined"), testing on each of them.

The training identities of each dataset stay apart: the identity of an image from the i-th
dataset (in the order given) becomes ``i * COMBINED_IDENTITY_OFFSET + identity_ID``, so that
identity 0001 of Market-1501 and identity 0001 of DukeMTMC-reID are two people. Query and
gallery come unchanged from the evaluation dataset; the test sets of the other datasets travel
with it (``test_sets``), each evaluated and reported on its own, as AlignedReID tests its
combined training on Market-1501, CUHK03 and DukeMTMC-reID.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from absl import logging

from datasets import records

# Larger than any identity of the supported datasets (DukeMTMC-reID's reach 7,140).
COMBINED_IDENTITY_OFFSET = 100_000


@dataclasses.dataclass
class CombinedReIDDataset(records.ReIDDataset):
    """A Combined dataset: query and gallery are the evaluation dataset's.

    Attributes:
        test_sets: dict label -> (query, gallery) records of every dataset to test on, the
            evaluation dataset first; labels are the datasets' names (a folder's base name).
    """

    test_sets: dict = dataclasses.field(default_factory=dict)


def test_set_label(dataset_name: str) -> str:
    """The label of a dataset's test set in metric names: its name, or a folder's base name."""
    return os.path.basename(os.path.normpath(str(dataset_name)))


def evaluation_test_sets(dataset: records.ReIDDataset) -> dict:
    """Every test set of a dataset, the one of its own query and gallery first.

    Args:
        dataset: a ReIDDataset (one test set) or a CombinedReIDDataset (one per dataset).

    Returns:
        dict label -> (query DataFrame, gallery DataFrame).
    """
    test_sets = getattr(dataset, "test_sets", None)
    if test_sets:
        return dict(test_sets)
    return {test_set_label(dataset.name): (dataset.query, dataset.gallery)}


def _joined_training_records(training_datasets):
    """The train splits joined, each dataset's identities offset by its place in the list.

    Args:
        training_datasets: non-empty sequence of ReIDDataset.

    Returns:
        (train DataFrame sorted by image_file_path, list of one message per dataset with its
        counts and offset).

    Raises:
        ValueError: an identity outside [0, COMBINED_IDENTITY_OFFSET).
    """
    parts = []
    messages = []
    for index, dataset in enumerate(training_datasets):
        identity_IDs = dataset.train["identity_ID"].to_numpy()
        if identity_IDs.min() < 0 or identity_IDs.max() >= COMBINED_IDENTITY_OFFSET:
            raise ValueError(
                f"Combined: {dataset.name} has training identities outside "
                f"[0, {COMBINED_IDENTITY_OFFSET}); cannot keep them apart"
            )
        part = dataset.train.copy()
        part["identity_ID"] = identity_IDs.astype(np.int64) + index * COMBINED_IDENTITY_OFFSET
        parts.append(part)
        messages.append(
            f"Combined train: {dataset.name} gives {len(part):,} images of "
            f"{dataset.num_train_identities:,} identities (identity_ID offset "
            f"{index * COMBINED_IDENTITY_OFFSET:,})"
        )
    train = (
        pd.concat(parts, ignore_index=True)
        .sort_values("image_file_path", kind="stable")
        .reset_index(drop=True)
    )
    return train, messages


def _prefixed_part_messages(datasets):
    """Each dataset's own messages prefixed with its name; a repeated name counts once."""
    messages = []
    seen_names = set()
    for dataset in datasets:
        if dataset.name in seen_names:
            continue
        seen_names.add(dataset.name)
        messages.extend(f"[{dataset.name}] {message}" for message in dataset.messages)
    return messages


def _labelled_test_sets(evaluation_dataset, tested_datasets, evaluation_test_set):
    """dict label -> (query, gallery): the evaluation dataset's, then each tested dataset's.

    Args:
        evaluation_dataset: ReIDDataset whose test set comes first.
        tested_datasets: further ReIDDatasets; the same object twice counts once, and a label
            already taken gets the suffix ``_<position>``.
        evaluation_test_set: (query, gallery) DataFrames to use for the evaluation dataset.

    Returns:
        dict label -> (query DataFrame, gallery DataFrame); other datasets' frames are copies.
    """
    test_sets, seen = {}, set()
    for dataset in [evaluation_dataset, *tested_datasets]:
        if id(dataset) in seen:
            continue
        seen.add(id(dataset))
        label = test_set_label(dataset.name)
        if label in test_sets:
            label = f"{label}_{len(test_sets) + 1}"
        query, gallery = (
            evaluation_test_set
            if dataset is evaluation_dataset
            else (dataset.query.copy(), dataset.gallery.copy())
        )
        test_sets[label] = (query, gallery)
    return test_sets


def combine_datasets(
    training_datasets: Sequence[records.ReIDDataset],
    evaluation_dataset: records.ReIDDataset,
    tested_datasets: Sequence[records.ReIDDataset] = (),
) -> CombinedReIDDataset:
    """Joins the training sets of several datasets and takes query/gallery from another one.

    Args:
        training_datasets: Datasets whose train splits are joined, in order; the i-th one's
            identities are offset by ``i * COMBINED_IDENTITY_OFFSET``.
        evaluation_dataset: Dataset whose query and gallery are used unchanged.
        tested_datasets: Further datasets whose test sets are evaluated too (the evaluation
            dataset is always the first test set; a repeated one counts once).

    Returns:
        The CombinedReIDDataset named "Combined"; its messages list each part's counts and
        offset, then the parts' own messages prefixed with their name; its test_sets hold the
        evaluation dataset's query and gallery, then those of tested_datasets.

    Raises:
        ValueError: No training dataset, or an identity outside [0, COMBINED_IDENTITY_OFFSET).
    """
    if not training_datasets:
        raise ValueError("Combined needs at least one dataset in combined_dataset_names")
    train, messages = _joined_training_records(training_datasets)
    messages.append(
        f"Combined: {len(train):,} training images of {train['identity_ID'].nunique():,} "
        f"identities; query and gallery from {evaluation_dataset.name}"
    )
    for message in messages:
        logging.info(message)
    messages.extend(_prefixed_part_messages([*training_datasets, evaluation_dataset]))
    combined = records.build_reid_dataset(
        "Combined",
        train,
        evaluation_dataset.query.copy(),
        evaluation_dataset.gallery.copy(),
        messages,
        dataset_dir="(combined)",
    )
    fields = {field.name: getattr(combined, field.name) for field in dataclasses.fields(combined)}
    test_sets = _labelled_test_sets(
        evaluation_dataset, tested_datasets, (fields["query"], fields["gallery"])
    )
    return CombinedReIDDataset(**fields, test_sets=test_sets)
