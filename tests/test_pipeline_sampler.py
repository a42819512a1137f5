"""Tests of the identity-balanced P x K sampler (pure NumPy, no images)."""

import itertools

import numpy as np
import pytest

from datasets.sampler import IdentityBalancedSampler, compute_steps_per_epoch


def _labels(image_counts):
    return np.concatenate([np.full(count, identity) for identity, count in enumerate(image_counts)])


def test_batches_hold_P_distinct_identities_with_K_contiguous_rows():
    labels = _labels([5, 3, 8, 2, 4, 6, 1])
    sampler = IdentityBalancedSampler(labels, identity_num_per_batch=3, image_num_per_identity=2)
    for batch in itertools.islice(sampler, 50):
        assert batch.dtype == np.int32 and batch.shape == (6,)
        batch_labels = labels[batch].reshape(3, 2)
        assert (batch_labels == batch_labels[:, :1]).all()  # one identity per K rows
        assert len(set(batch_labels[:, 0])) == 3  # P distinct identities


def test_identity_with_fewer_than_K_images_is_sampled_with_replacement():
    labels = _labels([1, 2, 6, 6])  # identity 0 has 1 image, identity 1 has 2; K = 4
    sampler = IdentityBalancedSampler(labels, identity_num_per_batch=4, image_num_per_identity=4)
    batch = next(iter(sampler))
    rows = batch.reshape(4, 4)
    by_identity = {int(labels[row[0]]): row for row in rows}
    assert sorted(by_identity) == [0, 1, 2, 3]  # nobody dropped
    assert (by_identity[0] == 0).all()  # the single image, four times
    assert set(by_identity[1]) == {1, 2}  # both images used, then repeats
    assert len(set(by_identity[2])) == 4  # enough images: no repeats within the batch


def test_identities_are_visited_equally_often_and_all_images_are_used():
    image_counts = [2, 9, 3, 12, 5, 4, 7, 1, 6, 10]
    labels = _labels(image_counts)
    P, K = 4, 3
    sampler = IdentityBalancedSampler(labels, identity_num_per_batch=P, image_num_per_identity=K)
    num_batches = 10 * len(image_counts)  # 40 visits per identity
    batches = list(itertools.islice(sampler, num_batches))
    visits = np.bincount(labels[np.stack(batches)[:, ::K]].ravel(), minlength=len(image_counts))
    assert visits.max() - visits.min() <= 2
    assert np.array_equal(np.unique(np.concatenate(batches)), np.arange(len(labels)))

    # One epoch of compute_steps_per_epoch batches visits every identity.
    steps = compute_steps_per_epoch(len(labels), P, K)
    epoch = np.concatenate(list(itertools.islice(sampler, steps)))
    assert set(labels[epoch]) == set(range(len(image_counts)))


def test_images_of_an_identity_are_used_before_repeating():
    labels = _labels([6, 6])
    sampler = IdentityBalancedSampler(labels, identity_num_per_batch=2, image_num_per_identity=3)
    first_two = np.concatenate(list(itertools.islice(sampler, 2)))
    assert sorted(first_two) == list(range(12))


def test_same_seed_same_batches_and_new_iterator_restarts():
    labels = _labels([4, 5, 6, 3, 2])
    make = lambda seed: IdentityBalancedSampler(
        labels, identity_num_per_batch=2, image_num_per_identity=2, seed=seed
    )
    first = list(itertools.islice(make(7), 20))
    assert all(np.array_equal(a, b) for a, b in zip(first, itertools.islice(make(7), 20)))
    sampler = make(7)
    assert all(np.array_equal(a, b) for a, b in zip(first, itertools.islice(sampler, 20)))
    assert all(np.array_equal(a, b) for a, b in zip(first, itertools.islice(sampler, 20)))
    other = list(itertools.islice(make(8), 20))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_replica_slices_keep_identities_whole():
    # MirroredStrategy gives each replica a contiguous slice; K divides the slice length.
    labels = _labels([3, 4, 5, 6, 7, 8])
    P, K, num_replicas = 4, 2, 2
    sampler = IdentityBalancedSampler(labels, identity_num_per_batch=P, image_num_per_identity=K)
    for batch in itertools.islice(sampler, 20):
        slices = labels[batch].reshape(num_replicas, -1)
        for replica_labels in slices:
            counts = np.unique(replica_labels, return_counts=True)[1]
            assert (counts == K).all()
        assert not set(slices[0]) & set(slices[1])


