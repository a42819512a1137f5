"""AlignedReID's transformed dataset format: a folder with ``images/`` and ``partitions.pkl``.

The AlignedReID re-production (Huang Houjing) converts every dataset into one flat ``images/``
folder whose names are ``{identity:08d}_{camera:04d}_{index:08d}.jpg`` and a pickle of
partitions: ``trainval_im_names`` with ``trainval_ids2labels`` for training, ``test_im_names``
with ``test_marks`` (0 query, 1 gallery, 2 multi-query, which single-query evaluation ignores)
for testing, and ``train_*`` / ``val_*`` for its train/validation split. Cameras keep the
numbers of the names (0-based for CUHK03, 1-based for Market-1501 and DukeMTMC-reID);
evaluation only compares them.

AlignedReID's scripts write the pickle in protocol 2, under Python 2 or 3. Python 2 strings
arrive through ``encoding="latin1"``; some entries are NumPy string arrays. Python 3 writes
bytes in protocol 2 as calls: ``_codecs.encode(str, "latin1")``, and ``bytes()`` for an empty
one (the data of an empty array, e.g. a partition whose identities all went to validation). A
pickle can call any importable function while loading, so it is read with an unpickler that
resolves only plain containers (``set``, ``frozenset``), those two byte constructors (each
restricted to its harmless arguments) and the NumPy constructors of string and number arrays
and scalars; any other reference (a function, a class, a module) is refused before anything is
called.

AlignedReID's "combined" training set (Market-1501 + CUHK03 + DukeMTMC-reID trainval, identities
contiguous in that order) comes from our own loaders: ``--dataset_name Combined
--combined_dataset_names Market1501,CUHK03,DukeMTMC_reID`` gives exactly its labels, since the
identity offsets keep that order and the labels are the sorted identities.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping

import numpy as np
from absl import logging

from datasets import image_files, records, scanning

PARTITIONS_FILE_NAME = "partitions.pkl"
IMAGES_FOLDER_NAME = "images"
REQUIRED_PARTITION_KEYS = (
    "trainval_im_names",
    "trainval_ids2labels",
    "test_im_names",
    "test_marks",
)
TRAINSET_PARTS = ("trainval", "train")
QUERY_MARK, GALLERY_MARK, MULTI_QUERY_MARK = 0, 1, 2
# Datasets whose trainval sets AlignedReID's "combined" set joins, in its order.
ALIGNEDREID_COMBINED_DATASET_NAMES = ("Market1501", "CUHK03", "DukeMTMC_reID")

_FILE_NAME_PATTERN = re.compile(r"^(\d{8})_(\d{4})_(\d{8})\.(?:jpg|jpeg|png)$", re.IGNORECASE)


class UnsafePickleError(ValueError):
    """A pickle refers to something other than plain data; nothing of it was run."""


def _latin1_encode(text, encoding="latin1"):
    """Stands in for ``_codecs.encode``: Python 3 writes bytes in protocol 2 as this call."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("only _codecs.encode(str, 'latin1') is allowed")
    return text.encode("latin1")


def _empty_bytes(*arguments):
    """Stands in for ``bytes``: Python 3 writes an empty bytes object in protocol 2 as bytes().

    An empty NumPy array (e.g. a partition left without images) carries b"" as its data. Any
    argument (bytes(n) allocates n bytes; bytes(iterable) reads an object) is refused.
    """
    if arguments:
        raise pickle.UnpicklingError("only bytes() with no arguments (b'') is allowed")
    return b""


def _numpy_reconstructors():
    # The functions NumPy itself pickles arrays and scalars with; they only allocate memory and
    # copy bytes, and their arguments (dtype, class) pass through this same unpickler.
    reconstruct = np.empty(0).__reduce__()[0]
    scalar = np.float64(0.0).__reduce__()[0]
    allowed = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


_ALLOWED_GLOBALS = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
    **_numpy_reconstructors(),
}


