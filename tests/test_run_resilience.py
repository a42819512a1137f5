"""End-to-end runs of solution.py: kill -9, Ctrl-C, SIGTERM and --resume; divergence; bad input."""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from absl import flags as absl_flags

import solution
from applications.experiment import run_experiment
from applications.run_state import (
    RUN_FAILED_FILE_NAME,
    RUN_INCOMPLETE_FILE_NAME,
    RunStateManager,
)
from tests.dataset_fixtures import tree_digest

REPOSITORY_FOLDER_PATH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_FLAGS = [
    "--dataset_name=Synthetic",
    "--synthetic_identity_num=12",
    "--synthetic_camera_num=2",
    "--synthetic_image_num_per_identity=4",
    "--backbone_model_name=resnet18",
    "--image_height=64",
    "--image_width=32",
    "--region_num=0",
    "--identity_num_per_batch=2",
    "--image_num_per_identity=2",
    "--testing_batch_size=16",
]


def _command(tmp_path, *flags):
    return [
        sys.executable,
        os.path.join(REPOSITORY_FOLDER_PATH, "solution.py"),
        f"--root_folder_path={tmp_path / 'data'}",
        f"--output_folder_path={tmp_path / 'outputs'}",
        *TINY_FLAGS,
        *flags,
    ]


