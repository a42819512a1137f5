"""Stop signals: deferred to a step boundary while training, at once otherwise or when repeated."""

import os
import shlex
import signal

import pytest

from applications.interruption import (
    RunInterrupted,
    StopRequest,
    handle_stop_signals,
    resume_command,
)
from callbacks.interruption import StopAtStepBoundary

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@pytest.mark.parametrize(
    "signal_number, exit_status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)]
)
def test_a_signal_while_training_waits_for_the_step_boundary(signal_number, exit_status, capsys):
    # What was installed before (a shell that starts jobs in the background ignores SIGINT).
    previous_handlers = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    with handle_stop_signals() as request:
        callback = StopAtStepBoundary(request.check)
        with pytest.raises(RunInterrupted) as raised:
            with request.deferred():
                callback.on_train_batch_end(0)  # nothing received: goes on
                os.kill(os.getpid(), signal_number)  # a real signal, handled by the request
                steps_after_the_signal = 1  # the step in progress finishes
                callback.on_train_batch_end(1)
                steps_after_the_signal += 1
    assert steps_after_the_signal == 1
    assert raised.value.at_step_boundary and raised.value.exit_status == exit_status
    assert "stopping after this step" in capsys.readouterr().err
    # The previous handlers are back.
    assert {number: signal.getsignal(number) for number in STOP_SIGNALS} == previous_handlers


def test_a_second_signal_or_one_outside_training_stops_at_once():
    request = StopRequest()
    with pytest.raises(RunInterrupted) as raised:
        request.receive(signal.SIGINT)  # not training: at once
    assert not raised.value.at_step_boundary
    request = StopRequest()
    with pytest.raises(RunInterrupted) as raised:
        with request.deferred():
            request.receive(signal.SIGINT)  # recorded
            request.receive(signal.SIGINT)  # pressed twice: at once
    assert not raised.value.at_step_boundary


def test_signals_while_already_stopping_are_ignored():
    request = StopRequest()
    with pytest.raises(RunInterrupted):
        request.receive(signal.SIGTERM)
    request.receive(signal.SIGINT)  # while the run writes its last line: nothing raised
    request.check()
    assert request.signal_number == signal.SIGTERM


def test_a_signal_during_the_last_epochs_end_stops_when_training_ends():
    request = StopRequest()
    with pytest.raises(RunInterrupted, match="SIGTERM") as raised:
        with request.deferred():
            request.receive(signal.SIGTERM)
    assert raised.value.at_step_boundary and raised.value.exit_status == 143


def test_the_line_a_user_reads_names_the_checkpoint_and_the_resume_command():
    stopped = RunInterrupted(signal.SIGINT, at_step_boundary=True)
    assert "No run folder had been written" in stopped.describe("unused")
    stopped.run_folder_path = "/runs/Synthetic_resnet18"
    assert "No epoch had completed" in stopped.describe("unused")
    stopped.checkpoint_epoch = 2
    line = stopped.describe("python solution.py --resume_from=/runs/Synthetic_resnet18")
    assert line == (
        "Stopped by SIGINT at a step boundary. The checkpoint of epoch 2 is kept in "
        "/runs/Synthetic_resnet18; to continue: python solution.py "
        "--resume_from=/runs/Synthetic_resnet18"
    )


def test_resume_command_keeps_the_flags_and_replaces_the_run_choice():
    argv = [
        "solution.py",
        "--epoch_num=4",
        "--resume",
        "--resume_from",
        "/old run",
        "--image_height",
        "64",
        "--noresume",
        "--resume_from=/older",
    ]
    command = resume_command(argv, "/runs/my run")
    assert shlex.split(command) == [
        "python",
        "solution.py",
        "--epoch_num=4",
        "--image_height",
        "64",
        "--resume_from=/runs/my run",
    ]
