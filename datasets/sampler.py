"""Identity-balanced P x K batch sampling for batch-hard triplet training.

Pure NumPy, no TensorFlow: `datasets.pipeline` turns the index batches into images.
"""

import math
from collections.abc import Iterator, Sequence

import numpy as np


def compute_steps_per_epoch(
    num_images: int, identity_num_per_batch: int, image_num_per_identity: int
) -> int:
    """Number of P x K batches that make one pass over the training images (at least 1).

    Args:
        num_images: number of training images.
        identity_num_per_batch: P, identities in one batch.
        image_num_per_identity: K, images of each identity in one batch.

    Returns:
        ceil(num_images / (P * K)).
    """
    if num_images <= 0:
        raise ValueError(f"num_images must be positive, got {num_images}.")
    if identity_num_per_batch <= 0 or image_num_per_identity <= 0:
        raise ValueError(
            "identity_num_per_batch and image_num_per_identity must be positive, got "
            f"{identity_num_per_batch} and {image_num_per_identity}."
        )
    return max(1, math.ceil(num_images / (identity_num_per_batch * image_num_per_identity)))


def _checked_labels(labels, identity_num_per_batch, image_num_per_identity):
    """The labels as a 1-D array, after the checks both samplers share."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}.")
    if identity_num_per_batch <= 0 or image_num_per_identity <= 0:
        raise ValueError(
            "--identity_num_per_batch and --image_num_per_identity must be positive, got "
            f"{identity_num_per_batch} and {image_num_per_identity}."
        )
    return labels


class IdentityBalancedSampler:
    """Yields index batches of P distinct identities times K images each, forever.

    Each batch holds the K images of its first identity in rows 0..K-1, the next identity's
    in rows K..2K-1, and so on, so any contiguous slice whose length is a multiple of K (one
    replica's share of a MirroredStrategy global batch) keeps every identity whole.

    Identities are visited round-robin over fresh random permutations, so over any stretch of
    batches every identity is picked equally often (to within one visit). Within an identity,
    images are drawn without replacement from a per-identity shuffled queue that is refilled
    when exhausted, so all of an identity's images are used before any repeats. An identity
    with fewer than K images contributes all of them plus repeats drawn with replacement.

    Args:
        labels: int array (num_images,), the identity label of each image.
        identity_num_per_batch: P.
        image_num_per_identity: K.
        seed: seed of the sampler's random generator; equal seeds give equal batches.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        *,
        identity_num_per_batch: int,
        image_num_per_identity: int,
        seed: int = 0,
    ):
        labels = _checked_labels(labels, identity_num_per_batch, image_num_per_identity)
        unique_labels, inverse = np.unique(labels, return_inverse=True)
        if len(unique_labels) < identity_num_per_batch:
            raise ValueError(
                f"The training set has {len(unique_labels)} identities, fewer than "
                f"--identity_num_per_batch={identity_num_per_batch}; lower "
                "--identity_num_per_batch to at most the number of identities."
            )
        self.identity_num_per_batch = identity_num_per_batch
        self.image_num_per_identity = image_num_per_identity
        self.seed = seed
        self.num_identities = len(unique_labels)
        # Stable sort keeps each identity's images in file order, independent of the machine.
        order = np.argsort(inverse, kind="stable")
        boundaries = np.cumsum(np.bincount(inverse, minlength=self.num_identities))[:-1]
        self.identity_image_indices = np.split(order, boundaries)

    @property
    def batch_size(self) -> int:
        return self.identity_num_per_batch * self.image_num_per_identity

    def __iter__(self) -> Iterator[np.ndarray]:
        """Yields int32 arrays (P * K,) of image indices; a new iterator restarts the sequence."""
        return self.iterate()

    def iterate(
        self, start_batch_index: int = 0, state: dict | None = None
    ) -> Iterator[np.ndarray]:
        """Yields the same batches as `iter(self)`, starting at batch `start_batch_index`.

        Args:
            start_batch_index: int >= 0, batches of the sequence to skip. They are drawn and
                discarded (index arithmetic only, no images), so resuming a run at batch n
                gives exactly the batches an uninterrupted run sees from batch n on.
            state: a dict from `state_at` to start from instead (start_batch_index is then
                ignored): the random generator and queues are restored as saved.

        Yields:
            int32 arrays (P * K,) of image indices.
        """
        cursor = self._new_cursor() if state is None else self._cursor_from_state(state)
        if state is None:
            if start_batch_index < 0:
                raise ValueError(f"start_batch_index must be 0 or more, got {start_batch_index}.")
            for _ in range(start_batch_index):
                self._next_batch(cursor)
        while True:
            yield self._next_batch(cursor)

    def state_at(self, batch_index: int) -> dict:
        """The sampler's random state after `batch_index` batches, as plain JSON-able data.

        The state is what `iterate(state=...)` needs to continue the sequence: the bit
        generator's state, the round-robin identity queue and every per-identity image queue.

        Args:
            batch_index: int >= 0, batches drawn so far.

        Returns:
            dict with keys batch_index, seed, num_images, bit_generator_state, identity_queue,
            image_queues.
        """
        cursor = self._new_cursor()
        for _ in range(batch_index):
            self._next_batch(cursor)
        return {
            "batch_index": int(batch_index),
            "seed": self.seed,
            "num_images": int(sum(len(indices) for indices in self.identity_image_indices)),
            "bit_generator_state": _to_json_compatible(cursor["rng"].bit_generator.state),
            "identity_queue": [int(i) for i in cursor["identity_queue"]],
            "image_queues": [[int(i) for i in queue] for queue in cursor["image_queues"]],
        }

    def _new_cursor(self) -> dict:
        return {
            "rng": np.random.default_rng(self.seed),
            "identity_queue": [],
            "image_queues": [[] for _ in range(self.num_identities)],
        }

    def _cursor_from_state(self, state: dict) -> dict:
        num_images = sum(len(indices) for indices in self.identity_image_indices)
        if (
            state.get("num_images") != num_images
            or len(state.get("image_queues", ())) != self.num_identities
        ):
            raise ValueError(
                f"The saved sampler state is for {state.get('num_images')} images of "
                f"{len(state.get('image_queues', ()))} identities, but this training set has "
                f"{num_images} images of {self.num_identities} identities; resume with the same "
                "dataset flags."
            )
        rng = np.random.default_rng()
        rng.bit_generator.state = state["bit_generator_state"]
        return {
            "rng": rng,
            "identity_queue": list(state["identity_queue"]),
            "image_queues": [list(queue) for queue in state["image_queues"]],
        }

    def _next_batch(self, cursor: dict) -> np.ndarray:
        rng = cursor["rng"]
        identities = self._take_identities(cursor["identity_queue"], rng)
        batch = np.concatenate(
            [self._take_images(identity, cursor["image_queues"], rng) for identity in identities]
        )
        return batch.astype(np.int32)

    def _take_identities(self, identity_queue: list[int], rng: np.random.Generator) -> list[int]:
        """Pops P distinct identities from the front of the round-robin queue."""
        if len(identity_queue) < 2 * self.identity_num_per_batch:
            identity_queue.extend(rng.permutation(self.num_identities).tolist())
        chosen: list[int] = []
        chosen_set: set[int] = set()
        position = 0
        # A duplicate can only come from the seam between two permutations; it stays in the
        # queue, at the front, for the next batch.
        while len(chosen) < self.identity_num_per_batch:
            identity = identity_queue[position]
            if identity in chosen_set:
                position += 1
                continue
            chosen.append(identity)
            chosen_set.add(identity)
            del identity_queue[position]
        return chosen

    def _take_images(
        self, identity: int, image_queues: list[list[int]], rng: np.random.Generator
    ) -> np.ndarray:
        """K image indices of one identity: distinct when it has at least K images."""
        indices = self.identity_image_indices[identity]
        num_wanted = self.image_num_per_identity
        if len(indices) < num_wanted:
            extra = rng.choice(indices, size=num_wanted - len(indices), replace=True)
            return rng.permutation(np.concatenate([indices, extra]))
        queue = image_queues[identity]
        taken = queue[:num_wanted]
        del queue[:num_wanted]
        if len(taken) < num_wanted:
            # Refill with a fresh permutation; the images already taken go to its end so the
            # batch holds K distinct images.
            taken_set = set(taken)
            fresh = rng.permutation(indices).tolist()
            fresh = [i for i in fresh if i not in taken_set] + [i for i in fresh if i in taken_set]
            missing = num_wanted - len(taken)
            taken.extend(fresh[:missing])
            queue[:] = fresh[missing:]
        return np.asarray(taken, dtype=np.int64)