class _PlainDataUnpickler(pickle.Unpickler):
    """Resolves only the globals of ``_ALLOWED_GLOBALS``; refuses every other one."""

    def __init__(self, file, file_path):
        super().__init__(file, encoding="latin1")
        self._file_path = file_path

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._file_path}: refused to load it: the pickle refers to {module}.{name}, "
                "but a partitions file may hold only lists, dicts, strings and numbers (and "
                "NumPy arrays of them). Nothing from the file was run. Re-create the file with "
                "AlignedReID's transform scripts, or check where it came from."
            ) from None

    def persistent_load(self, persistent_id):
        raise UnsafePickleError(
            f"{self._file_path}: refused to load it: persistent references are not plain data."
        )


def load_plain_pickle(file_path: str):
    """Loads a pickle that may contain only plain data, without running anything from it.

    Args:
        file_path: Path of the pickle (Python 2 or 3, any protocol).

    Returns:
        The object: dicts, lists, tuples, sets, str, bytes, numbers, None, and NumPy arrays or
        scalars.

    Raises:
        UnsafePickleError: The pickle refers to any other global (a function, class or module).
        ValueError: The file is not a readable pickle (the message names it).
    """
    with open(file_path, "rb") as file:
        try:
            return _PlainDataUnpickler(file, file_path).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
            raise ValueError(
                f"{file_path}: not a readable pickle ({type(error).__name__}: {error})."
            ) from None


def parse_alignedreid_file_name(file_name: str) -> tuple[int, int]:
    """Parses AlignedReID's ``{identity:08d}_{camera:04d}_{index:08d}.jpg`` name.

    Args:
        file_name: Base name, e.g. "00000002_0001_00000000.jpg".

    Returns:
        (identity_ID, camera_ID) as written in the name.

    Raises:
        ValueError: The name does not follow the pattern.
    """
    match = _FILE_NAME_PATTERN.match(file_name)
    if match is None:
        raise ValueError(
            f"{file_name!r} is not an AlignedReID image name like '00000002_0001_00000000.jpg'"
        )
    return int(match.group(1)), int(match.group(2))


def _as_name_list(value, key, file_path):
    if isinstance(value, np.ndarray):
        value = value.reshape(-1).tolist()
    if not isinstance(value, (list, tuple)):
        raise ValueError(
            f"{file_path}: {key} must be a list of image names, got {type(value).__name__}."
        )
    names = []
    for name in value:
        if isinstance(name, bytes):
            name = name.decode("latin1")
        if not isinstance(name, str):
            raise ValueError(
                f"{file_path}: {key} must hold image names (str), found {type(name).__name__}."
            )
        names.append(str(name))
    return names


def _as_int_list(value, key, file_path):
    if isinstance(value, np.ndarray):
        value = value.reshape(-1).tolist()
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(item, (int, np.integer)) and not isinstance(item, bool) for item in value
    ):
        raise ValueError(f"{file_path}: {key} must be a list of integers.")
    return [int(item) for item in value]


