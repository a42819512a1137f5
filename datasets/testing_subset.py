"""Evaluating on part of the test identities (``--testing_size``), exactly as FlipReID picks it.

FlipReID joins the query and gallery records (query first, each in its loading order), takes the
identity of every record as its group, and keeps the "test" side of scikit-learn's
``GroupShuffleSplit(n_splits=1, test_size=testing_size, random_state=0)``. So a subset keeps
whole identities: every kept query keeps all of its true matches in the gallery. Gallery-only
identities are groups like any other, and all distractor images (Market-1501's identity 0) form
one group, since they share one identity number. A score on a subset here is one on the same
images as FlipReID's.

The split is transcribed here rather than called, so that the rule is visible and fixed: the
sorted distinct identities are permuted by ``numpy.random.RandomState(seed).permutation``, and
the first ``n_test`` of them are kept, with ``n_test = ceil(testing_size * n)`` for a proportion
and ``int(testing_size)`` above 1 (FlipReID's ``int()``: 2.7 means 2 identities).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd


def count_kept_identities(testing_size: float, num_identities: int) -> int:
    """How many identity groups a ``--testing_size`` keeps, as FlipReID counts them.

    Args:
        testing_size: In (0, 1]: a proportion of the identities; above 1: a number of
            identities, truncated by ``int()`` as FlipReID does.
        num_identities: Distinct identities over the query and the gallery (n, >= 1).

    Returns:
        int in [1, n]: ``ceil(testing_size * n)`` for a proportion (scikit-learn's rounding of
        ``test_size``), ``int(testing_size)`` above 1.

    Raises:
        ValueError: ``testing_size`` is not a positive number, or asks for more identities than
            the test set holds.
    """
    if isinstance(testing_size, bool) or not isinstance(testing_size, numbers.Real):
        raise ValueError(
            f"--testing_size must be a number: a proportion in (0, 1] of the test identities or "
            f"a number of identities above 1; got {testing_size!r}"
        )
    value = float(testing_size)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(
            f"--testing_size must be a proportion in (0, 1] or a number of identities above 1; "
            f"got {testing_size!r}"
        )
    if value <= 1:
        return min(num_identities, math.ceil(value * num_identities))
    num_kept = int(value)
    if num_kept > num_identities:
        raise ValueError(
            f"--testing_size {testing_size!r} asks for {num_kept} identities, but the query and "
            f"gallery hold {num_identities} (distractors count as one); pass at most "
            f"{num_identities}, or a proportion in (0, 1]"
        )
    return num_kept


def select_testing_subset(
    query: pd.DataFrame, gallery: pd.DataFrame, testing_size: float, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keeps the query and gallery images of FlipReID's subset of the test identities.

    Args:
        query: Query records (columns ``image_file_path``, ``identity_ID``, ``camera_ID``), in
            loading order (sorted file names, as FlipReID's loaders give them).
        gallery: Gallery records, same columns and order.
        testing_size: In (0, 1]: the proportion of the identities kept (1 keeps everything);
            above 1: the number of identities kept (``int()`` of it, as in FlipReID). The
            identities are those of the query and the gallery together, distractors one of them.
        seed: ``random_state`` of the split; FlipReID always uses 0.

    Returns:
        (query, gallery): the kept rows in their original order, with a fresh index. Where the
        count covers every identity (1, or a proportion whose ceiling does; FlipReID's
        scikit-learn call refuses the latter), both come back whole.

    Raises:
        ValueError: ``testing_size`` is not a positive number, or above 1 asks for more
            identities than there are.
    """
    identity_IDs = np.concatenate(
        [query["identity_ID"].to_numpy(), gallery["identity_ID"].to_numpy()]
    )
    groups, group_of_record = np.unique(identity_IDs, return_inverse=True)
    num_kept = count_kept_identities(testing_size, len(groups))
    if num_kept == len(groups):
        return query.reset_index(drop=True), gallery.reset_index(drop=True)
    permutation = np.random.RandomState(seed).permutation(len(groups))
    kept_records = np.isin(group_of_record, permutation[:num_kept])
    num_query = len(query)
    return (
        query.loc[kept_records[:num_query]].reset_index(drop=True),
        gallery.loc[kept_records[num_query:]].reset_index(drop=True),
    )
