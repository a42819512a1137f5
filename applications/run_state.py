"""What a run needs to survive interruption: resumable checkpoints, run markers, file manifests.

Its files are written whole or not at all (`applications.core.atomic_files`).

A run folder holds, besides its results:
- `checkpoints/epoch_NNNN/`: the state after epoch NNNN: model weights and optimizer state
  (moments and iteration count) in a `tf.train.Checkpoint`, and `state.json` with the epoch,
  the training stage, the data stream position, the best-metric record, the history rows and
  the results so far. Each is written into a temporary folder beside it, flushed to disk, then
  renamed: a rename is atomic, so an `epoch_*` folder is always whole, whenever the process
  dies. The newest `max_to_keep` are kept. `state.json` also records the size and SHA-256 of
  every other file of the checkpoint (`files`) and of the best-weights files written so far
  (`best_weights_files`): a file damaged later (a failing disk, a full quota, a copy cut
  short) is found before it is trusted, and `--resume` falls back to the newest whole
  checkpoint.
- `RUN_INCOMPLETE.txt` from the start until the run completes: a folder that still has it
  after the process ended was interrupted, and can be resumed.
- `RUN_FAILED.txt` with the reason when the run stopped on an error.

The data stream needs no state of its own: the identity sampler and the augmentation are
functions of the seed and the position in the stream (`datasets.sampler`), so the position,
epochs done times steps per epoch, restores both.
"""

import contextlib
import dataclasses
import glob
import hashlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time

from absl import logging

from applications.config import resume_matching_flag_names
from applications.core.atomic_files import (
    TEMPORARY_PREFIX,
    CheckpointWriteError,
    atomic_write_json,
    atomic_write_text,
    fsync_folder,
)
from applications.core.backend import tf

CHECKPOINT_FOLDER_NAME = "checkpoints"
STATE_FILE_NAME = "state.json"
RUN_INCOMPLETE_FILE_NAME = "RUN_INCOMPLETE.txt"
RUN_FAILED_FILE_NAME = "RUN_FAILED.txt"
FLAGS_FILE_NAME = "flags.json"
_CHECKPOINT_PREFIX = "checkpoint"
_EPOCH_FOLDER_PATTERN = re.compile(r"^epoch_(\d+)$")

# Settings that shape the model, the data or the data stream: a resumed run must use the
# values the run started with (the config fields marked must_match_on_resume). Others
# (epoch_num, learning rates, evaluation settings) may change on resume; the run says which did.
RESUME_MATCHING_FLAG_NAMES = resume_matching_flag_names()


class ResumeError(ValueError):
    """There is no run to resume, or the run does not fit the flags given now."""


def _first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# --- File manifests -----------------------------------------------------------------------------


