"""Tests of the P x K identity samplers, balanced and FlipReID's (pure NumPy, no images)."""

import itertools

import numpy as np
import pytest

from datasets.sampler import (
    FlipReIDSampler,
    IdentityBalancedSampler,
    build_identity_sampler,
    compute_steps_per_epoch,
)


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


def _flipreid_reference_batches(labels, P, K, rng):
    """FlipReID's TrainDataSequence generator written out plainly, with `rng` for np.random.

    Per pass: every identity (in order of first appearance) with at least K images is shuffled
    and cut into len // K sections of K; then, while at least P identities have sections, P of
    them are drawn without replacement and each gives up its last section.
    """
    images_by_identity = {}
    for index, label in enumerate(labels):
        images_by_identity.setdefault(label, []).append(index)
    while True:
        sections_by_identity = {}
        for identity, images in images_by_identity.items():
            if len(images) < K:
                continue
            shuffled = np.array(images)
            rng.shuffle(shuffled)
            section_num = len(shuffled) // K
            sections_by_identity[identity] = list(
                np.split(shuffled[: section_num * K], section_num)
            )
        while len(sections_by_identity) >= P:
            chosen = rng.choice(list(sections_by_identity.keys()), size=P, replace=False)
            batch = []
            for identity in chosen:
                batch += sections_by_identity[identity].pop(-1).tolist()
                if not sections_by_identity[identity]:
                    del sections_by_identity[identity]
            yield batch


def test_flipreid_sampler_draws_flipreids_batches():
    # Identities in shuffled order of first appearance, 1 to 11 images each.
    rng = np.random.default_rng(3)
    labels = rng.permutation(_labels(rng.integers(1, 12, size=25)))
    sampler = FlipReIDSampler(labels, identity_num_per_batch=4, image_num_per_identity=3, seed=7)
    reference = _flipreid_reference_batches(labels, 4, 3, np.random.default_rng(7))
    for batch, expected in zip(itertools.islice(sampler, 300), reference):
        assert batch.dtype == np.int32
        assert batch.tolist() == expected


def test_flipreid_sampler_skips_small_identities_and_uses_each_image_once_a_pass():
    image_counts = [2, 9, 3, 12, 5, 1, 7, 6, 4, 3]
    labels = _labels(image_counts)
    P, K = 3, 4
    sampler = FlipReIDSampler(labels, identity_num_per_batch=P, image_num_per_identity=K)
    assert sampler.num_skipped_identities == 4  # 2, 3, 1 and 3 images: fewer than K
    batches = np.stack(list(itertools.islice(sampler, 200)))
    batch_labels = labels[batches].reshape(len(batches), P, K)
    assert (batch_labels == batch_labels[:, :, :1]).all()  # K contiguous rows per identity
    assert all(len(set(row)) == P for row in batch_labels[:, :, 0])
    assert set(batch_labels.ravel()) == {1, 3, 4, 6, 7, 8}
    # The first pass: identities with 9, 12, 5, 7, 6 and 4 images give 2, 3, 1, 1, 1, 1 groups
    # (9 groups); draws stop when fewer than P identities have groups left, so each image at
    # most once and each identity at most len // K times.
    first_pass = batches[:2].ravel()
    assert len(set(first_pass)) == len(first_pass)
    visits = np.bincount(labels[first_pass[::K]], minlength=len(image_counts))
    assert (visits <= np.array(image_counts) // K).all()
    # Over many passes an identity with more groups is drawn more often (12 images: 3 groups a
    # pass, 4 images: 1), where the balanced sampler visits every identity equally.
    long_visits = np.bincount(batch_labels[:, :, 0].ravel(), minlength=len(image_counts))
    assert long_visits[3] > 1.3 * long_visits[8]


def test_flipreid_sampler_resumes_from_a_batch_index_and_repeats_with_a_seed():
    labels = _labels([5, 8, 4, 9, 6, 4])
    make = lambda seed: FlipReIDSampler(  # noqa: E731
        labels, identity_num_per_batch=2, image_num_per_identity=4, seed=seed
    )
    uninterrupted = list(itertools.islice(make(1), 30))
    resumed = list(itertools.islice(make(1).iterate(start_batch_index=12), 18))
    np.testing.assert_array_equal(np.stack(uninterrupted[12:]), np.stack(resumed))
    assert any(not np.array_equal(a, b) for a, b in zip(uninterrupted, make(2)))


def test_flipreid_sampler_with_too_few_usable_identities_names_the_flags():
    labels = _labels([2, 8, 3, 9])  # two identities with K = 4 images or more
    with pytest.raises(ValueError, match="leaves 2 identities.*--identity_num_per_batch=3"):
        FlipReIDSampler(labels, identity_num_per_batch=3, image_num_per_identity=4)


def test_build_identity_sampler_by_mode():
    labels = _labels([4, 4, 4])
    arguments = dict(identity_num_per_batch=2, image_num_per_identity=2)
    assert isinstance(build_identity_sampler(labels, **arguments), IdentityBalancedSampler)
    flipreid = build_identity_sampler(labels, sampling_mode="flipreid", **arguments)
    assert isinstance(flipreid, FlipReIDSampler)
    with pytest.raises(ValueError, match="--sampling_mode must be one of balanced, flipreid"):
        build_identity_sampler(labels, sampling_mode="random", **arguments)
