"""Distribution strategies: TF_CONFIG checks, batch composition, and runs on logical devices."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from applications.distribution import (
    build_strategy,
    check_batch_composition,
    is_chief,
    parse_tf_config,
)

REPOSITORY_FOLDER_PATH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tf_config(index, workers=("localhost:1", "localhost:2")):
    return json.dumps(
        {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}}
    )


def test_tf_config_is_parsed_and_bad_ones_are_explained():
    assert parse_tf_config(_tf_config(1))["task"]["index"] == 1
    cases = [
        (None, "TF_CONFIG, which is unset"),
        ("{not json", "not valid JSON"),
        ('{"cluster": {}}', "needs a 'cluster' and a 'task'"),
        (_tf_config(2), "task index 2 is outside the 2 'worker' addresses"),
        (
            json.dumps({"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}),
            "takes 'worker'",
        ),
        (
            json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}),
            "must name a job of its cluster",
        ),
    ]
    for text, expected in cases:
        with pytest.raises(ValueError, match=expected) as raised:
            parse_tf_config(text)
        assert "TF_CONFIG='{" in str(raised.value)  # an example to copy


def test_strategy_names_and_the_default_strategy():
    with pytest.raises(ValueError, match="valid: default, mirrored, multi_worker"):
        build_strategy("horovod")
    with pytest.raises(ValueError, match="unset"):
        build_strategy("multi_worker", environ={})
    strategy = build_strategy("default")
    assert strategy.num_replicas_in_sync == 1 and is_chief(strategy)


@pytest.mark.parametrize(
    "P, replicas, identities, expected",
    [
        (16, 1, 10, "has 10 identities, fewer than --identity_num_per_batch=16"),
        (6, 4, 100, r"--identity_num_per_batch \(6\) must be a multiple of the 4 replicas"),
        (4, 4, 100, "fewer than 2 identities"),
    ],
)
def test_batch_composition_is_checked_before_work(P, replicas, identities, expected):
    with pytest.raises(ValueError, match=expected):
        check_batch_composition(
            identity_num_per_batch=P,
            image_num_per_identity=4,
            num_replicas=replicas,
            num_train_identities=identities,
        )
    check_batch_composition(
        identity_num_per_batch=8, image_num_per_identity=4, num_replicas=4, num_train_identities=8
    )


def _run_script(script, tmp_path, environ=None, timeout=600):
    script_path = tmp_path / "script.py"
    script_path.write_text(textwrap.dedent(script))
    return subprocess.run(
        [sys.executable, str(script_path)],
        cwd=REPOSITORY_FOLDER_PATH,
        env={**os.environ, "PYTHONPATH": REPOSITORY_FOLDER_PATH, **(environ or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


_MIRRORED_STEP_SCRIPT = """
    import numpy as np
    from applications.distribution import build_strategy, configure_cpu_logical_devices

    configure_cpu_logical_devices(2)  # before TensorFlow's first operation
    from applications.core.backend import keras, tf
    from applications.model import build_flipreid_models

    P, K, H, W = 4, 2, 64, 32
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (P * K, H, W, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(P), K).astype(np.int32)

    def build(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model, _ = build_flipreid_models(
                "resnet18", H, W, P, region_num=0, min_value=0.0, max_value=1.0
            )
            # SGD: its update is proportional to the gradient, so the check below also tells
            # how gradients are combined across replicas.
            model.compile(keras.optimizers.SGD(0.1))
        return model

    mirrored = build_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    model = build(mirrored)
    reference = build(tf.distribute.get_strategy())
    for a, b in zip(model.weights, reference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    logged = model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0).history

    # Reference on one device: each replica's slice (whole identities) on its own, losses
    # averaged as the replicas' metrics are, gradients summed as the replicas' are.
    slices = np.split(np.arange(P * K), 2)
    with tf.GradientTape() as tape:
        per_slice = [reference.compute_losses(images[s], labels[s], training=True) for s in slices]
        total = tf.add_n([values["loss"] for values in per_slice])
    variables = reference.trainable_variables
    reference.optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
    for name, values in logged.items():
        expected = np.mean([float(v[name]) for v in per_slice])
        np.testing.assert_allclose(values[0], expected, rtol=1e-4, atol=1e-6, err_msg=name)
    for a, b in zip(model.trainable_weights, reference.trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=5e-5, err_msg=a.name)
    print("OK")
"""


@pytest.mark.slow
def test_mirrored_step_on_two_logical_cpus_matches_the_per_slice_reference(tmp_path):
    completed = _run_script(_MIRRORED_STEP_SCRIPT, tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().endswith("OK")


_WORKER_SCRIPT = """
    import json, os, sys
    from applications.distribution import (
        build_strategy, is_chief, prepare_dataset_for_strategy,
    )

    strategy = build_strategy("multi_worker")
    from applications.core.backend import keras, tf
    from applications.run_state import RunState, RunStateManager

    labels = tf.repeat(tf.range(8), 2)  # P = 8 identities, K = 2, global batch 16
    dataset = tf.data.Dataset.range(1000).map(
        lambda i: (tf.cast(labels, tf.float32)[:, None], labels + 100 * tf.cast(i, tf.int32))
    )
    dataset = prepare_dataset_for_strategy(dataset, strategy)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    seen = []
    for _ in range(2):
        _, batch_labels = next(iterator)
        seen += [v.numpy().tolist() for v in strategy.experimental_local_results(batch_labels)]
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((1,)), keras.layers.Dense(2), keras.layers.BatchNormalization()]
        )
        model.compile(keras.optimizers.Adam(0.01), loss="mse")
    model.fit(
        dataset.map(lambda x, y: (x, tf.stack([tf.cast(y, tf.float32)] * 2, axis=1))),
        steps_per_epoch=2, epochs=1, verbose=0,
    )
    run_folder_path = sys.argv[1] if len(sys.argv) > 1 else os.environ["RUN_FOLDER"]
    manager = RunStateManager(run_folder_path, model, is_chief=is_chief(strategy))
    manager.save(RunState(epoch=1, stage="trainable", stream_batch_index=2))
    print(json.dumps({"chief": is_chief(strategy), "replicas": strategy.num_replicas_in_sync,
                      "slices": seen}))
"""


@pytest.mark.slow
def test_two_worker_processes_on_localhost_split_batches_by_whole_identities(tmp_path):
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("localhost", 0))
            ports.append(probe.getsockname()[1])
    workers = [f"localhost:{port}" for port in ports]
    script_path = tmp_path / "worker.py"
    script_path.write_text(textwrap.dedent(_WORKER_SCRIPT))
    run_folder_path = tmp_path / "run"
    processes = [
        subprocess.Popen(
            [sys.executable, str(script_path)],
            cwd=REPOSITORY_FOLDER_PATH,
            env={
                **os.environ,
                "PYTHONPATH": REPOSITORY_FOLDER_PATH,
                "TF_CONFIG": _tf_config(index, workers),
                "RUN_FOLDER": str(run_folder_path),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    reports = []
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    assert [report["chief"] for report in reports] == [True, False]
    assert all(report["replicas"] == 2 for report in reports)
    for step in range(2):
        halves = [reports[worker]["slices"][step] for worker in range(2)]
        # Each worker's slice is half of the same global batch, with whole identities (K = 2).
        assert sorted(halves[0] + halves[1]) == sorted(
            [identity + 100 * step for identity in range(8) for _ in range(2)]
        )
        for half in halves:
            assert all(half.count(label) == 2 for label in half)
    # Only the chief wrote the checkpoint.
    assert os.listdir(run_folder_path / "checkpoints") == ["epoch_0001"]
