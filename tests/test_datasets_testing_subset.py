"""Tests of select_testing_subset (--testing_size): FlipReID's GroupShuffleSplit subset.

The reference is FlipReID's own procedure written out in the test: its Market-1501 loader
(sorted *.jpg files, identity from the file name, junk -1 skipped), then query and gallery
joined and split by scikit-learn's GroupShuffleSplit with random_state 0, the "test" side kept.
"""

import glob
import os

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GroupShuffleSplit

from datasets import load_dataset, select_testing_subset
from datasets.testing_subset import count_kept_identities
from tests.dataset_fixtures import write_market1501_layout


def _market_file_names():
    """24 query identities (2 query, 3 gallery images each), 6 gallery-only identities,
    5 distractor images (0000) and 2 junk images (-1), in Market-1501 naming."""
    rng = np.random.default_rng(0)
    query, gallery = [], []
    for identity in range(1, 25):
        for index in range(2):
            query.append(f"{identity:04d}_c{index + 1}s1_{rng.integers(1e6):06d}_00.jpg")
        for index in range(3):
            gallery.append(f"{identity:04d}_c{index + 3}s2_{rng.integers(1e6):06d}_01.jpg")
    for identity in range(101, 107):
        gallery += [
            f"{identity:04d}_c{camera}s3_{rng.integers(1e6):06d}_02.jpg" for camera in (1, 2)
        ]
    gallery += [f"0000_c{index % 6 + 1}s4_{index:06d}_03.jpg" for index in range(5)]
    gallery += ["-1_c1s5_000001_04.jpg", "-1_c2s5_000002_04.jpg"]
    return ["0001_c1s1_999999_01.jpg", "0002_c2s1_999999_01.jpg"], query, gallery


@pytest.fixture(scope="module")
def market_folder(tmp_path_factory):
    folder_path = str(tmp_path_factory.mktemp("market") / "Market-1501-v15.09.15")
    train, query, gallery = _market_file_names()
    return write_market1501_layout(folder_path, train, query, gallery)


def _flipreid_records(folder_path, image_folder_name):
    """FlipReID's datasets/market1501.py _load_accumulated_info, without its size asserts."""
    records = []
    for image_file_path in sorted(glob.glob(os.path.join(folder_path, image_folder_name, "*.jpg"))):
        file_name = os.path.basename(image_file_path)
        identity_ID = int(file_name.split("_")[0])
        if identity_ID == -1:
            continue
        camera_ID = int(file_name.split("_")[1][1])
        records.append(
            dict(image_file_path=image_file_path, identity_ID=identity_ID, camera_ID=camera_ID)
        )
    return pd.DataFrame(records)


def _flipreid_subset(folder_path, testing_size):
    """FlipReID's solution.py: query + gallery joined, GroupShuffleSplit's test side kept."""
    query = _flipreid_records(folder_path, "query")
    gallery = _flipreid_records(folder_path, "bounding_box_test")
    testing_size = int(testing_size) if testing_size > 1 else testing_size
    joined = pd.concat([query, gallery], ignore_index=True)
    groups = joined["identity_ID"].values
    splitter = GroupShuffleSplit(n_splits=1, test_size=testing_size, random_state=0)
    _, kept = next(splitter.split(np.arange(len(groups)), groups=groups))
    query_mask = kept < len(query)
    return (
        joined.iloc[kept[query_mask]]["image_file_path"].tolist(),
        joined.iloc[kept[~query_mask]]["image_file_path"].tolist(),
    )


@pytest.mark.parametrize("testing_size", [0.5, 0.25, 0.1, 0.9, 7, 7.9, 2.5, 30])
def test_subset_is_flipreids_on_a_market_layout_folder(market_folder, testing_size):
    dataset = load_dataset(market_folder, root_folder_path="")
    query, gallery = select_testing_subset(dataset.query, dataset.gallery, testing_size)
    expected_query, expected_gallery = _flipreid_subset(market_folder, testing_size)
    assert query["image_file_path"].tolist() == expected_query
    assert gallery["image_file_path"].tolist() == expected_gallery
    # Whole identities: every kept query identity keeps all its gallery images.
    kept = set(query["identity_ID"]) | set(gallery["identity_ID"])
    all_gallery = dataset.gallery[dataset.gallery["identity_ID"].isin(kept)]
    assert len(gallery) == len(all_gallery)


def test_distractors_are_one_group_and_whole_numbers_count_identities(market_folder):
    dataset = load_dataset(market_folder, root_folder_path="")
    # 24 query identities, 6 gallery-only ones and the distractors as one: 31 groups.
    assert count_kept_identities(0.5, 31) == 16  # ceil, as scikit-learn rounds test_size
    assert count_kept_identities(7.9, 31) == 7  # int(), as FlipReID truncates
    query, gallery = select_testing_subset(dataset.query, dataset.gallery, 7)
    groups = set(query["identity_ID"]) | set(gallery["identity_ID"])
    assert len(groups) == 7
    distractors = gallery["identity_ID"] == 0
    assert distractors.sum() in (0, 5)  # all five distractor images or none


def test_one_and_a_full_count_keep_everything(market_folder):
    dataset = load_dataset(market_folder, root_folder_path="")
    for testing_size in (1, 1.0, 31, 0.999):
        query, gallery = select_testing_subset(dataset.query, dataset.gallery, testing_size)
        assert query["image_file_path"].tolist() == dataset.query["image_file_path"].tolist()
        assert gallery["image_file_path"].tolist() == dataset.gallery["image_file_path"].tolist()


@pytest.mark.parametrize("testing_size", [0, -0.5, float("nan"), "half", True])
def test_bad_testing_size_is_refused_naming_the_flag(market_folder, testing_size):
    dataset = load_dataset(market_folder, root_folder_path="")
    with pytest.raises(ValueError, match="--testing_size"):
        select_testing_subset(dataset.query, dataset.gallery, testing_size)


def test_more_identities_than_the_test_set_holds_is_refused(market_folder):
    dataset = load_dataset(market_folder, root_folder_path="")
    with pytest.raises(ValueError, match="asks for 32 identities.*hold 31"):
        select_testing_subset(dataset.query, dataset.gallery, 32)