def read_partitions(file_path: str, trainset_part: str = "trainval") -> dict:
    """Reads and checks AlignedReID's ``partitions.pkl``.

    Args:
        file_path: Path of the partitions file.
        trainset_part: "trainval" (AlignedReID's default) or "train" (its train/val split).

    Returns:
        dict with ``train_names`` (list of str), ``ids2labels`` (dict int -> int),
        ``test_names`` (list of str) and ``test_marks`` (list of int in {0, 1, 2}).

    Raises:
        UnsafePickleError: The file refers to anything but plain data.
        ValueError: A key is missing or malformed (the message names the file and the key).
    """
    if trainset_part not in TRAINSET_PARTS:
        raise ValueError(f"trainset_part must be one of {TRAINSET_PARTS}, got {trainset_part!r}.")
    partitions = load_plain_pickle(file_path)
    if not isinstance(partitions, Mapping):
        raise ValueError(
            f"{file_path}: expected a dict of partitions, got {type(partitions).__name__}."
        )
    required = [
        f"{trainset_part}_im_names",
        f"{trainset_part}_ids2labels",
        "test_im_names",
        "test_marks",
    ]
    missing = [key for key in required if key not in partitions]
    if missing:
        hint = ""
        if "test_im_names" in missing and "trainval_im_names" in partitions:
            hint = (
                " (a training-only file, such as AlignedReID's combined trainval set: use "
                "--dataset_name Combined --combined_dataset_names "
                f"{','.join(ALIGNEDREID_COMBINED_DATASET_NAMES)} instead)"
            )
        raise ValueError(
            f"{file_path}: missing partition keys {missing}{hint}; found {sorted(partitions)}."
        )
    ids2labels = partitions[f"{trainset_part}_ids2labels"]
    if not isinstance(ids2labels, Mapping):
        raise ValueError(f"{file_path}: {trainset_part}_ids2labels must be a dict.")
    test_names = _as_name_list(partitions["test_im_names"], "test_im_names", file_path)
    test_marks = _as_int_list(partitions["test_marks"], "test_marks", file_path)
    if len(test_marks) != len(test_names):
        raise ValueError(
            f"{file_path}: test_marks has {len(test_marks)} entries but test_im_names has "
            f"{len(test_names)}."
        )
    unknown_marks = sorted(set(test_marks) - {QUERY_MARK, GALLERY_MARK, MULTI_QUERY_MARK})
    if unknown_marks:
        raise ValueError(
            f"{file_path}: test_marks must be 0 (query), 1 (gallery) or 2 (multi-query), "
            f"found {unknown_marks}."
        )
    return {
        "train_names": _as_name_list(
            partitions[f"{trainset_part}_im_names"], f"{trainset_part}_im_names", file_path
        ),
        "ids2labels": {int(key): int(value) for key, value in ids2labels.items()},
        "test_names": test_names,
        "test_marks": test_marks,
    }


def is_alignedreid_folder(folder_path: str) -> bool:
    """Tells whether ``folder_path`` holds ``images/`` and ``partitions.pkl``."""
    return os.path.isdir(os.path.join(folder_path, IMAGES_FOLDER_NAME)) and os.path.isfile(
        os.path.join(folder_path, PARTITIONS_FILE_NAME)
    )


def _candidates(names, images_dir, dataset_name, split_name):
    """(path, identity, camera) of parsable names, plus a counted-skip message for the rest."""
    candidates, unparsable = [], []
    for name in names:
        try:
            identity_ID, camera_ID = parse_alignedreid_file_name(os.path.basename(name))
        except ValueError:
            unparsable.append(name)
            continue
        candidates.append((os.path.join(images_dir, name), identity_ID, camera_ID))
    messages = []
    if unparsable:
        message = image_files.format_skip_message(
            dataset_name, split_name, "file name does not parse", unparsable
        )
        logging.warning(message)
        messages.append(message)
    return candidates, messages


def _check_train_partition_not_empty(partitions, partitions_path, trainset_part):
    """Raises a ValueError naming the file when the training partition holds no image."""
    if not partitions["train_names"]:
        hint = (
            " (AlignedReID's transform scripts move up to 100 identities to validation, which "
            "can take every training identity of a small dataset); train on --trainset_part "
            "trainval"
            if trainset_part == "train"
            else ""
        )
        raise ValueError(f"{partitions_path}: the {trainset_part} partition is empty{hint}.")


def _test_candidates(partitions, images_dir, dataset_name):
    """The query (mark 0) and gallery (mark 1) candidates; multi-query images are counted.

    Args:
        partitions: dict from ``read_partitions``.
        images_dir: the folder of the images.
        dataset_name: the name in messages.

    Returns:
        (dict "query"/"gallery" -> list of (path, identity, camera), list of messages: skipped
        unparsable names, then the number of multi-query images left out).
    """
    marks = partitions["test_marks"]
    split_names = {"query": QUERY_MARK, "gallery": GALLERY_MARK}
    test_candidates, messages = {}, []
    for split_name, mark in split_names.items():
        names = [name for name, value in zip(partitions["test_names"], marks) if value == mark]
        test_candidates[split_name], split_messages = _candidates(
            names, images_dir, dataset_name, split_name
        )
        messages.extend(split_messages)
    num_multi_query = sum(1 for value in marks if value == MULTI_QUERY_MARK)
    if num_multi_query:
        message = (
            f"{dataset_name} test: left out {num_multi_query} multi-query images (mark 2); "
            "evaluation is single-query"
        )
        logging.info(message)
        messages.append(message)
    return test_candidates, messages