def _run(tmp_path, *flags, environ=None, timeout=600):
    return subprocess.run(
        _command(tmp_path, *flags),
        cwd=REPOSITORY_FOLDER_PATH,
        env={**os.environ, **(environ or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _history_epochs(run_folder_path):
    return pd.read_csv(os.path.join(run_folder_path, "history.csv"))["epoch"].tolist()


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_runs_every_epoch_exactly_once(tmp_path):
    flags = ["--epoch_num=4", "--steps_per_epoch=6", "--evaluate_testing_every_N_epochs=2"]
    process = subprocess.Popen(
        _command(tmp_path, *flags),
        cwd=REPOSITORY_FOLDER_PATH,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    run_folder_path = tmp_path / "outputs" / "Synthetic_resnet18"
    output = []
    # Read characters (progress bars rewrite lines), and kill once epoch 3 has taken a step.
    reader = threading.Thread(
        target=lambda: output.extend(iter(lambda: process.stdout.read(1), "")), daemon=True
    )
    reader.start()
    deadline = time.monotonic() + 500
    while "/6 [" not in "".join(output).partition("Epoch 3/4")[2]:
        assert time.monotonic() < deadline, "".join(output)[-2000:]
        assert process.poll() is None, "".join(output)[-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (run_folder_path / RUN_INCOMPLETE_FILE_NAME).is_file()
    assert not (run_folder_path / "metrics.json").exists()
    assert RunStateManager(str(run_folder_path), None).read_state().epoch == 2

    completed = _run(tmp_path, *flags, "--resume")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Resuming" in completed.stdout and "after epoch 2" in completed.stdout
    assert _history_epochs(run_folder_path) == [1, 2, 3, 4]
    metrics = json.loads((run_folder_path / "metrics.json").read_text())
    assert "before_training" in metrics and "final" in metrics
    assert metrics["best_epoch"] in (2, 4)
    assert not (run_folder_path / RUN_INCOMPLETE_FILE_NAME).exists()
    assert sorted(os.listdir(run_folder_path / "checkpoints")) == ["epoch_0003", "epoch_0004"]
    # The run folder numbering was left alone: no new folder for the resumed run.
    assert os.listdir(tmp_path / "outputs") == ["Synthetic_resnet18"]
    # Nothing left to resume now.
    again = _run(tmp_path, *flags, "--resume")
    assert again.returncode == 1 and "Nothing to resume" in again.stderr
    assert "Traceback" not in again.stderr


def _signal_mid_epoch(tmp_path, flags, signal_number, *, epoch, epoch_num):
    """Runs solution.py and sends it `signal_number` once `epoch` has taken its first step."""
    process = subprocess.Popen(
        _command(tmp_path, *flags),
        cwd=REPOSITORY_FOLDER_PATH,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output, errors = [], []
    for stream, sink in ((process.stdout, output), (process.stderr, errors)):
        threading.Thread(
            target=lambda stream=stream, sink=sink: sink.extend(iter(lambda: stream.read(1), "")),
            daemon=True,
        ).start()
    deadline = time.monotonic() + 500
    while "/4 [" not in "".join(output).partition(f"Epoch {epoch}/{epoch_num}")[2]:
        assert time.monotonic() < deadline, "".join(output)[-2000:]
        assert process.poll() is None, "".join(errors)[-2000:]
        time.sleep(0.05)
    process.send_signal(signal_number)
    process.wait(timeout=300)
    time.sleep(0.5)  # the readers drain the pipes
    return subprocess.CompletedProcess(
        process.args, process.returncode, "".join(output), "".join(errors)
    )


@pytest.mark.slow
def test_sigint_and_sigterm_stop_at_a_step_and_resume_skips_a_damaged_checkpoint(tmp_path):
    flags = [
        "--epoch_num=3",
        "--steps_per_epoch=4",
        "--evaluate_testing_every_N_epochs=3",
        "--noevaluate_before_training",
        "--learning_rate_base=1e12",  # read only by --learning_rate_mode default: a warning
    ]
    run_folder_path = tmp_path / "outputs" / "Synthetic_resnet18"
    # Ctrl-C in epoch 3: epochs 1 and 2 have their checkpoints.
    first = _signal_mid_epoch(tmp_path, flags, signal.SIGINT, epoch=3, epoch_num=3)
    assert first.returncode == 130, first.stderr[-3000:]
    assert "Traceback" not in first.stderr and "KeyboardInterrupt" not in first.stderr
    assert "Warning: --learning_rate_base has no effect: it is read only with " in first.stderr
    line = first.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"Stopped by SIGINT at a step boundary. The checkpoint of epoch 2 is kept in "
        f"{run_folder_path}; to continue: python "
    ), line
    assert (run_folder_path / RUN_INCOMPLETE_FILE_NAME).is_file()
    assert not (run_folder_path / RUN_FAILED_FILE_NAME).exists()
    assert sorted(os.listdir(run_folder_path / "checkpoints")) == ["epoch_0001", "epoch_0002"]
    assert _history_epochs(run_folder_path) == [1, 2]
    data_digest = tree_digest(tmp_path / "data")

    # The newest checkpoint damaged as a failing disk leaves it: its largest file cut to half.
    newest = run_folder_path / "checkpoints" / "epoch_0002"
    damaged_file_path = max(newest.iterdir(), key=lambda path: path.stat().st_size)
    size = damaged_file_path.stat().st_size
    os.truncate(damaged_file_path, size // 2)
    # SIGTERM in the resumed run's first epoch, epoch 2 again.
    second = _signal_mid_epoch(tmp_path, [*flags, "--resume"], signal.SIGTERM, epoch=2, epoch_num=3)
    assert second.returncode == 143, second.stderr[-3000:]
    assert "Traceback" not in second.stderr
    assert (
        f"Skipped the damaged checkpoint epoch_0002: {damaged_file_path} is {size // 2} bytes "
        f"where {size} were written (truncated)."
    ) in second.stdout
    assert f"Resuming {run_folder_path} after epoch 1 (checkpoint epoch_0001)" in second.stdout
    line = second.stderr.strip().splitlines()[-1]
    assert line.startswith("Stopped by SIGTERM at a step boundary. The checkpoint of epoch 1 ")
    command = line.split("; to continue: ", 1)[1]
    assert command.endswith(f"--resume_from={run_folder_path}") and " --resume " not in command

    # The printed command, parsed as solution.py parses it, finishes the run (in-process).
    flag_values = absl_flags.FlagValues()
    solution.define_flags(flag_values)
    flag_values(shlex.split(command)[1:])
    run_experiment(solution.config_from_flags(flag_values))
    assert _history_epochs(run_folder_path) == [1, 2, 3]
    assert not (run_folder_path / RUN_INCOMPLETE_FILE_NAME).exists()
    assert "final" in json.loads((run_folder_path / "metrics.json").read_text())
    assert sorted(os.listdir(run_folder_path / "checkpoints")) == ["epoch_0002", "epoch_0003"]
    assert tree_digest(tmp_path / "data") == data_digest  # the dataset folder is only read


@pytest.mark.slow
def test_huge_learning_rate_stops_with_a_message_and_a_loadable_checkpoint(tmp_path):
    # Epoch 1 at 1e-3, then 1e6 from epoch 2 on.
    completed = _run(
        tmp_path,
        "--epoch_num=3",
        "--steps_per_epoch=3",
        "--learning_rate_mode=linear",
        "--learning_rate_start=1e-3",
        "--learning_rate_end=2e6",
        "--evaluate_testing_every_N_epochs=10",
        "--noevaluate_before_training",
    )
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    message = completed.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: Training diverged at step")
    assert "of epoch 2" in message and "learning rate too high" in message
    assert "last good checkpoint (epoch 1)" in message
    # The flags the linear mode reads (it ignores --learning_rate_base).
    assert "--learning_rate_start <lower> --learning_rate_end <lower>" in message
    run_folder_path = tmp_path / "outputs" / "Synthetic_resnet18"
    assert "diverged" in (run_folder_path / RUN_FAILED_FILE_NAME).read_text()
    assert _history_epochs(run_folder_path) == [1]
    state = RunStateManager(str(run_folder_path), None).read_state()
    assert state.epoch == 1 and [row["epoch"] for row in state.history_rows] == [1]


@pytest.mark.slow
def test_bad_inputs_are_refused_before_any_work(tmp_path):
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("")
    started = time.monotonic()
    completed = _run(tmp_path, f"--output_folder_path={a_file}")
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert "--output_folder_path" in completed.stderr and "is a file" in completed.stderr
    assert not (tmp_path / "data").exists()  # refused before generating any data

    empty = tmp_path / "training_model.h5"
    empty.write_bytes(b"")
    completed = _run(tmp_path, f"--pretrained_model_file_path={empty}")
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert completed.stderr.strip().endswith(
        f"Error: --pretrained_model_file_path {empty} is empty (0 bytes); expected an HDF5 "
        "weights file written by this project's save_weights (training_model.h5 or "
        "inference_model.h5 from a run folder)."
    )
    completed = _run(tmp_path, "--learning_rate_base=-0.001")
    assert completed.returncode == 1 and "--learning_rate_base must be above 0" in completed.stderr

    # P above the identities: refused after loading the data, before any model or evaluation.
    completed = _run(tmp_path, "--identity_num_per_batch=7")
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert "fewer than --identity_num_per_batch=7" in completed.stderr
    assert "Evaluating" not in completed.stdout
    assert not (tmp_path / "outputs").exists() or os.listdir(tmp_path / "outputs") == []
    assert time.monotonic() - started < 400


@pytest.mark.slow
def test_mirrored_run_on_two_logical_cpu_devices_finishes_with_metrics(tmp_path):
    completed = _run(
        tmp_path,
        "--epoch_num=1",
        "--steps_per_epoch=2",
        "--distribution_strategy=mirrored",
        "--cpu_logical_devices=2",
        "--identity_num_per_batch=4",  # 2 whole identities per replica
        "--noevaluate_before_training",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "MirroredStrategy over 2 replica(s)" in completed.stdout
    metrics = json.loads((tmp_path / "outputs" / "Synthetic_resnet18" / "metrics.json").read_text())
    assert 0 <= metrics["final"]["mAP"] <= 1


@pytest.mark.slow
def test_two_worker_run_on_localhost_finishes_with_metrics_written_by_the_chief(tmp_path):
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("localhost", 0))
            ports.append(probe.getsockname()[1])
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    flags = [
        "--epoch_num=1",
        "--steps_per_epoch=2",
        "--distribution_strategy=multi_worker",
        "--identity_num_per_batch=4",  # 2 whole identities per worker
    ]
    processes = [
        subprocess.Popen(
            _command(tmp_path, *flags, "--noevaluate_before_training"),
            cwd=REPOSITORY_FOLDER_PATH,
            env={
                **os.environ,
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                ),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
        assert "MultiWorkerMirroredStrategy over 2 replica(s)" in stdout
    assert os.listdir(tmp_path / "outputs") == ["Synthetic_resnet18"]
    run_folder_path = tmp_path / "outputs" / "Synthetic_resnet18"
    metrics = json.loads((run_folder_path / "metrics.json").read_text())
    assert 0 <= metrics["final"]["mAP"] <= 1
    assert _history_epochs(run_folder_path) == [1]
