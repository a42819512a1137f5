"""Evaluating on part of the test identities (``--testing_size``), for quick runs.

The subset is chosen by identity, never by image, so that every kept query keeps all of its true
matches in the gallery (the group-wise split FlipReID makes with GroupShuffleSplit). Gallery
images of identities that never appear in the query (distractors such as Market-1501's identity
0, or DukeMTMC-reID's gallery-only people) are thinned by the same proportion so that the
difficulty of the subset stays comparable: a gallery-only identity is one group, except that
each distractor image (identity 0) is its own group, since identity 0 is not one person.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from datasets.records import DISTRACTOR_IDENTITY_ID


def _num_selected_identities(testing_size: float, num_query_identities: int) -> int:
    """Turns ``testing_size`` into a number of query identities; validates it."""
    if isinstance(testing_size, bool) or not isinstance(testing_size, numbers.Real):
        raise ValueError(
            f"--testing_size must be a number in (0, 1] (a proportion of the query identities) "
            f"or an integer > 1 (a number of identities); got {testing_size!r}"
        )
    value = float(testing_size)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(
            f"--testing_size must be in (0, 1] or an integer > 1; got {testing_size!r}"
        )
    if value <= 1:
        return max(1, int(round(value * num_query_identities)))
    if not value.is_integer():
        raise ValueError(
            f"--testing_size above 1 is a number of identities and must be an integer; "
            f"got {testing_size!r}"
        )
    if int(value) > num_query_identities:
        raise ValueError(
            f"--testing_size={int(value)} asks for more identities than the query holds "
            f"({num_query_identities})"
        )
    return int(value)


def select_testing_subset(
    query: pd.DataFrame, gallery: pd.DataFrame, testing_size: float, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keeps the query and gallery images of a random subset of the query identities.

    Args:
        query: Query records (columns ``image_file_path``, ``identity_ID``, ``camera_ID``).
        gallery: Gallery records, same columns.
        testing_size: In (0, 1]: the proportion of query identities kept (1 keeps everything);
            an integer > 1: the number of query identities kept.
        seed: Seed of the choice; the same seed gives the same subset.

    Returns:
        (query, gallery): the kept rows in their original order, with a fresh index. The gallery
        keeps every image of the chosen identities, plus the same proportion of the gallery-only
        groups (each gallery-only identity, and each distractor image, is one group).

    Raises:
        ValueError: ``testing_size`` is not a proportion in (0, 1] nor an integer > 1, or asks
            for more identities than the query holds.
    """
    query_identity_IDs = np.unique(query["identity_ID"].to_numpy())
    num_selected = _num_selected_identities(testing_size, len(query_identity_IDs))
    if num_selected == len(query_identity_IDs):
        return query.reset_index(drop=True), gallery.reset_index(drop=True)
    proportion = num_selected / len(query_identity_IDs)
    generator = np.random.default_rng(seed)
    selected_identity_IDs = generator.choice(query_identity_IDs, size=num_selected, replace=False)

    gallery_identity_IDs = gallery["identity_ID"].to_numpy()
    gallery_only = ~np.isin(gallery_identity_IDs, query_identity_IDs)
    # One group per gallery-only identity, one per distractor image; -(row + 1) cannot collide
    # with an identity since identities here are >= 0.
    group_keys = np.where(
        gallery_identity_IDs == DISTRACTOR_IDENTITY_ID,
        -(np.arange(len(gallery)) + 1),
        gallery_identity_IDs,
    )
    gallery_only_groups = np.unique(group_keys[gallery_only])
    num_kept_groups = int(round(proportion * len(gallery_only_groups)))
    kept_groups = generator.choice(gallery_only_groups, size=num_kept_groups, replace=False)

    query_mask = np.isin(query["identity_ID"].to_numpy(), selected_identity_IDs)
    gallery_mask = np.isin(gallery_identity_IDs, selected_identity_IDs) | (
        gallery_only & np.isin(group_keys, kept_groups)
    )
    return (
        query.loc[query_mask].reset_index(drop=True),
        gallery.loc[gallery_mask].reset_index(drop=True),
    )
