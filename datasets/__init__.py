"""Person re-identification datasets: one loader per dataset, all returning ``ReIDDataset``.

``load_dataset(dataset_name, root_folder_path, **options)`` is the entry point; the name picks a
loader from ``DATASET_LOADERS``. Any other name that is an existing folder in the Market-1501
layout is loaded as the user's own dataset. Nothing here imports TensorFlow (the tf.data
pipeline lives in ``datasets.pipeline``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from datasets.alignedreid import is_alignedreid_folder, load_alignedreid_folder
from datasets.combined import (
    COMBINED_IDENTITY_OFFSET,
    CombinedReIDDataset,
    combine_datasets,
    evaluation_test_sets,
    test_set_label,
)
from datasets.cuhk03 import load_cuhk03, normalize_cuhk03_variant, parse_cuhk03_file_name
from datasets.dukemtmc_reid import load_dukemtmc_reid, parse_dukemtmc_reid_file_name
from datasets.market1501 import (
    is_market1501_layout_folder,
    load_market1501,
    load_user_folder,
    parse_market1501_file_name,
)
from datasets.msmt17 import load_msmt17, parse_msmt17_file_name, parse_msmt17_list_line
from datasets.records import RECORD_COLUMNS, ReIDDataset
from datasets.synthetic import generate_synthetic_dataset, load_synthetic
from datasets.testing_subset import select_testing_subset


def _load_cuhk03_variant(variant: str) -> Callable[..., ReIDDataset]:
    def load(root_folder_path: str, *, verify_images: bool = False) -> ReIDDataset:
        return load_cuhk03(root_folder_path, cuhk03_variant=variant, verify_images=verify_images)

    return load


# Loaders of the datasets that can be parts of "Combined": name -> f(root, *, verify_images).
_SINGLE_DATASET_LOADERS: dict[str, Callable[..., ReIDDataset]] = {
    "Market1501": load_market1501,
    "DukeMTMC_reID": load_dukemtmc_reid,
    "MSMT17": load_msmt17,
    "CUHK03_detected": _load_cuhk03_variant("detected"),
    "CUHK03_labeled": _load_cuhk03_variant("labeled"),
}
DATASET_NAMES = (
    "Market1501",
    "DukeMTMC_reID",
    "MSMT17",
    "CUHK03",
    "CUHK03_detected",
    "CUHK03_labeled",
    "Combined",
    "Synthetic",
)


def _load_single(
    dataset_name: str,
    root_folder_path: str,
    *,
    cuhk03_variant: str,
    synthetic_options: dict | None,
    verify_images: bool,
) -> ReIDDataset:
    if dataset_name == "CUHK03":
        dataset_name = f"CUHK03_{normalize_cuhk03_variant(cuhk03_variant)}"
    if dataset_name == "Synthetic":
        return load_synthetic(
            root_folder_path, synthetic_options=synthetic_options, verify_images=verify_images
        )
    if dataset_name in _SINGLE_DATASET_LOADERS:
        return _SINGLE_DATASET_LOADERS[dataset_name](root_folder_path, verify_images=verify_images)
    return _load_folder(dataset_name, trainset_part="trainval", verify_images=verify_images)


def _is_dataset_folder(dataset_name: str) -> bool:
    """A folder in AlignedReID's format or in the Market-1501 layout."""
    folder = str(dataset_name)
    return os.path.isdir(folder) and (
        is_alignedreid_folder(folder) or is_market1501_layout_folder(folder)
    )


def _load_folder(dataset_name: str, *, trainset_part: str, verify_images: bool) -> ReIDDataset:
    folder = str(dataset_name)
    if is_alignedreid_folder(folder):
        return load_alignedreid_folder(
            folder, trainset_part=trainset_part, verify_images=verify_images
        )
    if trainset_part != "trainval":
        raise ValueError(
            f"--trainset_part {trainset_part} needs a folder in AlignedReID's format (images/ "
            f"and partitions.pkl, which hold its train/val split); {folder!r} has none: use "
            "--trainset_part trainval."
        )
    return load_user_folder(folder, verify_images=verify_images)


def _load_combined(
    root_folder_path: str,
    combined_dataset_names: Sequence[str] | str,
    evaluation_dataset_name: str | None,
    trainset_part: str,
    single_options: dict,
) -> CombinedReIDDataset:
    """Loads each named dataset once and combines them (``load_dataset``'s "Combined").

    Args:
        root_folder_path: as ``load_dataset``.
        combined_dataset_names: names or dataset folders, a sequence or one comma-separated str.
        evaluation_dataset_name: the dataset giving query and gallery; None takes the first of
            ``combined_dataset_names``.
        trainset_part: must be "trainval" (each dataset's whole training set).
        single_options: ``_load_single``'s keyword arguments.

    Raises:
        ValueError: another trainset_part, or a name that cannot be combined (the message lists
            the valid ones).
    """
    if isinstance(combined_dataset_names, str):
        combined_dataset_names = [
            name.strip() for name in combined_dataset_names.split(",") if name.strip()
        ]
    evaluation_dataset_name = evaluation_dataset_name or (
        combined_dataset_names[0] if combined_dataset_names else None
    )
    if trainset_part != "trainval":
        raise ValueError(
            f"--trainset_part {trainset_part}: Combined trains on the trainval part of each "
            "dataset (as AlignedReID's combined set); use --trainset_part trainval."
        )
    for name in [*combined_dataset_names, evaluation_dataset_name]:
        if (name not in DATASET_NAMES or name == "Combined") and not _is_dataset_folder(name):
            valid = [valid_name for valid_name in DATASET_NAMES if valid_name != "Combined"]
            raise ValueError(
                f"Combined: {name!r} cannot be combined; valid names: {valid}, or the path "
                "of a dataset folder (Market1501 layout, or AlignedReID's images/ and "
                "partitions.pkl)"
            )
    loaded = {
        name: _load_single(name, root_folder_path, **single_options)
        for name in dict.fromkeys([*combined_dataset_names, evaluation_dataset_name])
    }
    return combine_datasets(
        [loaded[name] for name in combined_dataset_names],
        loaded[evaluation_dataset_name],
        [loaded[name] for name in combined_dataset_names],
    )