def _sha256(file_path):
    digest = hashlib.sha256()
    with open(file_path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_manifest(folder_path, relative_paths):
    """The size and SHA-256 of files, to check later that they are still what was written.

    Args:
        folder_path: str, the folder the paths are relative to.
        relative_paths: iterable of str, e.g. "model_1/inference_model.h5".

    Returns:
        dict relative path -> {"size": int (bytes), "sha256": str (hex)}.
    """
    manifest = {}
    for relative_path in relative_paths:
        file_path = os.path.join(folder_path, relative_path)
        manifest[relative_path] = {"size": os.path.getsize(file_path), "sha256": _sha256(file_path)}
    return manifest


def check_file_manifest(folder_path, manifest):
    """What differs between files on disk and the manifest written with them.

    Args:
        folder_path: str, the folder the manifest's paths are relative to.
        manifest: dict from `file_manifest`.

    Returns:
        list of str, one per damaged file, naming it and what is wrong (empty: all whole).
    """
    problems = []
    for relative_path, expected in sorted(manifest.items()):
        file_path = os.path.join(folder_path, relative_path)
        try:
            size = os.path.getsize(file_path)
        except OSError:
            problems.append(f"{file_path} is missing")
            continue
        if size != expected["size"]:
            problems.append(
                f"{file_path} is {size} bytes where {expected['size']} were written "
                f"({'truncated' if size < expected['size'] else 'grown'})"
            )
            continue
        try:
            if _sha256(file_path) != expected["sha256"]:
                problems.append(f"{file_path} has other bytes than were written (SHA-256 differs)")
        except OSError as error:
            problems.append(f"{file_path} cannot be read ({_first_line(error)})")
    return problems


# --- Checks before work starts ------------------------------------------------------------------


def check_output_folder_writable(output_folder_path, flag_name="--output_folder_path"):
    """Makes sure run folders can be created in `output_folder_path`, before any work starts.

    Creates the folder (and its parents) when missing, then creates and removes a temporary
    file in it.

    Raises:
        ValueError: the path is a file, or the folder cannot be created or written to; the
            message names the flag and the path.
    """
    path = os.path.abspath(output_folder_path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"{flag_name} {output_folder_path} is a file, not a folder; pass a folder for the "
            "results."
        )
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(
            f"{flag_name} {output_folder_path} is not writable ({_first_line(error)}); pass a "
            "folder you can write to."
        ) from None


# --- Run markers --------------------------------------------------------------------------------


def mark_run_started(run_folder_path, *, resume_hint=""):
    """Marks the run folder as incomplete until `mark_run_completed`; clears an old failure."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(run_folder_path, RUN_FAILED_FILE_NAME))
    atomic_write_text(
        os.path.join(run_folder_path, RUN_INCOMPLETE_FILE_NAME),
        "This run has not completed: it is still running, or it was interrupted.\n"
        f"Started or resumed: {time.strftime('%Y-%m-%d %H:%M:%S')} by process {os.getpid()} on "
        f"{socket.gethostname()}.\n" + (f"To continue it: {resume_hint}\n" if resume_hint else ""),
    )


def mark_run_completed(run_folder_path):
    """Removes the incomplete marker: the run finished and wrote its results."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(run_folder_path, RUN_INCOMPLETE_FILE_NAME))


def mark_run_failed(run_folder_path, reason):
    """Writes RUN_FAILED.txt with `reason`; the incomplete marker stays (it can be resumed)."""
    atomic_write_text(
        os.path.join(run_folder_path, RUN_FAILED_FILE_NAME),
        f"This run failed at {time.strftime('%Y-%m-%d %H:%M:%S')}:\n{reason}\n",
    )


def read_run_status(run_folder_path):
    """Returns "failed", "incomplete" or "completed" from the run folder's markers."""
    if os.path.isfile(os.path.join(run_folder_path, RUN_FAILED_FILE_NAME)):
        return "failed"
    if os.path.isfile(os.path.join(run_folder_path, RUN_INCOMPLETE_FILE_NAME)):
        return "incomplete"
    return "completed"


def _marker_process_id(run_folder_path):
    """The process id and host written in RUN_INCOMPLETE.txt, or (None, None)."""
    try:
        with open(os.path.join(run_folder_path, RUN_INCOMPLETE_FILE_NAME)) as file:
            match = re.search(r"by process (\d+) on (\S+)\.", file.read())
    except OSError:
        return None, None
    return (int(match.group(1)), match.group(2)) if match else (None, None)


def _is_process_alive(process_id):
    try:
        os.kill(process_id, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- Resumable checkpoints ----------------------------------------------------------------------


@dataclasses.dataclass
class RunState:
    """Everything but the tensors that a resumed run restores.

    Attributes:
        epoch: int, epochs completed (the resumed run starts at this 0-based epoch).
        stage: str, "frozen" or "trainable", the backbone's stage in the last completed epoch.
        stream_batch_index: int, training batches consumed so far (the data stream position).
        monitor: str, the metric the best weights are chosen by.
        best_value: float or None, its best value so far.
        best_epoch: int or None, the 1-based epoch of that value.
        history_rows: list of dicts, one per completed epoch, as the history CSV holds them.
        extra: dict, JSON-able results to carry over (e.g. the untrained model's metrics).
        best_weights_files: dict, `file_manifest` of the best-weights files (relative to the
            run folder) as they were written at best_epoch; empty when none were written.
        checkpoint_folder_path: str, the folder this state was read from ("" before saving).
        skipped_checkpoints: list of (folder path, reason): newer checkpoints that `restore`
            found damaged and passed over (not saved).
    """

    epoch: int
    stage: str
    stream_batch_index: int
    monitor: str = ""
    best_value: float | None = None
    best_epoch: int | None = None
    history_rows: list = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)
    best_weights_files: dict = dataclasses.field(default_factory=dict)
    checkpoint_folder_path: str = ""
    skipped_checkpoints: list = dataclasses.field(default_factory=list)


# Fields of RunState that describe where it was read from, not the run: never saved.
_UNSAVED_STATE_FIELDS = ("checkpoint_folder_path", "skipped_checkpoints")
# Key of state.json holding the manifest of the checkpoint's other files.
_FILES_KEY = "files"


def verify_checkpoint(checkpoint_folder_path):
    """Checks a checkpoint folder against the manifest its state.json holds.

    Args:
        checkpoint_folder_path: str, a `checkpoints/epoch_NNNN` folder.

    Returns:
        str naming the damaged file and what is wrong, or None when the checkpoint is whole
        (or was written before manifests were recorded: then only its state.json is checked).
    """
    state_file_path = os.path.join(checkpoint_folder_path, STATE_FILE_NAME)
    try:
        with open(state_file_path) as file:
            content = json.load(file)
        if not isinstance(content, dict) or "epoch" not in content:
            raise ValueError("it holds no epoch")
    except (OSError, ValueError) as error:
        return f"{state_file_path} is not a readable state ({_first_line(error)})"
    manifest = content.get(_FILES_KEY)
    if manifest is None:
        return None
    problems = check_file_manifest(checkpoint_folder_path, manifest)
    return "; ".join(problems) if problems else None


class RunStateManager:
    """Writes and reads the resumable checkpoints of one run folder.

    Args:
        run_folder_path: str, the run's output folder.
        training_model: the compiled training model; its weights and its optimizer's state
            (slots for every variable, built at compile, and the iteration count) are saved.
        max_to_keep: int >= 1, newest checkpoints kept; older ones (this run's own files) are
            removed once a newer one is complete.
        is_chief: False on non-chief workers of a multi-worker run: they write to a temporary
            folder that is removed (see atomic_save_weights).
    """

    def __init__(self, run_folder_path, training_model, *, max_to_keep=2, is_chief=True):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be at least 1, got {max_to_keep}.")
        self.run_folder_path = run_folder_path
        self.checkpoint_folder_path = os.path.join(run_folder_path, CHECKPOINT_FOLDER_NAME)
        self.training_model = training_model
        self.max_to_keep = max_to_keep
        self.is_chief = is_chief

    def _checkpoint(self):
        # The model tracks its layers' variables; the optimizer holds the moments and the
        # iteration count (and, under float16, the loss scale).
        return tf.train.Checkpoint(
            model=self.training_model, optimizer=self.training_model.optimizer
        )

    def list_checkpoints(self):
        """Returns [(epoch, folder path)] of the complete checkpoints, oldest first."""
        found = []
        for path in glob.glob(os.path.join(self.checkpoint_folder_path, "epoch_*")):
            match = _EPOCH_FOLDER_PATTERN.match(os.path.basename(path))
            if match and os.path.isfile(os.path.join(path, STATE_FILE_NAME)):
                found.append((int(match.group(1)), path))
        return sorted(found)

    def newest_whole_epoch(self):
        """The epoch of the newest checkpoint that `verify_checkpoint` finds whole, or None."""
        for epoch, path in reversed(self.list_checkpoints()):
            if verify_checkpoint(path) is None:
                return epoch
        return None

    def save(self, state):
        """Writes the checkpoint of `state.epoch` atomically, then prunes older ones.

        Args:
            state: RunState of the epoch just completed.

        Returns:
            str, the checkpoint folder written (a removed temporary one on non-chief workers).

        Raises:
            CheckpointWriteError: writing failed (disk full, no permission); the previous
                checkpoints are intact, and the temporary folder is removed.
        """
        name = f"epoch_{state.epoch:04d}"
        if not self.is_chief:
            with tempfile.TemporaryDirectory() as folder_path:
                self._checkpoint().write(os.path.join(folder_path, _CHECKPOINT_PREFIX))
            return folder_path
        os.makedirs(self.checkpoint_folder_path, exist_ok=True)
        final_path = os.path.join(self.checkpoint_folder_path, name)
        temporary_path = os.path.join(
            self.checkpoint_folder_path, f"{TEMPORARY_PREFIX}{name}_{os.getpid()}"
        )
        try:
            shutil.rmtree(temporary_path, ignore_errors=True)
            os.makedirs(temporary_path)
            self._checkpoint().write(os.path.join(temporary_path, _CHECKPOINT_PREFIX))
            for file_name in os.listdir(temporary_path):
                with open(os.path.join(temporary_path, file_name), "rb+") as file:
                    os.fsync(file.fileno())
            content = dataclasses.asdict(state)
            for name in _UNSAVED_STATE_FIELDS:
                content.pop(name)
            content["saved_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
            # Hashed as read back from disk, so the manifest is what a resume will find.
            content[_FILES_KEY] = file_manifest(temporary_path, sorted(os.listdir(temporary_path)))
            with open(os.path.join(temporary_path, STATE_FILE_NAME), "w") as file:
                json.dump(content, file, indent=2, sort_keys=True)
                file.flush()
                os.fsync(file.fileno())
            fsync_folder(temporary_path)
            if os.path.exists(final_path):
                # Only after a resume from an older checkpoint: the newer state is replaced.
                shutil.rmtree(final_path)
            os.replace(temporary_path, final_path)
            fsync_folder(self.checkpoint_folder_path)
        except (OSError, RuntimeError, ValueError, tf.errors.OpError) as error:
            shutil.rmtree(temporary_path, ignore_errors=True)
            previous = self.list_checkpoints()
            kept = f"epoch {previous[-1][0]}" if previous else "none yet"
            raise CheckpointWriteError(
                f"Could not write the checkpoint of epoch {state.epoch} to "
                f"{self.checkpoint_folder_path}: {_first_line(error)}. The previous checkpoint "
                f"({kept}) is intact; free space or fix the permissions, then resume with "
                f"--resume_from {self.run_folder_path}."
            ) from error
        except BaseException:
            shutil.rmtree(temporary_path, ignore_errors=True)
            raise
        self._prune()
        logging.debug("Checkpoint of epoch %d written to %s.", state.epoch, final_path)
        return final_path

    def _prune(self):
        checkpoints = self.list_checkpoints()
        for _, path in checkpoints[: -self.max_to_keep]:
            shutil.rmtree(path, ignore_errors=True)
        # Temporary folders of this run's earlier, killed processes.
        for path in glob.glob(os.path.join(self.checkpoint_folder_path, TEMPORARY_PREFIX + "*")):
            if not path.endswith(f"_{os.getpid()}"):
                shutil.rmtree(path, ignore_errors=True)

    def read_state(self, checkpoint_folder_path=None):
        """Reads the RunState of the newest checkpoint (or of the given folder), no tensors.

        Raises:
            ResumeError: the run folder has no complete checkpoint.
        """
        if checkpoint_folder_path is None:
            checkpoints = self.list_checkpoints()
            if not checkpoints:
                raise ResumeError(
                    f"Nothing to resume in {self.run_folder_path}: it has no complete checkpoint "
                    "(the run stopped before finishing its first epoch). Start a new run instead."
                )
            checkpoint_folder_path = checkpoints[-1][1]
        with open(os.path.join(checkpoint_folder_path, STATE_FILE_NAME)) as file:
            content = json.load(file)
        fields = {field.name for field in dataclasses.fields(RunState)}
        state = RunState(**{key: value for key, value in content.items() if key in fields})
        state.checkpoint_folder_path = checkpoint_folder_path
        return state

    def _read_tensors(self, checkpoint_folder_path):
        """Loads one checkpoint's tensors; returns None, or why the files could not be read.

        Raises:
            ResumeError: the checkpoint is readable but does not fit the model.
        """
        prefix = os.path.join(checkpoint_folder_path, _CHECKPOINT_PREFIX)
        try:
            status = self._checkpoint().read(prefix)
            status.assert_existing_objects_matched()
        except (AssertionError, ValueError) as error:
            raise ResumeError(
                f"The checkpoint {checkpoint_folder_path} does not fit the model built "
                f"from the flags: {_first_line(error)}. Resume with the flags the run started "
                "with (its flags.json)."
            ) from None
        except (IndexError, OSError, tf.errors.OpError) as error:
            # Damage the manifest did not catch (a checkpoint written before manifests).
            return f"its files in {checkpoint_folder_path} cannot be read ({_first_line(error)})"
        return None

    def restore(self, checkpoint_folder_path=None):
        """Loads the newest whole checkpoint's weights and optimizer state into the model.

        Call it after compiling the model (the optimizer is built there on every variable).
        Each checkpoint is first checked against the manifest in its state.json; a damaged
        one is passed over for the one before it, and named in `skipped_checkpoints`.

        Args:
            checkpoint_folder_path: str or None, restore this checkpoint only.

        Returns:
            RunState of the restored checkpoint.

        Raises:
            ResumeError: no checkpoint, none whole, or one that does not fit the model.
        """
        if checkpoint_folder_path is None:
            candidates = [path for _, path in reversed(self.list_checkpoints())]
        else:
            candidates = [checkpoint_folder_path]
        if not candidates:
            self.read_state()  # raises the "nothing to resume" error
        skipped = []
        for path in candidates:
            problem = verify_checkpoint(path) or self._read_tensors(path)
            if problem is None:
                state = self.read_state(path)
                state.skipped_checkpoints = skipped
                return state
            logging.info("Checkpoint %s skipped: %s.", path, problem)
            skipped.append((path, problem))
        reasons = "; ".join(f"{os.path.basename(path)}: {problem}" for path, problem in skipped)
        raise ResumeError(
            f"Nothing to resume in {self.run_folder_path}: no checkpoint is whole ({reasons}). "
            "Start a new run without --resume."
        )


# --- Finding the run to resume ------------------------------------------------------------------


def _flatten(content):
    """{"a": {"b": 1}} -> {"b": 1}: flag files may group the settings by section."""
    flat = {}
    for key, value in content.items():
        if isinstance(value, dict):
            flat.update(_flatten(value))
        else:
            flat[key] = value
    return flat


def _values_equal(saved, current):
    if isinstance(saved, float) or isinstance(current, float):
        try:
            return math.isclose(float(saved), float(current), rel_tol=1e-9, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    if isinstance(saved, list | tuple) and isinstance(current, list | tuple):
        return list(saved) == list(current)
    return saved == current


# Saved values that match whatever is current: runs written before 2026-12-03 recorded
# --mixed_precision_policy auto itself, not the policy it chose.
_SAVED_VALUES_MATCHING_ANY = {"mixed_precision_policy": "auto"}


def compare_flags(run_folder_path, flag_values, matching_flag_names=RESUME_MATCHING_FLAG_NAMES):
    """Compares the flags of a run folder with the current ones.

    Args:
        run_folder_path: str, a run folder with flags.json.
        flag_values: dict name -> value (may be grouped by section), the current settings.
        matching_flag_names: names that must be equal for a resume.

    Returns:
        (mismatched, changed): lists of (name, saved value, current value); `mismatched` for
        names in matching_flag_names, `changed` for the others.
    """
    with open(os.path.join(run_folder_path, FLAGS_FILE_NAME)) as file:
        saved = _flatten(json.load(file))
    current = _flatten(flag_values)
    mismatched, changed = [], []
    for name in sorted(set(saved) & set(current)):
        if saved[name] == _SAVED_VALUES_MATCHING_ANY.get(name, ()):
            continue
        if not _values_equal(saved[name], current[name]):
            target = mismatched if name in matching_flag_names else changed
            target.append((name, saved[name], current[name]))
    return mismatched, changed


def _describe_differences(differences):
    return ", ".join(
        f"--{name}: run {saved!r}, now {current!r}" for name, saved, current in differences
    )


def _resume_candidates(output_folder_path, run_name, resume_from):
    """The run folders `--resume` may continue: --resume_from's, or the run_name ones.

    Raises:
        ResumeError: --resume_from is not a run folder of this project.
    """
    if resume_from:
        run_folder_path = os.path.abspath(resume_from)
        if not os.path.isfile(os.path.join(run_folder_path, FLAGS_FILE_NAME)):
            raise ResumeError(
                f"--resume_from {resume_from} is not a run folder written by this project (no "
                f"{FLAGS_FILE_NAME}); pass a folder under --output_folder_path."
            )
        return [run_folder_path]
    pattern = re.compile(rf"^{re.escape(run_name)}(_\d+)?$")
    root = os.path.abspath(output_folder_path)
    return [
        os.path.join(root, name)
        for name in (os.listdir(root) if os.path.isdir(root) else [])
        if pattern.match(name) and os.path.isfile(os.path.join(root, name, FLAGS_FILE_NAME))
    ]


def _resumable_runs(candidates):
    """[(modification time of the newest checkpoint, path)] of the unfinished candidates."""
    resumable = []
    for path in candidates:
        if read_run_status(path) == "completed":
            continue
        checkpoints = RunStateManager(path, None).list_checkpoints()
        if checkpoints:
            resumable.append((os.path.getmtime(checkpoints[-1][1]), path))
    return resumable


def _nothing_to_resume_error(output_folder_path, run_name, resume_from, candidates):
    """The ResumeError for candidates none of which can be resumed."""
    where = resume_from or f"{output_folder_path} (runs named {run_name}, {run_name}_2, ...)"
    finished = [path for path in candidates if read_run_status(path) == "completed"]
    reason = (
        f"Nothing to resume in {where}: "
        + (
            "the run has completed."
            if resume_from and finished
            else "no unfinished run with a complete checkpoint (one is written after each epoch)."
        )
        + " Start a new run without --resume."
    )
    return ResumeError(reason)


def _check_not_running(path):
    """Raises ResumeError when another live process on this host holds the run's marker."""
    process_id, host = _marker_process_id(path)
    if (
        process_id is not None
        and process_id != os.getpid()
        and host == socket.gethostname()
        and _is_process_alive(process_id)
    ):
        raise ResumeError(
            f"The run in {path} is still running (process {process_id}); wait for it or stop "
            "it before resuming."
        )


def find_run_to_resume(
    output_folder_path,
    run_name,
    flag_values,
    *,
    resume_from=None,
    matching_flag_names=RESUME_MATCHING_FLAG_NAMES,
):
    """Picks the run folder that `--resume` (or `--resume_from`) continues.

    `--resume` takes the unfinished run of `run_name` (`run_name`, `run_name_2`, ...) in
    `output_folder_path` whose newest checkpoint is the most recent, among those started with
    the same model- and data-shaping flags.

    Args:
        output_folder_path: str, the folder holding run folders.
        run_name: str, e.g. "Synthetic_resnet18".
        flag_values: dict, the current settings (names as in flags.json).
        resume_from: str or None, an explicit run folder.
        matching_flag_names: names that must match the run's saved flags.

    Returns:
        (run folder path, changed flags as a list of (name, saved, current)).

    Raises:
        ResumeError: nothing to resume, the run is still running, or the flags differ; the
            message says which and what to do.
    """
    candidates = _resume_candidates(output_folder_path, run_name, resume_from)
    resumable = _resumable_runs(candidates)
    if not resumable:
        raise _nothing_to_resume_error(output_folder_path, run_name, resume_from, candidates)
    first_mismatch = None
    for _, path in sorted(resumable, reverse=True):
        mismatched, changed = compare_flags(path, flag_values, matching_flag_names)
        if mismatched:
            first_mismatch = first_mismatch or (path, mismatched)
            continue
        _check_not_running(path)
        return path, changed
    path, mismatched = first_mismatch
    raise ResumeError(
        f"Cannot resume {path}: flags that shape the model or the data differ from the run's "
        f"({_describe_differences(mismatched)}). Resume with the run's values (see its "
        f"{FLAGS_FILE_NAME}), or start a new run without --resume."
    )


# --- The run folder of one process --------------------------------------------------------------

# Options that say how to run, not what: they never block a resume, nor are reported as changed.
_RUNNING_OPTION_NAMES = (
    "resume",
    "resume_from",
    "distribution_strategy",
    "cpu_logical_devices",
    "jit_compile",
    "output_folder_path",
)


@dataclasses.dataclass
class RunFolder:
    """Where one process of a run reads and writes.

    Attributes:
        run_folder_path: str, the run's folder (on non-chief workers of a new run, a temporary
            folder: they do not know the chief's).
        writing_folder_path: str, where this process writes: the run folder on the chief, a
            temporary folder (removed by `close`) on other workers.
        is_chief: bool.
        manager: RunStateManager of the run folder.
        state: RunState restored when resuming, else None.
        extra: dict, results carried in each checkpoint (the run's metrics so far).
    """

    run_folder_path: str
    writing_folder_path: str
    is_chief: bool
    manager: RunStateManager
    state: RunState | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def initial_epoch(self):
        return self.state.epoch if self.state is not None else 0

    def mark_failed(self, reason):
        if self.is_chief:
            with contextlib.suppress(OSError):
                mark_run_failed(self.run_folder_path, reason)

    def mark_completed(self):
        if self.is_chief:
            mark_run_completed(self.run_folder_path)

    def close(self):
        """Removes a non-chief worker's temporary folder."""
        if not self.is_chief:
            shutil.rmtree(self.writing_folder_path, ignore_errors=True)


def _restored_run_folder(run_folder_path, changed, training_model, is_chief):
    """RunFolder of a run to resume, its newest whole checkpoint restored into the model.

    Prints the damaged checkpoints passed over, the epoch resumed after and the flags changed
    since the run started (`changed`, from find_run_to_resume).
    """
    manager = RunStateManager(run_folder_path, training_model, is_chief=is_chief)
    state = manager.restore()
    writing_folder_path = run_folder_path if is_chief else tempfile.mkdtemp(prefix="worker_")
    for path, problem in state.skipped_checkpoints:
        print(f"Skipped the damaged checkpoint {os.path.basename(path)}: {problem}.")
    print(
        f"Resuming {run_folder_path} after epoch {state.epoch} "
        f"(checkpoint {os.path.basename(state.checkpoint_folder_path)})."
    )
    if changed:
        print("  changed since the run started: " + _describe_differences(changed))
    return RunFolder(
        run_folder_path, writing_folder_path, is_chief, manager, state, dict(state.extra)
    )


def open_run_folder(
    output_folder_path,
    run_name,
    flag_values,
    *,
    training_model,
    make_output_folder,
    resume=False,
    resume_from=None,
    is_chief=True,
    matching_flag_names=RESUME_MATCHING_FLAG_NAMES,
):
    """Creates a new run folder, or finds and restores the run to resume, and marks it started.

    Args:
        output_folder_path: str, the folder holding run folders.
        run_name: str, e.g. "Synthetic_resnet18".
        flag_values: dict, every setting by flag name (written to flags.json for a new run).
        training_model: the compiled training model (restored when resuming).
        make_output_folder: callable (output_folder_path, run_name) -> str, creates a fresh
            run folder.
        resume: bool, continue the most recent matching unfinished run.
        resume_from: str or None, continue this run folder.
        is_chief: bool, False on non-chief workers (they write into a temporary folder).
        matching_flag_names: settings that must match the run's when resuming.

    Returns:
        RunFolder.

    Raises:
        ResumeError: nothing to resume, or flags that differ; the message says what to do.
    """
    if resume or resume_from:
        run_folder_path, changed = find_run_to_resume(
            output_folder_path,
            run_name,
            {k: v for k, v in flag_values.items() if k not in _RUNNING_OPTION_NAMES},
            resume_from=resume_from,
            matching_flag_names=matching_flag_names,
        )
        run_folder = _restored_run_folder(run_folder_path, changed, training_model, is_chief)
    elif is_chief:
        run_folder_path = make_output_folder(output_folder_path, run_name)
        if os.path.basename(run_folder_path) != run_name:
            print(f"{run_name} already exists in {output_folder_path}; it is left untouched.")
        atomic_write_json(os.path.join(run_folder_path, FLAGS_FILE_NAME), flag_values)
        manager = RunStateManager(run_folder_path, training_model, is_chief=True)
        run_folder = RunFolder(run_folder_path, run_folder_path, True, manager)
    else:
        temporary_path = tempfile.mkdtemp(prefix="worker_")
        manager = RunStateManager(temporary_path, training_model, is_chief=False)
        run_folder = RunFolder(temporary_path, temporary_path, False, manager)
    if is_chief:
        print(f"Writing outputs to {run_folder.run_folder_path}")
        mark_run_started(
            run_folder.run_folder_path,
            resume_hint=f"python solution.py --resume_from {run_folder.run_folder_path} (with "
            "the flags in its flags.json)",
        )
    return run_folder
