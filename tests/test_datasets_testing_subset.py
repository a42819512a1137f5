"""Tests of select_testing_subset (--testing_size)."""

import numpy as np
import pandas as pd
import pytest

from datasets import select_testing_subset


def _records(identity_IDs, camera_IDs, prefix):
    return pd.DataFrame(
        {
            "image_file_path": [f"/{prefix}/{index:05d}.jpg" for index in range(len(identity_IDs))],
            "identity_ID": np.asarray(identity_IDs, dtype=np.int64),
            "camera_ID": np.asarray(camera_IDs, dtype=np.int64),
        }
    )


@pytest.fixture
def query_and_gallery():
    """20 query identities (1..20, two query images each), their gallery images (three each),
    10 gallery-only identities (101..110, two images each) and 30 distractor images (0)."""
    query_identity_IDs = np.repeat(np.arange(1, 21), 2)
    query = _records(query_identity_IDs, np.tile([1, 2], 20), "query")
    gallery_identity_IDs = np.concatenate(
        [np.repeat(np.arange(1, 21), 3), np.repeat(np.arange(101, 111), 2), np.zeros(30, int)]
    )
    gallery = _records(gallery_identity_IDs, np.arange(len(gallery_identity_IDs)) % 4, "gallery")
    return query, gallery


def test_proportion(query_and_gallery):
    query, gallery = query_and_gallery
    subset_query, subset_gallery = select_testing_subset(query, gallery, 0.25, seed=3)
    selected = set(subset_query["identity_ID"].tolist())
    assert len(selected) == 5
    assert len(subset_query) == 10  # every image of a chosen identity is kept
    gallery_ids = subset_gallery["identity_ID"].to_numpy()
    in_query = np.isin(gallery_ids, list(range(1, 21)))
    # All gallery images of the chosen identities, none of the other query identities.
    assert set(gallery_ids[in_query].tolist()) == selected
    assert in_query.sum() == 15
    # A quarter of the 40 gallery-only groups: 10 gallery-only identities, kept whole, and 30
    # distractor images, each its own group.
    gallery_only = gallery_ids[(gallery_ids > 100)]
    num_kept_identities = len(set(gallery_only.tolist()))
    assert len(gallery_only) == 2 * num_kept_identities
    assert (gallery_ids == 0).sum() + num_kept_identities == round(0.25 * 40)
    assert list(subset_query.index) == list(range(len(subset_query)))


def test_absolute_number(query_and_gallery):
    query, gallery = query_and_gallery
    subset_query, _ = select_testing_subset(query, gallery, 7, seed=0)
    assert subset_query["identity_ID"].nunique() == 7
    subset_query, _ = select_testing_subset(query, gallery, 7.0, seed=0)
    assert subset_query["identity_ID"].nunique() == 7


def test_deterministic_per_seed(query_and_gallery):
    query, gallery = query_and_gallery
    first = select_testing_subset(query, gallery, 0.5, seed=11)
    second = select_testing_subset(query, gallery, 0.5, seed=11)
    pd.testing.assert_frame_equal(first[0], second[0])
    pd.testing.assert_frame_equal(first[1], second[1])
    other_seeds = [
        frozenset(select_testing_subset(query, gallery, 0.5, seed=seed)[0]["identity_ID"])
        for seed in range(5)
    ]
    assert len(set(other_seeds)) > 1


def test_one_keeps_everything(query_and_gallery):
    query, gallery = query_and_gallery
    subset_query, subset_gallery = select_testing_subset(query, gallery, 1)
    pd.testing.assert_frame_equal(subset_query, query)
    pd.testing.assert_frame_equal(subset_gallery, gallery)
    subset_query, _ = select_testing_subset(query, gallery, 20)
    pd.testing.assert_frame_equal(subset_query, query)


def test_tiny_proportion_keeps_at_least_one_identity(query_and_gallery):
    query, gallery = query_and_gallery
    subset_query, _ = select_testing_subset(query, gallery, 0.001)
    assert subset_query["identity_ID"].nunique() == 1


@pytest.mark.parametrize("testing_size", [0, -0.5, -3, 2.5, float("nan"), "0.5", None, True])
def test_bad_values_name_the_flag(query_and_gallery, testing_size):
    query, gallery = query_and_gallery
    with pytest.raises(ValueError, match="--testing_size"):
        select_testing_subset(query, gallery, testing_size)


def test_more_identities_than_available(query_and_gallery):
    query, gallery = query_and_gallery
    with pytest.raises(ValueError, match=r"--testing_size=21 .*\(20\)"):
        select_testing_subset(query, gallery, 21)
