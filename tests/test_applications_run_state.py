"""Atomic files, resumable checkpoints, run markers and the choice of the run to resume."""

import errno
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import types

import numpy as np
import pytest

from applications.core.atomic_files import (
    CheckpointWriteError,
    atomic_save_weights,
    atomic_write_json,
    atomic_write_text,
)
from applications.core.backend import keras, tf
from applications.interruption import RunInterrupted
from applications.model import build_flipreid_models
from applications.run_state import (
    RUN_FAILED_FILE_NAME,
    RUN_INCOMPLETE_FILE_NAME,
    ResumeError,
    RunState,
    RunStateManager,
    check_file_manifest,
    check_output_folder_writable,
    file_manifest,
    find_run_to_resume,
    mark_run_completed,
    mark_run_failed,
    mark_run_started,
    read_run_status,
    verify_checkpoint,
)
from applications.training import fit_in_stages
from callbacks.resume_checkpoint import RunStateCheckpoint

HEIGHT, WIDTH, NUM_IDENTITIES = 64, 32, 4


def _build(seed):
    keras.utils.set_random_seed(seed)
    training_model, inference_model = build_flipreid_models(
        "resnet18", HEIGHT, WIDTH, NUM_IDENTITIES, region_num=0, min_value=0.0, max_value=1.0
    )
    training_model.compile(keras.optimizers.Adam(1e-3))
    return training_model, inference_model


class _TinyModel(keras.Model):
    """A dense 'backbone' and 'head' with FlipReID's staging hook: fast stand-in for resume."""

    def __init__(self):
        super().__init__()
        self.backbone = keras.layers.Dense(8, activation="relu")
        self.head = keras.layers.Dense(2)

    def call(self, inputs, training=False):
        return self.head(self.backbone(inputs))

    def set_backbone_trainable(self, trainable):
        self.backbone.trainable = trainable
        self.compile(optimizer=self.optimizer, loss="mse")


def _build_tiny(seed, width=3):
    keras.utils.set_random_seed(seed)
    model = _TinyModel()
    model.build((None, width))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    # As FlipReIDTrainingModel.compile does: slots for every variable, frozen ones included.
    model.optimizer.build(model.trainable_variables)
    return model


def _make_tiny_dataset(initial_batch_index):
    """Batch i depends only on i, like the real pipeline's stream."""

    def batch(index):
        x = tf.random.stateless_normal((4, 3), seed=tf.stack([tf.constant(3, tf.int64), index]))
        return x, tf.stack([tf.reduce_sum(x, axis=1), x[:, 0]], axis=1)

    return tf.data.Dataset.counter(start=initial_batch_index).map(batch)


def _make_dataset(initial_batch_index):
    """A deterministic endless stream: batch i depends only on i, like the real pipeline."""

    def batch(index):
        images = tf.random.stateless_uniform(
            (8, HEIGHT, WIDTH, 3),
            seed=tf.stack([tf.constant(7, tf.int64), index]),
            maxval=256,
            dtype=tf.int32,
        )
        labels = tf.repeat(tf.range(NUM_IDENTITIES, dtype=tf.int32), 2)
        return tf.cast(images, tf.uint8), labels

    return tf.data.Dataset.counter(start=initial_batch_index).map(batch)


def _optimizer_state(model):
    optimizer = model.optimizer
    return int(optimizer.iterations.numpy()), [v.numpy() for v in optimizer.variables]


# --- atomic files -------------------------------------------------------------------------------


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary_file(tmp_path):
    file_path = str(tmp_path / "state.json")
    atomic_write_json(file_path, {"epoch": 1})
    atomic_write_json(file_path, {"epoch": 2})
    assert json.load(open(file_path)) == {"epoch": 2}
    assert os.listdir(tmp_path) == ["state.json"]