class FlipReIDSampler:
    """FlipReID's identity sampler: P x K batches cut from shuffled passes over the identities.

    Each pass shuffles the images of every identity that has at least K of them and cuts them
    into floor(n / K) groups of K, leaving the remainder out of that pass; identities with fewer
    than K images are skipped throughout. Batches are then drawn while at least P identities have
    groups left: P distinct identities chosen uniformly at random among those, one group each
    (the last group of each, popped). When fewer than P are left, their groups are dropped and
    the next pass starts. So an identity appears about floor(n / K) times a pass, unlike the
    round-robin `IdentityBalancedSampler`. Rows are laid out as there: K rows per identity.

    FlipReID draws from NumPy's global generator in its data workers; this one draws from its
    own seeded generator, so equal seeds give equal batches.

    Args:
        labels: int array (num_images,), the identity label of each image.
        identity_num_per_batch: P.
        image_num_per_identity: K.
        seed: seed of the sampler's random generator.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        *,
        identity_num_per_batch: int,
        image_num_per_identity: int,
        seed: int = 0,
    ):
        labels = _checked_labels(labels, identity_num_per_batch, image_num_per_identity)
        self.identity_num_per_batch = identity_num_per_batch
        self.image_num_per_identity = image_num_per_identity
        self.seed = seed
        # Identities in order of first appearance, each with its images in file order, as
        # FlipReID's dict built over the training records.
        _, first_positions, inverse = np.unique(labels, return_index=True, return_inverse=True)
        self.identity_image_indices = [
            np.flatnonzero(inverse == identity) for identity in np.argsort(first_positions)
        ]
        self.num_skipped_identities = sum(
            len(indices) < image_num_per_identity for indices in self.identity_image_indices
        )
        num_usable = len(self.identity_image_indices) - self.num_skipped_identities
        if num_usable < identity_num_per_batch:
            raise ValueError(
                f"--sampling_mode flipreid skips identities with fewer than "
                f"--image_num_per_identity={image_num_per_identity} images, which leaves "
                f"{num_usable} identities, fewer than --identity_num_per_batch="
                f"{identity_num_per_batch}; lower either flag or use --sampling_mode balanced."
            )

    @property
    def batch_size(self) -> int:
        return self.identity_num_per_batch * self.image_num_per_identity

    def __iter__(self) -> Iterator[np.ndarray]:
        """Yields int32 arrays (P * K,) of image indices; a new iterator restarts the sequence."""
        return self.iterate()

    def iterate(self, start_batch_index: int = 0) -> Iterator[np.ndarray]:
        """Yields the same batches as `iter(self)`, starting at batch `start_batch_index`.

        Args:
            start_batch_index: int >= 0, batches of the sequence to skip (drawn and discarded,
                index arithmetic only), so a resumed run sees the batches an uninterrupted one
                sees from there on.

        Yields:
            int32 arrays (P * K,) of image indices.
        """
        if start_batch_index < 0:
            raise ValueError(f"start_batch_index must be 0 or more, got {start_batch_index}.")
        batches = self._batches()
        for _ in range(start_batch_index):
            next(batches)
        yield from batches

    def _batches(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        num_wanted = self.image_num_per_identity
        while True:
            groups_by_identity = {}
            for identity, indices in enumerate(self.identity_image_indices):
                if len(indices) < num_wanted:
                    continue
                group_num = len(indices) // num_wanted
                shuffled = rng.permutation(indices)[: group_num * num_wanted]
                groups_by_identity[identity] = np.split(shuffled, group_num)
            while len(groups_by_identity) >= self.identity_num_per_batch:
                identities = rng.choice(
                    list(groups_by_identity), size=self.identity_num_per_batch, replace=False
                )
                batch = []
                for identity in identities:
                    groups = groups_by_identity[identity]
                    batch.append(groups.pop())
                    if not groups:
                        del groups_by_identity[identity]
                yield np.concatenate(batch).astype(np.int32)


SAMPLING_MODES = ("balanced", "flipreid")


def build_identity_sampler(
    labels,
    *,
    sampling_mode="balanced",
    identity_num_per_batch,
    image_num_per_identity,
    seed=0,
):
    """The P x K sampler of a --sampling_mode.

    Args:
        labels: int array (num_images,), the identity label of each image.
        sampling_mode: "balanced" (IdentityBalancedSampler) or "flipreid" (FlipReIDSampler).
        identity_num_per_batch: P.
        image_num_per_identity: K.
        seed: seed of the sampler.

    Returns:
        IdentityBalancedSampler or FlipReIDSampler.

    Raises:
        ValueError: an unknown mode (the message lists the valid ones) or unusable settings.
    """
    samplers = {"balanced": IdentityBalancedSampler, "flipreid": FlipReIDSampler}
    if sampling_mode not in samplers:
        raise ValueError(
            f"--sampling_mode must be one of {', '.join(SAMPLING_MODES)}; got {sampling_mode!r}."
        )
    return samplers[sampling_mode](
        labels,
        identity_num_per_batch=identity_num_per_batch,
        image_num_per_identity=image_num_per_identity,
        seed=seed,
    )


def _to_json_compatible(value):
    """NumPy's bit-generator state (nested dicts of ints) with NumPy integers made plain."""
    if isinstance(value, dict):
        return {key: _to_json_compatible(item) for key, item in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    return value