def load_alignedreid_folder(
    folder_path: str, *, trainset_part: str = "trainval", verify_images: bool = False
) -> records.ReIDDataset:
    """Loads a dataset in AlignedReID's transformed format.

    Training images are ``{trainset_part}_im_names``; query and gallery are the test images
    marked 0 and 1; multi-query images (mark 2) are left out and counted in the notes. Missing
    or empty image files are skipped and counted, as for every other loader.

    Args:
        folder_path: Folder holding ``images/`` and ``partitions.pkl``.
        trainset_part: "trainval" (default, as AlignedReID trains) or "train".
        verify_images: Decode every image and skip undecodable ones.

    Returns:
        The ReIDDataset, named by the folder path as given.

    Raises:
        FileNotFoundError: ``images/`` or ``partitions.pkl`` is missing.
        UnsafePickleError: ``partitions.pkl`` refers to anything but plain data.
        ValueError: malformed partitions, training identities without a label in
            ``ids2labels``, or an empty split.
    """
    dataset_name = str(folder_path)
    folder_path = os.path.abspath(os.path.expanduser(str(folder_path)))
    if not is_alignedreid_folder(folder_path):
        raise FileNotFoundError(
            f"{dataset_name!r} is not a dataset in AlignedReID's format: it must hold the folder "
            f"{IMAGES_FOLDER_NAME!r} and the file {PARTITIONS_FILE_NAME!r}."
        )
    partitions_path = os.path.join(folder_path, PARTITIONS_FILE_NAME)
    images_dir = os.path.join(folder_path, IMAGES_FOLDER_NAME)
    partitions = read_partitions(partitions_path, trainset_part)

    _check_train_partition_not_empty(partitions, partitions_path, trainset_part)
    train_candidates, messages = _candidates(
        partitions["train_names"], images_dir, dataset_name, "train"
    )
    unlabelled = sorted(
        {identity for _, identity, _ in train_candidates} - set(partitions["ids2labels"])
    )
    if unlabelled:
        raise ValueError(
            f"{partitions_path}: {len(unlabelled)} training identities have no entry in "
            f"{trainset_part}_ids2labels, e.g. {unlabelled[:5]}."
        )
    test_candidates, test_messages = _test_candidates(partitions, images_dir, dataset_name)
    messages.extend(test_messages)

    splits = {}
    for split_name, candidates in (("train", train_candidates), *test_candidates.items()):
        splits[split_name], usable_messages = scanning.filter_usable_images(
            candidates,
            dataset_name=dataset_name,
            split_name=split_name,
            verify_images=verify_images,
        )
        messages.extend(usable_messages)
    return records.build_reid_dataset(
        dataset_name, splits["train"], splits["query"], splits["gallery"], messages, folder_path
    )


def identity_steps_per_epoch(
    num_identities: int, identity_num_per_batch: int, *, keep_final_batch: bool
) -> int:
    """Batches in AlignedReID's epoch, which visits every training identity once.

    Its TrainSet draws identity_num_per_batch identities per batch from a shuffled list of all
    of them; script/experiment/train.py drops the last incomplete batch (final_batch False: 751
    identities at P = 32 give 23 batches on Market-1501), train_ml.py keeps it (24).

    Args:
        num_identities: training identities.
        identity_num_per_batch: P.
        keep_final_batch: True rounds up (train_ml.py), False down (train.py).

    Returns:
        int, at least 1.
    """
    if num_identities < 1 or identity_num_per_batch < 1:
        raise ValueError(
            f"need at least one identity and one identity per batch, got {num_identities} and "
            f"{identity_num_per_batch}."
        )
    if keep_final_batch:
        return max(1, -(-num_identities // identity_num_per_batch))
    return max(1, num_identities // identity_num_per_batch)
