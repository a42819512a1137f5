"""TensorFlow distribution strategies for one device, several devices, or several machines.

`build_strategy` turns `--distribution_strategy` into a `tf.distribute.Strategy`:
- `default`: TensorFlow's default strategy (one device: the GPU when there is one).
- `mirrored`: `MirroredStrategy` over this machine's GPUs, or over its logical CPU devices
  (`--cpu_logical_devices N`, for testing without GPUs).
- `multi_worker`: `MultiWorkerMirroredStrategy`, configured from the standard `TF_CONFIG`
  environment variable (the cluster's workers and this process's place in it).

Keras splits each global batch of P x K images into contiguous slices, one per replica (with
several workers, each worker takes its replicas' slices). The identity sampler puts each
identity's K images in consecutive rows, so when P is a multiple of the number of replicas
every slice holds P / replicas whole identities: batch-hard mining and the ID loss see complete
identities. Each replica mines its hardest positives and negatives inside its own slice.

Both multi-device strategies need setting up before TensorFlow runs its first operation: call
`configure_cpu_logical_devices` and `build_strategy` first thing in a run.
"""

import json
import os

from absl import logging

from applications.core.backend import tf

DISTRIBUTION_STRATEGIES = ("default", "mirrored", "multi_worker")

TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


def configure_cpu_logical_devices(cpu_logical_devices):
    """Splits the first physical CPU into `cpu_logical_devices` logical devices.

    Args:
        cpu_logical_devices: int, 0 or 1 leaves the CPU as it is; N >= 2 makes N devices
            /cpu:0 ... /cpu:N-1 that MirroredStrategy can use as replicas.

    Raises:
        ValueError: a negative count.
        RuntimeError: TensorFlow was already initialised (the split must come first).
    """
    if cpu_logical_devices < 0:
        raise ValueError(f"--cpu_logical_devices must be 0 or more, got {cpu_logical_devices}.")
    if cpu_logical_devices <= 1:
        return
    physical_cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            physical_cpus[0],
            [tf.config.LogicalDeviceConfiguration() for _ in range(cpu_logical_devices)],
        )
    except RuntimeError as error:
        # Already split the same way (a second run in one process) is fine.
        if len(tf.config.list_logical_devices("CPU")) == cpu_logical_devices:
            return
        raise RuntimeError(
            f"--cpu_logical_devices {cpu_logical_devices} must be applied before TensorFlow "
            f"starts ({error}); set it up first thing in the process."
        ) from None


def parse_tf_config(tf_config_text):
    """Validates a TF_CONFIG value for MultiWorkerMirroredStrategy.

    Args:
        tf_config_text: str or None, the environment variable's value.

    Returns:
        dict with "cluster" and "task", as TensorFlow reads it.

    Raises:
        ValueError: missing, not JSON, or inconsistent; the message shows an example.
    """
    hint = f"set TF_CONFIG on every machine, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}' on the first"
    if not tf_config_text:
        raise ValueError(
            f"--distribution_strategy multi_worker reads TF_CONFIG, which is unset; {hint}."
        )
    try:
        tf_config = json.loads(tf_config_text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}); {hint}.") from None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    task = tf_config.get("task") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError(f"TF_CONFIG needs a 'cluster' and a 'task' object; {hint}.")
    task_type, task_index = task.get("type"), task.get("index")
    members = cluster.get(task_type)
    if not isinstance(members, list) or not isinstance(task_index, int):
        raise ValueError(
            f"TF_CONFIG's task {task!r} must name a job of its cluster (jobs: "
            f"{', '.join(sorted(cluster))}) and an integer index; {hint}."
        )
    if not 0 <= task_index < len(members):
        raise ValueError(
            f"TF_CONFIG's task index {task_index} is outside the {len(members)} "
            f"'{task_type}' addresses of its cluster; {hint}."
        )
    unknown = set(cluster) - {"chief", "worker"}
    if unknown:
        raise ValueError(
            f"TF_CONFIG's cluster has jobs {sorted(unknown)}; MultiWorkerMirroredStrategy takes "
            f"'worker' (and optionally one 'chief'); {hint}."
        )
    return tf_config