def test_atomic_write_interrupted_before_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
    file_path = str(tmp_path / "notes.txt")
    atomic_write_text(file_path, "old")

    def failing_replace(source, destination):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        atomic_write_text(file_path, "new")
    assert open(file_path).read() == "old"
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_atomic_save_weights_failing_midway_keeps_the_previous_best(tmp_path, monkeypatch):
    inference_model = _build_tiny(0)
    file_path = str(tmp_path / "inference_model.h5")
    atomic_save_weights(inference_model, file_path)
    saved_bytes = open(file_path, "rb").read()

    def save_weights_then_disk_full(path, *args, **kwargs):
        with open(path, "wb") as file:
            file.write(b"\x89HDF\r\n\x1a\n partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(inference_model, "save_weights", save_weights_then_disk_full)
    with pytest.raises(CheckpointWriteError, match="inference_model.h5: .*No space left.*intact"):
        atomic_save_weights(inference_model, file_path)
    assert open(file_path, "rb").read() == saved_bytes
    assert os.listdir(tmp_path) == ["inference_model.h5"]


# --- checks and markers -------------------------------------------------------------------------


def test_output_folder_check_refuses_a_file_and_creates_a_missing_folder(tmp_path):
    a_file = tmp_path / "results"
    a_file.write_text("not a folder")
    with pytest.raises(ValueError, match="--output_folder_path .*results is a file"):
        check_output_folder_writable(str(a_file))
    with pytest.raises(ValueError, match="--output_folder_path .*not writable"):
        check_output_folder_writable(str(a_file / "below"))
    missing = tmp_path / "new" / "outputs"
    check_output_folder_writable(str(missing))
    assert missing.is_dir() and os.listdir(missing) == []


def test_run_markers(tmp_path):
    run_folder_path = str(tmp_path)
    mark_run_started(run_folder_path, resume_hint="python solution.py --resume")
    assert read_run_status(run_folder_path) == "incomplete"
    assert "--resume" in open(tmp_path / RUN_INCOMPLETE_FILE_NAME).read()
    mark_run_failed(run_folder_path, "Training diverged at step 3.")
    assert read_run_status(run_folder_path) == "failed"
    assert "diverged at step 3" in open(tmp_path / RUN_FAILED_FILE_NAME).read()
    mark_run_started(run_folder_path)  # resumed: the failure marker goes
    assert read_run_status(run_folder_path) == "incomplete"
    mark_run_completed(run_folder_path)
    assert read_run_status(run_folder_path) == "completed"


# --- checkpoints --------------------------------------------------------------------------------


def test_checkpoint_restores_weights_and_optimizer_state_into_a_fresh_model(tmp_path):
    training_model, _ = _build(0)
    fit_in_stages(training_model, _make_dataset, steps_per_epoch=2, epoch_num=1, verbose=0)
    manager = RunStateManager(str(tmp_path), training_model)
    state = RunState(
        epoch=1,
        stage="trainable",
        stream_batch_index=2,
        monitor="test_mAP",
        best_value=0.5,
        best_epoch=1,
        history_rows=[{"epoch": 1, "loss": 3.0}],
        extra={"before": {"mAP": 0.1}},
    )
    manager.save(state)

    restored_model, _ = _build(1)  # other initial weights, empty optimizer moments
    restored = RunStateManager(str(tmp_path), restored_model).restore()
    assert restored.epoch == 1 and restored.best_value == 0.5 and restored.best_epoch == 1
    assert restored.history_rows == [{"epoch": 1, "loss": 3.0}]
    assert restored.extra == {"before": {"mAP": 0.1}}
    for expected, actual in zip(training_model.weights, restored_model.weights, strict=True):
        np.testing.assert_array_equal(expected.numpy(), actual.numpy())
    expected_iterations, expected_slots = _optimizer_state(training_model)
    actual_iterations, actual_slots = _optimizer_state(restored_model)
    assert expected_iterations == actual_iterations == 2
    assert len(expected_slots) == len(actual_slots) > 2
    assert any(np.abs(slot).sum() > 0 for slot in expected_slots[1:])
    for expected, actual in zip(expected_slots, actual_slots, strict=True):
        np.testing.assert_array_equal(expected, actual)


def test_resumed_training_equals_uninterrupted_training(tmp_path):
    # Two epochs frozen, two trainable; interrupted after epoch 1 (inside the frozen stage).
    settings = dict(steps_per_epoch=3, epoch_num=4, freeze_backbone_for_N_epochs=2, verbose=0)
    uninterrupted = _build_tiny(0)
    history = fit_in_stages(uninterrupted, _make_tiny_dataset, **settings)

    first = _build_tiny(0)
    saved = []

    def save_state(epoch, best_value, best_epoch):
        RunStateManager(str(tmp_path), first).save(
            RunState(epoch=epoch, stage="frozen", stream_batch_index=epoch * 3)
        )
        saved.append(epoch)

    checkpoint = RunStateCheckpoint(save_state, save_best_fn=None, monitor="test_mAP")
    # The "kill": the first process ends after epoch 1, nothing later is kept.
    fit_in_stages(first, _make_tiny_dataset, callbacks=[checkpoint], **{**settings, "epoch_num": 1})
    assert saved == [1]

    resumed = _build_tiny(5)
    state = RunStateManager(str(tmp_path), resumed).restore()
    resumed_history = fit_in_stages(
        resumed, _make_tiny_dataset, initial_epoch=state.epoch, **settings
    )
    np.testing.assert_allclose(resumed_history["loss"], history["loss"][1:], rtol=1e-5)
    for expected, actual in zip(uninterrupted.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(expected.numpy(), actual.numpy(), rtol=1e-5, atol=1e-6)
    assert int(resumed.optimizer.iterations.numpy()) == 12
    # Without the optimizer state (a weights-only restart) the result would differ.
    restarted = _build_tiny(5)
    restarted.set_weights(first.get_weights())
    fit_in_stages(restarted, _make_tiny_dataset, initial_epoch=1, **settings)
    assert not np.allclose(restarted.weights[0].numpy(), uninterrupted.weights[0].numpy())


def test_interrupted_checkpoint_is_ignored_and_old_ones_are_pruned(tmp_path):
    training_model = _build_tiny(0)
    manager = RunStateManager(str(tmp_path), training_model, max_to_keep=2)
    for epoch in (1, 2):
        manager.save(RunState(epoch=epoch, stage="trainable", stream_batch_index=epoch))
    # A process killed while writing epoch 3 leaves only its temporary folder.
    leftover = tmp_path / "checkpoints" / ".tmp_epoch_0003_99999999"
    leftover.mkdir()
    (leftover / "checkpoint.index").write_bytes(b"partial")
    assert [epoch for epoch, _ in manager.list_checkpoints()] == [1, 2]
    assert manager.read_state().epoch == 2
    manager.save(RunState(epoch=3, stage="trainable", stream_batch_index=3))
    assert [epoch for epoch, _ in manager.list_checkpoints()] == [2, 3]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["epoch_0002", "epoch_0003"]


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    training_model = _build_tiny(0)
    manager = RunStateManager(str(tmp_path), training_model)
    manager.save(RunState(epoch=1, stage="trainable", stream_batch_index=1))

    def disk_full(self, prefix, *args, **kwargs):
        with open(prefix + ".index", "wb") as file:
            file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tf.train.Checkpoint, "write", disk_full)
    with pytest.raises(
        CheckpointWriteError, match=r"epoch 2 .*No space left.*\(epoch 1\) is intact"
    ):
        manager.save(RunState(epoch=2, stage="trainable", stream_batch_index=2))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["epoch_0001"]
    assert manager.read_state().epoch == 1


def test_checkpoint_of_another_model_is_refused(tmp_path):
    RunStateManager(str(tmp_path), _build_tiny(0)).save(
        RunState(epoch=1, stage="trainable", stream_batch_index=1)
    )
    other = _build_tiny(0, width=5)  # another input width: other kernel shapes
    with pytest.raises(ResumeError, match="does not fit the model"):
        RunStateManager(str(tmp_path), other).restore()


# --- which run to resume ------------------------------------------------------------------------


def _write_run(root, name, flags, *, epochs=(1,), status="incomplete"):
    run_folder_path = root / name
    (run_folder_path / "checkpoints").mkdir(parents=True)
    (run_folder_path / "flags.json").write_text(json.dumps(flags))
    for epoch in epochs:
        folder = run_folder_path / "checkpoints" / f"epoch_{epoch:04d}"
        folder.mkdir()
        (folder / "state.json").write_text(json.dumps({"epoch": epoch}))
    if status != "completed":
        (run_folder_path / RUN_INCOMPLETE_FILE_NAME).write_text("by process 1 on nowhere.\n")
    return str(run_folder_path)


def test_resume_picks_the_newest_unfinished_run_with_the_same_shaping_flags(tmp_path):
    flags = {"dataset_name": "Synthetic", "image_height": 64, "learning_rate_base": 1e-3}
    older = _write_run(tmp_path, "Synthetic_resnet18", flags)
    newer = _write_run(tmp_path, "Synthetic_resnet18_2", flags)
    _write_run(tmp_path, "Synthetic_resnet18_3", flags, status="completed")
    _write_run(tmp_path, "Synthetic_resnet18_4", {**flags, "image_height": 128})
    os.utime(os.path.join(older, "checkpoints", "epoch_0001"), (1, 1))
    os.utime(os.path.join(newer, "checkpoints", "epoch_0001"), (2, 2))
    os.utime(tmp_path / "Synthetic_resnet18_4" / "checkpoints" / "epoch_0001", (3, 3))
    path, changed = find_run_to_resume(
        str(tmp_path), "Synthetic_resnet18", {**flags, "learning_rate_base": 5e-4}
    )
    assert path == newer
    assert changed == [("learning_rate_base", 1e-3, 5e-4)]
    # --resume_from names the run explicitly.
    assert find_run_to_resume(str(tmp_path), "x", flags, resume_from=older)[0] == older


def test_resume_refusals_say_why(tmp_path):
    flags = {"dataset_name": "Synthetic", "image_height": 64}
    with pytest.raises(ResumeError, match="Nothing to resume.*without --resume"):
        find_run_to_resume(str(tmp_path), "Synthetic_resnet18", flags)
    _write_run(tmp_path, "Synthetic_resnet18", flags, epochs=())  # killed in epoch 1
    done = _write_run(tmp_path, "Synthetic_resnet18_2", flags, status="completed")
    with pytest.raises(ResumeError, match="no unfinished run with a complete checkpoint"):
        find_run_to_resume(str(tmp_path), "Synthetic_resnet18", flags)
    with pytest.raises(ResumeError, match="the run has completed"):
        find_run_to_resume(str(tmp_path), "Synthetic_resnet18", flags, resume_from=done)
    _write_run(tmp_path, "Synthetic_resnet18_3", flags)
    with pytest.raises(ResumeError, match=r"--image_height: run 64, now 128"):
        find_run_to_resume(str(tmp_path), "Synthetic_resnet18", {**flags, "image_height": 128})
    with pytest.raises(ResumeError, match="not a run folder"):
        find_run_to_resume(str(tmp_path), "x", flags, resume_from=str(tmp_path))


def test_resume_holds_the_precision_policy_the_run_trained_in(tmp_path):
    """flags.json records the policy auto chose; older runs recorded auto, which matches any."""
    flags = {"dataset_name": "Synthetic", "mixed_precision_policy": "mixed_bfloat16"}
    run = _write_run(tmp_path, "Synthetic_resnet18", flags)
    with pytest.raises(
        ResumeError, match=r"--mixed_precision_policy: run 'mixed_bfloat16', now 'float32'"
    ):
        find_run_to_resume(
            str(tmp_path), "x", {**flags, "mixed_precision_policy": "float32"}, resume_from=run
        )
    assert find_run_to_resume(str(tmp_path), "x", flags, resume_from=run) == (run, [])
    auto_flags = {**flags, "mixed_precision_policy": "auto"}
    older = _write_run(tmp_path, "Synthetic_resnet18_2", auto_flags)
    for policy in ("float32", "mixed_bfloat16"):
        current = {**flags, "mixed_precision_policy": policy}
        assert find_run_to_resume(str(tmp_path), "x", current, resume_from=older) == (older, [])


# --- damaged checkpoints ------------------------------------------------------------------------


def _largest_file(folder_path):
    paths = [os.path.join(folder_path, name) for name in os.listdir(folder_path)]
    return max((path for path in paths if os.path.isfile(path)), key=os.path.getsize)


def _truncate_to_half(file_path):
    size = os.path.getsize(file_path)
    with open(file_path, "rb+") as file:
        file.truncate(size // 2)


def _saved_tiny_run(tmp_path, epochs=(1, 2)):
    """A tiny model saved after each of `epochs`, with one training step between saves."""
    model = _build_tiny(0)
    manager = RunStateManager(str(tmp_path), model, max_to_keep=3)
    weights = {}
    for epoch in epochs:
        fit_in_stages(model, _make_tiny_dataset, steps_per_epoch=1, epoch_num=1, verbose=0)
        manager.save(RunState(epoch=epoch, stage="trainable", stream_batch_index=epoch))
        weights[epoch] = [weight.numpy() for weight in model.weights]
    return manager, weights


def test_checkpoint_manifest_holds_the_size_and_sha256_of_every_file(tmp_path):
    manager, _ = _saved_tiny_run(tmp_path, epochs=(1,))
    folder_path = manager.list_checkpoints()[-1][1]
    manifest = json.load(open(os.path.join(folder_path, "state.json")))["files"]
    names = sorted(name for name in os.listdir(folder_path) if name != "state.json")
    assert sorted(manifest) == names and any(name.startswith("checkpoint.data") for name in names)
    for name in names:
        content = open(os.path.join(folder_path, name), "rb").read()
        assert manifest[name] == {
            "size": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
        }
    assert verify_checkpoint(folder_path) is None


@pytest.mark.parametrize("damage", ["truncated", "one byte changed", "state.json cut"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_naming_the_file(
    tmp_path, damage
):
    manager, weights = _saved_tiny_run(tmp_path)
    newest = manager.list_checkpoints()[-1][1]
    damaged_file_path = _largest_file(newest)
    if damage == "truncated":
        _truncate_to_half(damaged_file_path)
        expected = rf"{re.escape(damaged_file_path)} is \d+ bytes where \d+ were written \(trunc"
    elif damage == "one byte changed":
        with open(damaged_file_path, "rb+") as file:
            file.seek(os.path.getsize(damaged_file_path) // 2)
            byte = file.read(1)
            file.seek(-1, os.SEEK_CUR)
            file.write(bytes([byte[0] ^ 0xFF]))
        expected = rf"{re.escape(damaged_file_path)} has other bytes .*SHA-256"
    else:
        damaged_file_path = os.path.join(newest, "state.json")
        _truncate_to_half(damaged_file_path)
        expected = rf"{re.escape(damaged_file_path)} is not a readable state"
    assert re.search(expected, verify_checkpoint(newest))

    fresh = _build_tiny(7)
    state = RunStateManager(str(tmp_path), fresh).restore()
    assert state.epoch == 1
    [(skipped_path, reason)] = state.skipped_checkpoints
    assert skipped_path == newest and re.search(expected, reason)
    for expected_weight, weight in zip(weights[1], fresh.weights, strict=True):
        np.testing.assert_array_equal(expected_weight, weight.numpy())
    assert RunStateManager(str(tmp_path), None).newest_whole_epoch() == 1


def test_a_damaged_checkpoint_written_without_a_manifest_is_passed_over_too(tmp_path):
    # Checkpoints written before manifests were recorded: the read error itself is caught.
    manager, _ = _saved_tiny_run(tmp_path)
    newest = manager.list_checkpoints()[-1][1]
    state_file_path = os.path.join(newest, "state.json")
    content = json.load(open(state_file_path))
    content.pop("files")
    json.dump(content, open(state_file_path, "w"))
    _truncate_to_half(_largest_file(newest))
    assert verify_checkpoint(newest) is None  # nothing to check it against
    state = RunStateManager(str(tmp_path), _build_tiny(7)).restore()
    assert state.epoch == 1
    assert "cannot be read" in state.skipped_checkpoints[0][1]


def test_no_whole_checkpoint_is_one_resume_error_naming_each_damaged_file(tmp_path):
    manager, _ = _saved_tiny_run(tmp_path)
    damaged = [_largest_file(path) for _, path in manager.list_checkpoints()]
    for file_path in damaged:
        _truncate_to_half(file_path)
    with pytest.raises(ResumeError, match="no checkpoint is whole") as raised:
        RunStateManager(str(tmp_path), _build_tiny(7)).restore()
    message = str(raised.value)
    assert "\n" not in message and all(file_path in message for file_path in damaged)
    assert RunStateManager(str(tmp_path), None).newest_whole_epoch() is None


def test_file_manifest_finds_missing_grown_and_changed_files(tmp_path):
    for name, content in (("a.h5", b"abcdef"), ("b.h5", b"012345"), ("c.h5", b"xyz")):
        (tmp_path / name).write_bytes(content)
    manifest = file_manifest(str(tmp_path), ["a.h5", "b.h5", "c.h5"])
    assert manifest["c.h5"] == {"size": 3, "sha256": hashlib.sha256(b"xyz").hexdigest()}
    assert check_file_manifest(str(tmp_path), manifest) == []
    (tmp_path / "a.h5").write_bytes(b"abcdefg")
    (tmp_path / "b.h5").write_bytes(b"012346")
    os.remove(tmp_path / "c.h5")
    problems = check_file_manifest(str(tmp_path), manifest)
    assert [problem.split(" ", 1)[0] for problem in problems] == [
        str(tmp_path / name) for name in ("a.h5", "b.h5", "c.h5")
    ]
    assert "7 bytes where 6 were written (grown)" in problems[0]
    assert "SHA-256 differs" in problems[1] and problems[2].endswith("is missing")


def test_a_second_resume_of_a_live_run_is_refused(tmp_path):
    flags = {"dataset_name": "Synthetic", "image_height": 64}
    run_folder_path = _write_run(tmp_path, "Synthetic_resnet18", flags)
    alive = subprocess.Popen(["sleep", "60"])
    try:
        with open(os.path.join(run_folder_path, RUN_INCOMPLETE_FILE_NAME), "w") as file:
            file.write(f"Started by process {alive.pid} on {socket.gethostname()}.\n")
        with pytest.raises(ResumeError, match=rf"still running \(process {alive.pid}\)"):
            find_run_to_resume(str(tmp_path), "Synthetic_resnet18", flags)
    finally:
        alive.kill()
        alive.wait()
    # Once that process is gone, the same run can be resumed.
    assert find_run_to_resume(str(tmp_path), "Synthetic_resnet18", flags)[0] == run_folder_path


def test_a_stop_at_once_while_saving_leaves_the_previous_files_and_no_temporary_one(
    tmp_path, monkeypatch
):
    model = _build_tiny(0)
    file_path = str(tmp_path / "inference_model.h5")
    atomic_save_weights(model, file_path)
    saved_bytes = open(file_path, "rb").read()
    manager = RunStateManager(str(tmp_path), model)
    manager.save(RunState(epoch=1, stage="trainable", stream_batch_index=1))

    def stopped_halfway(path, *args, **kwargs):
        with open(path, "wb") as file:
            file.write(b"\x89HDF\r\n\x1a\n partial")
        raise RunInterrupted(signal.SIGINT, at_step_boundary=False)

    with pytest.raises(RunInterrupted):
        atomic_save_weights(types.SimpleNamespace(save_weights=stopped_halfway), file_path)
    assert open(file_path, "rb").read() == saved_bytes
    monkeypatch.setattr(
        tf.train.Checkpoint, "write", lambda self, prefix: stopped_halfway(prefix + ".index")
    )
    with pytest.raises(RunInterrupted):
        manager.save(RunState(epoch=2, stage="trainable", stream_batch_index=2))
    assert sorted(os.listdir(tmp_path)) == ["checkpoints", "inference_model.h5"]
    assert os.listdir(tmp_path / "checkpoints") == ["epoch_0001"]
    assert verify_checkpoint(str(tmp_path / "checkpoints" / "epoch_0001")) is None