def load_dataset(
    dataset_name: str,
    root_folder_path: str,
    *,
    cuhk03_variant: str = "detected",
    combined_dataset_names: Sequence[str] = ("Market1501", "DukeMTMC_reID"),
    evaluation_dataset_name: str | None = None,
    synthetic_options: dict | None = None,
    verify_images: bool = False,
    trainset_part: str = "trainval",
) -> ReIDDataset:
    """Loads a dataset by name.

    Args:
        dataset_name: One of ``DATASET_NAMES``, or the path of an existing folder holding
            ``bounding_box_train``, ``query`` and ``bounding_box_test`` with Market-1501 file names
            (a user's own data; ``root_folder_path`` is then ignored), or of a folder holding
            ``images/`` and ``partitions.pkl`` in AlignedReID's format.
        root_folder_path: The folder that contains the dataset folder (e.g. the folder holding
            ``Market-1501-v15.09.15``), or the dataset folder itself. For "Synthetic", the cache
            folder the generated dataset is written to.
        cuhk03_variant: For "CUHK03": "detected" or "labeled" (or "CUHK03_detected" /
            "CUHK03_labeled").
        combined_dataset_names: For "Combined": the datasets whose training sets are joined
            (any names of ``DATASET_NAMES`` but "Combined", or dataset folders in the Market-1501
            layout or AlignedReID's format). Each one's test set is evaluated too (the result's
            ``test_sets``).
        evaluation_dataset_name: For "Combined": the dataset giving query and gallery (the first
            test set); defaults to the first of ``combined_dataset_names``.
        synthetic_options: For "Synthetic": keyword arguments of
            ``datasets.synthetic.generate_synthetic_dataset`` (sizes, difficulty,
            twin_fraction, seed).
        verify_images: Also decode every image with OpenCV and skip undecodable ones (minutes
            on a real dataset). Without it only the cheap check of ``datasets.image_files`` runs
            (exists, not empty, image signature, end-of-image marker); the pipelines skip and
            count what still fails to decode.
        trainset_part: For a folder in AlignedReID's format: "trainval" (every training
            identity) or "train" (its partition without the validation identities).

    Returns:
        The ReIDDataset (a CombinedReIDDataset for "Combined").

    Raises:
        ValueError: Unknown dataset name (the message lists the valid ones), bad option, or an
            empty split.
        FileNotFoundError: The dataset folder is not where it was looked for.
    """
    single_options = {
        "cuhk03_variant": cuhk03_variant,
        "synthetic_options": synthetic_options,
        "verify_images": verify_images,
    }
    if dataset_name == "Combined":
        return _load_combined(
            root_folder_path,
            combined_dataset_names,
            evaluation_dataset_name,
            trainset_part,
            single_options,
        )
    if dataset_name in DATASET_NAMES:
        if trainset_part != "trainval":
            raise ValueError(
                f"--trainset_part {trainset_part} needs a folder in AlignedReID's format (images/ "
                f"and partitions.pkl, which hold its train/val split); {dataset_name} is loaded "
                "from its own layout: use --trainset_part trainval."
            )
        return _load_single(dataset_name, root_folder_path, **single_options)
    if _is_dataset_folder(dataset_name):
        return _load_folder(dataset_name, trainset_part=trainset_part, verify_images=verify_images)
    raise ValueError(
        f"Unknown dataset_name {dataset_name!r}; valid names: {list(DATASET_NAMES)}, or the path "
        "of a folder holding bounding_box_train, query and bounding_box_test in Market-1501 naming "
        "(or images/ and partitions.pkl in AlignedReID's format)"
    )


__all__ = [
    "COMBINED_IDENTITY_OFFSET",
    "CombinedReIDDataset",
    "DATASET_NAMES",
    "RECORD_COLUMNS",
    "ReIDDataset",
    "combine_datasets",
    "evaluation_test_sets",
    "generate_synthetic_dataset",
    "load_dataset",
    "parse_cuhk03_file_name",
    "parse_dukemtmc_reid_file_name",
    "parse_market1501_file_name",
    "parse_msmt17_file_name",
    "parse_msmt17_list_line",
    "select_testing_subset",
    "test_set_label",
]