def build_strategy(distribution_strategy, *, environ=None):
    """Builds the strategy named by `--distribution_strategy`.

    Args:
        distribution_strategy: "default", "mirrored" or "multi_worker".
        environ: mapping to read TF_CONFIG from (default: os.environ).

    Returns:
        tf.distribute.Strategy.

    Raises:
        ValueError: an unknown name, or a bad TF_CONFIG for multi_worker.
    """
    if distribution_strategy not in DISTRIBUTION_STRATEGIES:
        raise ValueError(
            f"Unknown --distribution_strategy {distribution_strategy!r}; valid: "
            f"{', '.join(DISTRIBUTION_STRATEGIES)}."
        )
    if distribution_strategy == "default":
        return tf.distribute.get_strategy()
    if distribution_strategy == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [device.name for device in gpus or tf.config.list_logical_devices("CPU")]
        if len(devices) == 1:
            logging.warning(
                "--distribution_strategy mirrored found one device (%s); pass "
                "--cpu_logical_devices N to split a CPU.",
                devices[0],
            )
        return tf.distribute.MirroredStrategy(devices=devices)
    environ = os.environ if environ is None else environ
    parse_tf_config(environ.get("TF_CONFIG"))
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy):
    """Whether this process writes the run's files: always, except on non-chief workers.

    With a "chief" job in TF_CONFIG the chief writes; otherwise worker 0 does.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return "chief" not in cluster and task_type == "worker" and task_id == 0


def describe_strategy(strategy):
    """A one-line description for the user, e.g. "MirroredStrategy over 2 replicas"."""
    # TensorFlow's class behind MultiWorkerMirroredStrategy is CollectiveAllReduceStrategy.
    name = (
        "MultiWorkerMirroredStrategy"
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        else type(strategy).__name__
    )
    return f"{name} over {strategy.num_replicas_in_sync} replica(s)"


def check_batch_composition(
    *, identity_num_per_batch, image_num_per_identity, num_replicas, num_train_identities=None
):
    """Checks, before any work, that every replica's slice can hold whole identities.

    Args:
        identity_num_per_batch: P, identities per global batch.
        image_num_per_identity: K.
        num_replicas: int, replicas in sync (devices times workers).
        num_train_identities: int or None, identities in the training set.

    Raises:
        ValueError: P is not a multiple of the replicas, or exceeds the identities; the message
            names the flags and the fix.
    """
    if num_train_identities is not None and num_train_identities < identity_num_per_batch:
        raise ValueError(
            f"The training set has {num_train_identities} identities, fewer than "
            f"--identity_num_per_batch={identity_num_per_batch}; lower --identity_num_per_batch "
            "to at most the number of identities."
        )
    if identity_num_per_batch % num_replicas:
        raise ValueError(
            f"--identity_num_per_batch ({identity_num_per_batch}) must be a multiple of the "
            f"{num_replicas} replicas, so that each replica's slice of the batch holds whole "
            f"identities (K={image_num_per_identity} images each) for batch-hard mining."
        )
    if identity_num_per_batch // num_replicas < 2:
        raise ValueError(
            f"--identity_num_per_batch ({identity_num_per_batch}) gives each of the "
            f"{num_replicas} replicas fewer than 2 identities, and batch-hard mining needs a "
            "negative; use at least 2 identities per replica."
        )


def prepare_dataset_for_strategy(dataset, strategy):
    """Sets how the training dataset is split between workers (a no-op on one worker).

    The training stream comes from a Python generator, which has no files to shard, so each
    worker runs the input pipeline and keeps every num_workers-th per-replica slice (DATA
    sharding); saying so explicitly avoids TensorFlow's fallback warning.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
