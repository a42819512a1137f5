"""Files written whole or not at all: a reader sees the old file or the new one, never half.

Each is written to a temporary file in the same folder (a rename across file systems is not
atomic), flushed to disk, then renamed over the destination, and the folder entry is flushed.
A process stopped midway leaves the previous file and removes its temporary one.
"""

import contextlib
import json
import os
import tempfile

from applications.core.backend import tf

# Temporary files and folders start with it (run_state skips and prunes them by it too).
TEMPORARY_PREFIX = ".tmp_"


class CheckpointWriteError(RuntimeError):
    """A checkpoint or weights file could not be written; the previous one is intact."""


def fsync_folder(folder_path):
    """Flushes a folder's entries (a rename) to disk; a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder_path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def atomic_write_text(file_path, text):
    """Writes `text` to `file_path` so that readers see the old file or the new one, never half.

    The text goes to a temporary file in the same folder (a rename across file systems is not
    atomic), is flushed to disk, then renamed over `file_path`.

    Args:
        file_path: str, the destination.
        text: str.
    """
    folder_path = os.path.dirname(os.path.abspath(file_path))
    descriptor, temporary_path = tempfile.mkstemp(
        prefix=TEMPORARY_PREFIX + os.path.basename(file_path) + ".", dir=folder_path
    )
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary_path, file_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary_path)
        raise
    fsync_folder(folder_path)


def atomic_write_json(file_path, content):
    """Writes `content` (JSON-able) atomically, indented and with sorted keys."""
    atomic_write_text(file_path, json.dumps(content, indent=2, sort_keys=True) + "\n")


def atomic_save_weights(model, file_path, *, is_chief=True):
    """`model.save_weights(file_path)` (HDF5), replacing any previous file only once complete.

    Keras rewrites an h5 file in place, so a process killed while saving used to leave a
    truncated file in place of the previous best weights.

    Args:
        model: a keras model.
        file_path: str ending in .h5.
        is_chief: False on the other workers of a multi-worker run: they still save (reading
            synchronised variables may take part in collective operations) but into a
            temporary folder that is removed, so that only the chief writes the run's files.

    Raises:
        CheckpointWriteError: the file could not be written (disk full, no permission); the
            previous file is left as it was.
    """
    if not file_path.endswith(".h5"):
        raise ValueError(f"atomic_save_weights writes HDF5 files ending in .h5, got {file_path}.")
    if not is_chief:
        with tempfile.TemporaryDirectory() as folder_path:
            model.save_weights(os.path.join(folder_path, os.path.basename(file_path)))
        return
    folder_path = os.path.dirname(os.path.abspath(file_path))
    # The suffix must stay .h5: Keras picks the file format from it.
    temporary_path = os.path.join(
        folder_path, f"{TEMPORARY_PREFIX}{os.getpid()}_{os.path.basename(file_path)}"
    )
    try:
        model.save_weights(temporary_path)
        with open(temporary_path, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary_path, file_path)
    except (OSError, RuntimeError, ValueError, tf.errors.OpError) as error:
        with contextlib.suppress(OSError):
            os.remove(temporary_path)
        raise CheckpointWriteError(
            f"Could not write {file_path}: {_first_line(error)}. The previous file, if any, is "
            "intact."
        ) from error
    except BaseException:
        # Stopped at once (a second Ctrl-C) while saving: no temporary file is left behind.
        with contextlib.suppress(OSError):
            os.remove(temporary_path)
        raise
    fsync_folder(folder_path)


def _first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
