"""A run's folder: its name, a fresh folder for it, and how it is marked when the run stops.

`guarded_run()` is the block one run of `applications.experiment.run_experiment` lives in: it
installs the stop-signal handlers, restores Keras' global policy afterwards, and once the run
folder is opened (`GuardedRun.open`) marks it failed on an error, names it in an interruption,
and removes a non-chief worker's temporary folder at the end.
"""

import contextlib
import os

from applications.interruption import RunInterrupted, handle_stop_signals
from applications.precision import restored_global_policy
from applications.run_state import open_run_folder


def run_name(dataset_name, backbone_model_name):
    """The run folder's name, e.g. "Synthetic_resnet18".

    Args:
        dataset_name: str, --dataset_name (a name, or a folder path whose last part is used).
        backbone_model_name: str.

    Returns:
        str.
    """
    return f"{os.path.basename(os.path.normpath(dataset_name))}_{backbone_model_name}"


def make_output_folder(output_folder_path, run_name):
    """Creates a fresh output folder, never reusing (or deleting) an existing one.

    Args:
        output_folder_path: str, the parent folder (created when missing).
        run_name: str, the folder name wanted.

    Returns:
        str, `<output_folder_path>/<run_name>`, or `<run_name>_2`, `_3`, ... when taken.
    """
    candidate = os.path.join(os.path.abspath(output_folder_path), run_name)
    index = 1
    while True:
        try:
            os.makedirs(candidate)
            return candidate
        except FileExistsError:
            index += 1
            candidate = os.path.join(os.path.abspath(output_folder_path), f"{run_name}_{index}")


class GuardedRun:
    """The stop request of a run and, once opened, its run folder.

    Attributes:
        stop_request: applications.interruption.StopRequest of the block.
        run: applications.run_state.RunFolder, or None before `open`.
    """

    def __init__(self, stop_request):
        self.stop_request = stop_request
        self.run = None

    def open(self, output_folder_path, run_name, flag_values, **options):
        """Opens the run folder (a new one, or the run to resume); see `open_run_folder`.

        Args:
            output_folder_path: str, the folder holding run folders.
            run_name: str, see `run_name`.
            flag_values: dict, every setting by flag name.
            **options: the other keyword arguments of `open_run_folder` (training_model,
                resume, resume_from, is_chief).

        Returns:
            applications.run_state.RunFolder.
        """
        self.run = open_run_folder(
            output_folder_path,
            run_name,
            flag_values,
            make_output_folder=make_output_folder,
            **options,
        )
        return self.run


@contextlib.contextmanager
def guarded_run():
    """The block of one run: a folder an error stopped is marked failed, then closed.

    The folder keeps RUN_INCOMPLETE.txt (so --resume can continue it) and gets RUN_FAILED.txt
    with the reason. An interruption (Ctrl-C, a kill) leaves it marked incomplete only, and
    names the folder and the epoch of its newest whole checkpoint.

    Yields:
        GuardedRun.

    Raises:
        applications.interruption.RunInterrupted: SIGINT or SIGTERM stopped the run.
    """
    with handle_stop_signals() as stop_request:
        guard = GuardedRun(stop_request)
        try:
            # A run's policy (e.g. mixed_bfloat16) must not outlive it in the process.
            with restored_global_policy():
                yield guard
        except RunInterrupted as interruption:
            if guard.run is not None and guard.run.is_chief:
                interruption.run_folder_path = guard.run.run_folder_path
                interruption.checkpoint_epoch = guard.run.manager.newest_whole_epoch()
            raise
        except Exception as error:
            if guard.run is not None:
                guard.run.mark_failed(f"{type(error).__name__}: {error}")
            raise
        finally:
            if guard.run is not None:
                guard.run.close()