def test_fewer_identities_than_P_names_the_flag():
    with pytest.raises(ValueError, match="--identity_num_per_batch"):
        IdentityBalancedSampler(_labels([3, 3]), identity_num_per_batch=3, image_num_per_identity=2)


@pytest.mark.parametrize(
    "num_images, P, K, expected",
    [(12936, 16, 4, 203), (64, 16, 4, 1), (65, 16, 4, 2), (5, 2, 4, 1)],
)
def test_compute_steps_per_epoch(num_images, P, K, expected):
    assert compute_steps_per_epoch(num_images, P, K) == expected


def test_compute_steps_per_epoch_rejects_empty():
    with pytest.raises(ValueError, match="num_images"):
        compute_steps_per_epoch(0, 16, 4)


def test_iterate_from_a_batch_index_continues_the_uninterrupted_sequence():
    labels = _labels([5, 3, 8, 2, 4, 6, 1])
    sampler = IdentityBalancedSampler(
        labels, identity_num_per_batch=3, image_num_per_identity=2, seed=5
    )
    uninterrupted = list(itertools.islice(sampler, 30))
    resumed = list(itertools.islice(sampler.iterate(start_batch_index=17), 13))
    assert all(np.array_equal(a, b) for a, b in zip(uninterrupted[17:], resumed, strict=True))


def test_saved_state_survives_json_and_restores_the_sequence():
    import json

    labels = _labels([5, 3, 8, 2, 4, 6, 1])
    make = lambda: IdentityBalancedSampler(
        labels, identity_num_per_batch=3, image_num_per_identity=2, seed=11
    )
    uninterrupted = list(itertools.islice(make(), 25))
    state = json.loads(json.dumps(make().state_at(9)))
    assert state["batch_index"] == 9
    # A fresh sampler (a new process after a crash) continues from the saved state.
    resumed = list(itertools.islice(make().iterate(state=state), 16))
    assert all(np.array_equal(a, b) for a, b in zip(uninterrupted[9:], resumed, strict=True))


def test_saved_state_of_another_training_set_is_refused():
    state = IdentityBalancedSampler(
        _labels([4, 4, 4]), identity_num_per_batch=2, image_num_per_identity=2
    ).state_at(3)
    other = IdentityBalancedSampler(
        _labels([4, 4, 5]), identity_num_per_batch=2, image_num_per_identity=2
    )
    with pytest.raises(ValueError, match="same dataset flags"):
        next(other.iterate(state=state))


def test_training_pipeline_started_at_a_batch_index_matches_the_uninterrupted_stream(tmp_path):
    # The images and their augmentation depend only on (seed, position in the stream), so a
    # resumed run sees exactly the batches the uninterrupted one would have seen.
    from datasets.pipeline import build_training_dataset
    from tests.dataset_fixtures import write_image

    file_paths, labels = [], []
    for index in range(12):
        file_path = str(tmp_path / f"{index:02d}.png")
        write_image(file_path, seed=index, height=16, width=8)
        file_paths.append(file_path)
        labels.append(index // 3)
    make = lambda initial_batch_index: build_training_dataset(
        file_paths,
        labels,
        identity_num_per_batch=2,
        image_num_per_identity=2,
        image_height=16,
        image_width=8,
        seed=3,
        deterministic=True,
        initial_batch_index=initial_batch_index,
    )
    uninterrupted = [(x.numpy(), y.numpy()) for x, y in make(0).take(6)]
    resumed = [(x.numpy(), y.numpy()) for x, y in make(4).take(2)]
    for (images, batch_labels), (expected_images, expected_labels) in zip(
        resumed, uninterrupted[4:], strict=True
    ):
        np.testing.assert_array_equal(batch_labels, expected_labels)
        np.testing.assert_array_equal(images, expected_images)
    # Sanity: the augmentation is on and position-dependent, so a wrong start would differ.
    assert not np.array_equal(uninterrupted[0][0], uninterrupted[4][0])
