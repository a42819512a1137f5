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
from datasets.combined import COMBINED_IDENTITY_OFFSET, combine_datasets
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
    return _SINGLE_DATASET_LOADERS[dataset_name](root_folder_path, verify_images=verify_images)


def load_dataset(
    dataset_name: str,
    root_folder_path: str,
    *,
    cuhk03_variant: str = "detected",
    combined_dataset_names: Sequence[str] = ("Market1501", "DukeMTMC_reID"),
    evaluation_dataset_name: str | None = None,
    synthetic_options: dict | None = None,
    verify_images: bool = False,
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
            (any names of ``DATASET_NAMES`` but "Combined").
        evaluation_dataset_name: For "Combined": the dataset giving query and gallery; defaults to
            the first of ``combined_dataset_names``.
        synthetic_options: For "Synthetic": keyword arguments of
            ``datasets.synthetic.generate_synthetic_dataset`` (sizes, difficulty,
            twin_fraction, seed).
        verify_images: Also decode every image with OpenCV and skip undecodable ones (minutes
            on a real dataset). Without it only the cheap check of ``datasets.image_files`` runs
            (exists, not empty, image signature, end-of-image marker); the pipelines skip and
            count what still fails to decode.

    Returns:
        The ReIDDataset.

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
        if isinstance(combined_dataset_names, str):
            combined_dataset_names = [
                name.strip() for name in combined_dataset_names.split(",") if name.strip()
            ]
        evaluation_dataset_name = evaluation_dataset_name or (
            combined_dataset_names[0] if combined_dataset_names else None
        )
        for name in [*combined_dataset_names, evaluation_dataset_name]:
            if name not in DATASET_NAMES or name == "Combined":
                valid = [valid_name for valid_name in DATASET_NAMES if valid_name != "Combined"]
                raise ValueError(f"Combined: {name!r} cannot be combined; valid names: {valid}")
        loaded = {
            name: _load_single(name, root_folder_path, **single_options)
            for name in dict.fromkeys([*combined_dataset_names, evaluation_dataset_name])
        }
        return combine_datasets(
            [loaded[name] for name in combined_dataset_names], loaded[evaluation_dataset_name]
        )
    if dataset_name in DATASET_NAMES:
        return _load_single(dataset_name, root_folder_path, **single_options)
    if os.path.isdir(str(dataset_name)) and is_alignedreid_folder(str(dataset_name)):
        return load_alignedreid_folder(str(dataset_name), verify_images=verify_images)
    if os.path.isdir(str(dataset_name)) and is_market1501_layout_folder(str(dataset_name)):
        return load_user_folder(str(dataset_name), verify_images=verify_images)
    raise ValueError(
        f"Unknown dataset_name {dataset_name!r}; valid names: {list(DATASET_NAMES)}, or the path "
        "of a folder holding bounding_box_train, query and bounding_box_test in Market-1501 naming "
        "(or images/ and partitions.pkl in AlignedReID's format)"
    )


__all__ = [
    "COMBINED_IDENTITY_OFFSET",
    "DATASET_NAMES",
    "RECORD_COLUMNS",
    "ReIDDataset",
    "combine_datasets",
    "generate_synthetic_dataset",
    "load_dataset",
    "parse_cuhk03_file_name",
    "parse_dukemtmc_reid_file_name",
    "parse_market1501_file_name",
    "parse_msmt17_file_name",
    "parse_msmt17_list_line",
    "select_testing_subset",
]
