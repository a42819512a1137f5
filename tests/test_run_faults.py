"""Faults met by a whole run, in-process: a full disk, then --resume of two mutual models.

The run is `run_experiment` on a tiny Synthetic set (64x32, resnet18); the stop signals are sent
to real runs of solution.py in test_run_resilience.py.
"""

import errno
import json
import os
import types

import pandas as pd
import pytest

from applications.config import build_experiment_config
from applications.core.atomic_files import CheckpointWriteError
from applications.core.backend import tf
from applications.experiment import _check_best_weights, run_experiment
from applications.run_state import (
    RUN_FAILED_FILE_NAME,
    RUN_INCOMPLETE_FILE_NAME,
    RunState,
    RunStateManager,
    check_file_manifest,
    file_manifest,
    verify_checkpoint,
)
from tests.config_fixtures import TINY_RUN_SETTINGS
from tests.dataset_fixtures import tree_digest

TINY = dict(
    TINY_RUN_SETTINGS,
    region_num=0,
    identity_num_per_batch=2,
    steps_per_epoch=1,
    evaluate_before_training=False,
)


def _history_epochs(run_folder_path):
    return pd.read_csv(os.path.join(run_folder_path, "history.csv"))["epoch"].tolist()


@pytest.mark.slow
def test_two_models_after_a_full_disk_resume_with_each_epoch_once_and_every_file_whole(
    tmp_path, monkeypatch
):
    original_write = tf.train.Checkpoint.write
    writes = []

    def write_then_disk_full(self, file_prefix, *args, **kwargs):
        writes.append(file_prefix)
        if len(writes) == 2:  # epoch 2: the disk fills up halfway through its data file
            with open(file_prefix + ".data-00000-of-00001", "wb") as file:
                file.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return original_write(self, file_prefix, *args, **kwargs)

    settings = dict(
        TINY,
        model_num=2,
        epoch_num=2,
        evaluate_testing_every_N_epochs=1,
        root_folder_path=str(tmp_path / "data"),
        output_folder_path=str(tmp_path / "outputs"),
    )
    monkeypatch.setattr(tf.train.Checkpoint, "write", write_then_disk_full)
    with pytest.raises(CheckpointWriteError) as raised:
        run_experiment(build_experiment_config(**settings))
    monkeypatch.undo()
    # What solution.py prints after "Error: ": one line naming the epoch, the cause, the fix.
    message = str(raised.value)
    assert "\n" not in message
    assert "epoch 2" in message and "No space left on device" in message
    assert "(epoch 1) is intact" in message and "--resume_from" in message
    run_folder_path = str(tmp_path / "outputs" / "Synthetic_resnet18")
    assert os.listdir(os.path.join(run_folder_path, "checkpoints")) == ["epoch_0001"]
    assert verify_checkpoint(os.path.join(run_folder_path, "checkpoints", "epoch_0001")) is None
    assert "No space left" in open(os.path.join(run_folder_path, RUN_FAILED_FILE_NAME)).read()
    assert os.path.isfile(os.path.join(run_folder_path, RUN_INCOMPLETE_FILE_NAME))
    # Epoch 1 was the best so far: every model's files are recorded with its checkpoint.
    state = RunStateManager(run_folder_path, None).read_state()
    assert state.epoch == 1 and state.best_epoch == 1
    assert sorted(state.best_weights_files) == [
        os.path.join(f"model_{index}", name)
        for index in (1, 2)
        for name in ("inference_model.h5", "training_model.h5")
    ]
    data_digest = tree_digest(tmp_path / "data")

    outcome = run_experiment(build_experiment_config(**settings, resume=True))
    assert outcome.output_folder_path == run_folder_path
    assert _history_epochs(run_folder_path) == [1, 2]
    history = pd.read_csv(os.path.join(run_folder_path, "history.csv"))
    assert {"model_1_loss", "model_2_loss", "test_model_2_mAP"} <= set(history.columns)
    for name in (RUN_INCOMPLETE_FILE_NAME, RUN_FAILED_FILE_NAME):
        assert not os.path.exists(os.path.join(run_folder_path, name))
    metrics = json.load(open(os.path.join(run_folder_path, "metrics.json")))
    assert metrics["best_epoch"] in (1, 2) and "final" in metrics
    checkpoints = RunStateManager(run_folder_path, None).list_checkpoints()
    assert [epoch for epoch, _ in checkpoints] == [1, 2]
    assert all(verify_checkpoint(path) is None for _, path in checkpoints)
    state = RunStateManager(run_folder_path, None).read_state()
    assert state.epoch == 2 and len(state.best_weights_files) == 4
    assert check_file_manifest(run_folder_path, state.best_weights_files) == []
    # The dataset folder is read, never written.
    assert tree_digest(tmp_path / "data") == data_digest


def _resumed_run(tmp_path, *, epoch, best_epoch):
    (tmp_path / "inference_model.h5").write_bytes(b"weights of the best epoch")
    manifest = file_manifest(str(tmp_path), ["inference_model.h5"])
    state = RunState(
        epoch=epoch,
        stage="trainable",
        stream_batch_index=epoch,
        best_value=0.5,
        best_epoch=best_epoch,
        best_weights_files=manifest,
    )
    return types.SimpleNamespace(state=state, run_folder_path=str(tmp_path)), manifest


def test_whole_best_weights_keep_the_best_record(tmp_path):
    run, manifest = _resumed_run(tmp_path, epoch=3, best_epoch=2)
    assert _check_best_weights(run, save_weights=None) == (0.5, 2, {"files": manifest})


def test_damaged_best_weights_of_the_checkpoints_epoch_are_rewritten_from_it(tmp_path, capsys):
    run, _ = _resumed_run(tmp_path, epoch=3, best_epoch=3)
    (tmp_path / "inference_model.h5").write_bytes(b"weights of the best")  # cut short
    rewritten = {"inference_model.h5": {"size": 1, "sha256": "new"}}
    assert _check_best_weights(run, save_weights=lambda: rewritten) == (
        0.5,
        3,
        {"files": rewritten},
    )
    assert "Rewrote the best weights of epoch 3" in capsys.readouterr().out


def test_damaged_best_weights_of_an_older_epoch_restart_the_best_record(tmp_path, capsys):
    run, _ = _resumed_run(tmp_path, epoch=3, best_epoch=2)
    os.remove(tmp_path / "inference_model.h5")
    assert _check_best_weights(run, save_weights=None) == (None, None, {"files": {}})
    output = capsys.readouterr().out
    assert "inference_model.h5 is missing" in output and "best record restarts" in output
