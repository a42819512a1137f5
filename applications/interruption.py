"""Stopping a run cleanly on Ctrl-C (SIGINT) or SIGTERM.

While training, the first signal asks the run to stop at the next step boundary: the step in
progress ends, no epoch-end callback of an unfinished epoch runs, so the last whole checkpoint,
the history of the completed epochs and the run's markers stay as they were. A second signal,
or one that arrives outside training (loading data, building models, the final evaluation),
stops at once. Every file the run writes is replaced atomically, so stopping at once leaves
nothing half-written either. Either way `RunInterrupted` propagates to the caller, which prints
one line and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
"""

import contextlib
import shlex
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Options that pick the run to continue: replaced by --resume_from in a resume command.
_RESUME_OPTION_NAMES = ("resume", "noresume", "resume_from")


class RunInterrupted(BaseException):
    """A stop signal ended the run; like KeyboardInterrupt, no `except Exception` catches it.

    Attributes:
        signal_number: int, the signal received.
        at_step_boundary: bool, True when the run stopped at a step boundary (first signal
            while training), False when it stopped at once.
        run_folder_path: str or None, the run folder, once one was created or found.
        checkpoint_epoch: int or None, the epoch of the newest whole checkpoint kept.
    """

    def __init__(self, signal_number, *, at_step_boundary):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number
        self.at_step_boundary = at_step_boundary
        self.run_folder_path = None
        self.checkpoint_epoch = None

    @property
    def signal_name(self):
        return signal.Signals(self.signal_number).name

    @property
    def exit_status(self):
        """int, the shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signal_number

    def describe(self, resume_command):
        """The one line a user reads.

        Args:
            resume_command: str, the command that continues the run (used only when a
                checkpoint was kept).

        Returns:
            str.
        """
        when = "at a step boundary" if self.at_step_boundary else "at once"
        line = f"Stopped by {self.signal_name} {when}."
        if self.run_folder_path is None:
            return line + " No run folder had been written; run the same command to start."
        if self.checkpoint_epoch is None:
            return (
                line + f" No epoch had completed in {self.run_folder_path}, so there is no "
                "checkpoint to resume from; run the same command to start again."
            )
        return (
            line + f" The checkpoint of epoch {self.checkpoint_epoch} is kept in "
            f"{self.run_folder_path}; to continue: {resume_command}"
        )


class StopRequest:
    """Receives the stop signals of one run and says when to stop.

    `deferred()` marks training: a first signal there is recorded, and `check()` (called by
    `callbacks.interruption.StopAtStepBoundary` after each step and epoch) raises it.
    """

    def __init__(self):
        self.signal_number = None
        self._deferring = False
        self._stopping = False

    def receive(self, signal_number, frame=None):
        """The signal handler: records the first signal while training, else stops at once."""
        if self._stopping:
            return  # already stopping: the run is writing its last line
        if self._deferring and self.signal_number is None:
            self.signal_number = signal_number
            name = signal.Signals(signal_number).name
            print(
                f"\n{name} received: stopping after this step (send it again to stop at once).",
                file=sys.stderr,
                flush=True,
            )
            return
        self.signal_number = signal_number
        self._stopping = True
        raise RunInterrupted(signal_number, at_step_boundary=False)

    def check(self):
        """Raises RunInterrupted if a signal was recorded."""
        if self.signal_number is not None and not self._stopping:
            self._stopping = True
            raise RunInterrupted(self.signal_number, at_step_boundary=True)

    @contextlib.contextmanager
    def deferred(self):
        """While training: a first signal waits for the next `check()` (or the block's end)."""
        self._deferring = True
        try:
            yield self
        finally:
            self._deferring = False
        self.check()


@contextlib.contextmanager
def handle_stop_signals(signal_numbers=STOP_SIGNALS):
    """Installs a StopRequest as the handler of the stop signals; restores the old ones after.

    Outside the main thread (where Python cannot install handlers) the request is returned
    without handlers, and the signals keep their previous behaviour.

    Yields:
        StopRequest.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.getsignal(number) for number in signal_numbers}
    for number in signal_numbers:
        signal.signal(number, request.receive)
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def resume_command(argv, run_folder_path):
    """The command line that continues a run: the same flags, with --resume_from the run.

    Args:
        argv: list of str, the interrupted command line (sys.argv: program, then flags).
        run_folder_path: str, the run folder to continue.

    Returns:
        str, a shell-quoted command, e.g. "python solution.py --epoch_num=4 --resume_from=...".
    """
    kept, skip_value = [], False
    for argument in argv[1:]:
        if skip_value:
            skip_value = False
            continue
        name = argument.lstrip("-").split("=", 1)[0]
        if argument.startswith("-") and name in _RESUME_OPTION_NAMES:
            # "--resume_from PATH" spells its value as the next argument.
            skip_value = name == "resume_from" and "=" not in argument
            continue
        kept.append(argument)
    return shlex.join(["python", argv[0], *kept, f"--resume_from={run_folder_path}"])
