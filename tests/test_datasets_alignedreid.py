"""AlignedReID's partitions.pkl format: the original's exact bytes, and crafted pickles refused."""

import os
import pickle
import struct

import numpy as np
import pytest

import datasets
from datasets.alignedreid import (
    ALIGNEDREID_COMBINED_DATASET_NAMES,
    UnsafePickleError,
    load_alignedreid_folder,
    load_plain_pickle,
    parse_alignedreid_file_name,
    read_partitions,
)
from tests import dataset_fixtures


class Py2StringArray:
    """A NumPy 'S' array as Python 2's NumPy pickles it."""

    def __init__(self, names, width=None):
        self.names = [name.encode("latin1") for name in names]
        # An empty array keeps the width of the array it was sliced from.
        self.width = width or max(len(name) for name in self.names)


class Py2StringScalar:
    """A numpy.string_ scalar as Python 2's NumPy pickles it."""

    def __init__(self, name):
        self.name = name.encode("latin1")


def _py2_string(data):
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<i", len(data)) + data


def _py2_dtype(width):
    # numpy.dtype.__reduce__ under Python 2: dtype('S<width>', 0, 1) with its state tuple.
    return (
        b"cnumpy\ndtype\n"
        + _py2_string(f"S{width}".encode())
        + b"K\x00K\x01\x87R"
        + b"(K\x03"
        + _py2_string(b"|")
        + b"NNN"
        + b"J"
        + struct.pack("<i", width)
        + b"K\x01K\x00tb"
    )


def py2_pickle(value):
    """Protocol-2 bytes as Python 2's cPickle writes them (str is a byte string there)."""
    if isinstance(value, dict):
        body = b"".join(py2_pickle(key) + py2_pickle(item) for key, item in value.items())
        return b"}(" + body + b"u"
    if isinstance(value, list):
        return b"](" + b"".join(py2_pickle(item) for item in value) + b"e"
    if isinstance(value, bool):
        return b"\x88" if value else b"\x89"
    if isinstance(value, int):
        return b"J" + struct.pack("<i", value)
    if isinstance(value, str):
        return _py2_string(value.encode("latin1"))
    if isinstance(value, Py2StringArray):
        width = value.width
        raw = b"".join(name.ljust(width, b"\x00") for name in value.names)
        return (
            b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
            + b"K\x00\x85"
            + _py2_string(b"b")
            + b"\x87R"
            + b"(K\x01"
            + b"J"
            + struct.pack("<i", len(value.names))
            + b"\x85"
            + _py2_dtype(width)
            + b"\x89"
            + _py2_string(raw)
            + b"tb"
        )
    if isinstance(value, Py2StringScalar):
        return (
            b"cnumpy.core.multiarray\nscalar\n"
            + _py2_dtype(len(value.name))
            + _py2_string(value.name)
            + b"\x86R"
        )
    raise TypeError(type(value))


def write_alignedreid_dataset(folder, *, with_val=True):
    """Market-1501 as AlignedReID's transform_market1501.py leaves it, in miniature."""
    trainval = [
        "00000002_0001_00000000.jpg",
        "00000002_0002_00000000.jpg",
        "00000007_0001_00000000.jpg",
        "00000007_0003_00000000.jpg",
        "00000010_0000_00000000.jpg",
        "00000010_0002_00000000.jpg",
    ]
    query = ["00000001_0000_00000000.jpg", "00000003_0002_00000000.jpg"]
    multi_query = ["00000001_0000_00000001.jpg"]
    gallery = [
        "00000001_0001_00000000.jpg",
        "00000001_0003_00000000.jpg",
        "00000003_0004_00000000.jpg",
        "00000000_0001_00000000.jpg",
    ]
    dataset_fixtures.write_images(
        os.path.join(folder, "images"), trainval + query + multi_query + gallery
    )
    partitions = {
        "trainval_im_names": trainval,
        "trainval_ids2labels": {2: 0, 7: 1, 10: 2},
        # As in the original: train names are a NumPy string array, val names NumPy scalars.
        "train_im_names": Py2StringArray(trainval[:4]),
        "train_ids2labels": {2: 0, 7: 1},
        "val_im_names": [Py2StringScalar(trainval[4]), Py2StringScalar(trainval[5])],
        "val_marks": [0, 1],
        "test_im_names": query + multi_query + gallery,
        "test_marks": [0] * len(query) + [2] * len(multi_query) + [1] * len(gallery),
    }
    if not with_val:
        for key in ("train_im_names", "train_ids2labels", "val_im_names", "val_marks"):
            del partitions[key]
    with open(os.path.join(folder, "partitions.pkl"), "wb") as file:
        file.write(b"\x80\x02" + py2_pickle(partitions) + b".")
    return folder


def test_parse_file_name():
    assert parse_alignedreid_file_name("00000002_0001_00000005.jpg") == (2, 1)
    assert parse_alignedreid_file_name("00001367_0000_00000003.jpg") == (1367, 0)
    with pytest.raises(ValueError, match="AlignedReID image name"):
        parse_alignedreid_file_name("0002_c1s1_000451_03.jpg")


def test_python2_partitions_file_loads(tmp_path):
    folder = write_alignedreid_dataset(str(tmp_path / "market1501"))
    partitions = read_partitions(os.path.join(folder, "partitions.pkl"))
    assert partitions["ids2labels"] == {2: 0, 7: 1, 10: 2}
    assert partitions["test_marks"] == [0, 0, 2, 1, 1, 1, 1]
    train_part = read_partitions(os.path.join(folder, "partitions.pkl"), "train")
    assert train_part["train_names"][:2] == [
        "00000002_0001_00000000.jpg",
        "00000002_0002_00000000.jpg",
    ]
    raw = load_plain_pickle(os.path.join(folder, "partitions.pkl"))
    assert raw["val_im_names"][0] == b"00000010_0000_00000000.jpg"


def test_dataset_from_folder_through_load_dataset(tmp_path):
    folder = write_alignedreid_dataset(str(tmp_path / "market1501"))
    os.remove(os.path.join(folder, "images", "00000003_0004_00000000.jpg"))
    dataset = datasets.load_dataset(folder, str(tmp_path / "unused"))
    assert dataset.name == folder
    assert len(dataset.train) == 6
    assert dataset.num_train_identities == 3
    assert dataset.label_encoder.transform([2, 7, 10]).tolist() == [0, 1, 2]
    # Cameras as written in the names (0-based here, as in AlignedReID's CUHK03).
    assert sorted(dataset.query["camera_ID"].tolist()) == [0, 2]
    assert sorted(dataset.query["identity_ID"].tolist()) == [1, 3]
    assert sorted(dataset.gallery["identity_ID"].tolist()) == [0, 1, 1]
    assert all(os.path.isabs(path) for path in dataset.gallery["image_file_path"])
    notes = " | ".join(dataset.messages)
    assert "left out 1 multi-query" in notes
    assert "file missing" in notes and "00000003_0004_00000000.jpg" in notes


def test_python3_pickle_of_the_same_content_loads(tmp_path):
    folder = str(tmp_path / "py3")
    dataset_fixtures.write_images(
        os.path.join(folder, "images"),
        ["00000002_0001_00000000.jpg", "00000001_0001_00000000.jpg", "00000001_0002_00000000.jpg"],
    )
    partitions = {
        "trainval_im_names": np.array(["00000002_0001_00000000.jpg"]),
        "trainval_ids2labels": {np.int64(2): 0},
        "test_im_names": [b"00000001_0001_00000000.jpg", "00000001_0002_00000000.jpg"],
        "test_marks": np.array([0, 1]),
    }
    with open(os.path.join(folder, "partitions.pkl"), "wb") as file:
        pickle.dump(partitions, file, protocol=2)
    dataset = load_alignedreid_folder(folder)
    assert (len(dataset.train), len(dataset.query), len(dataset.gallery)) == (1, 1, 1)


def _write_python3_partitions(folder, trainval, query, gallery, num_val_ids):
    """partitions.pkl as AlignedReID's transform_market1501.py writes it under Python 3.

    Its partition_train_val_set shuffles a NumPy array of the trainval names and moves up to
    num_val_ids identities to validation; the train names are that array indexed by the rest,
    an empty '<U26' array when validation took every identity. save_pickle uses protocol 2.
    """
    dataset_fixtures.write_images(os.path.join(folder, "images"), trainval + query + gallery)
    names = np.array(trainval)
    ids = np.array([int(name[:8]) for name in names])
    val_ids = np.unique(ids)[:num_val_ids]
    val_indices = np.flatnonzero(np.isin(ids, val_ids))
    train_indices = np.setdiff1d(np.arange(len(names)), val_indices)
    train_ids = sorted({int(name[:8]) for name in names[train_indices]})
    partitions = {
        "trainval_im_names": list(trainval),
        "trainval_ids2labels": {i: label for label, i in enumerate(sorted(set(ids.tolist())))},
        "train_im_names": names[train_indices],
        "train_ids2labels": dict(zip(train_ids, range(len(train_ids)))),
        # list(numpy array): NumPy str_ scalars, as its val_im_names are.
        "val_im_names": list(names[val_indices]),
        "val_marks": [0] * len(val_indices),
        "test_im_names": list(query) + list(gallery),
        "test_marks": [0] * len(query) + [1] * len(gallery),
    }
    with open(os.path.join(folder, "partitions.pkl"), "wb") as file:
        pickle.dump(partitions, file, protocol=2)
    return folder


PY3_TRAINVAL = [
    "00000002_0001_00000000.jpg",
    "00000002_0002_00000000.jpg",
    "00000007_0001_00000000.jpg",
    "00000007_0003_00000000.jpg",
]
PY3_QUERY = ["00000001_0001_00000000.jpg"]
PY3_GALLERY = ["00000001_0002_00000000.jpg", "00000001_0003_00000000.jpg"]


def test_python3_partitions_with_an_empty_train_part_load(tmp_path):
    folder = _write_python3_partitions(
        str(tmp_path / "small"), PY3_TRAINVAL, PY3_QUERY, PY3_GALLERY, num_val_ids=100
    )
    partitions_path = os.path.join(folder, "partitions.pkl")
    assert b"__builtin__\nbytes" in open(partitions_path, "rb").read()  # what was refused
    raw = load_plain_pickle(partitions_path)
    assert raw["train_im_names"].shape == (0,) and raw["train_im_names"].dtype == np.dtype("<U26")
    assert raw["val_im_names"][0] in PY3_TRAINVAL
    dataset = load_alignedreid_folder(folder)
    assert (len(dataset.train), len(dataset.query), len(dataset.gallery)) == (4, 1, 2)
    assert dataset.num_train_identities == 2
    assert read_partitions(partitions_path, "train")["train_names"] == []
    with pytest.raises(ValueError, match="--trainset_part trainval"):
        load_alignedreid_folder(folder, trainset_part="train")
    # With identities left for training, the train part loads too.
    folder = _write_python3_partitions(
        str(tmp_path / "larger"), PY3_TRAINVAL, PY3_QUERY, PY3_GALLERY, num_val_ids=1
    )
    train_part = load_alignedreid_folder(folder, trainset_part="train")
    assert sorted(train_part.train["identity_ID"].tolist()) == [7, 7]


def test_python2_partitions_with_an_empty_train_part_load(tmp_path):
    folder = write_alignedreid_dataset(str(tmp_path / "market1501"))
    partitions_path = os.path.join(folder, "partitions.pkl")
    partitions = {
        "trainval_im_names": ["00000002_0001_00000000.jpg"],
        "trainval_ids2labels": {2: 0},
        # Python 2's NumPy pickles the empty 'S26' array with '' as its data.
        "train_im_names": Py2StringArray([], width=26),
        "train_ids2labels": {},
        "test_im_names": ["00000001_0000_00000000.jpg", "00000001_0001_00000000.jpg"],
        "test_marks": [0, 1],
    }
    with open(partitions_path, "wb") as file:
        file.write(b"\x80\x02" + py2_pickle(partitions) + b".")
    raw = load_plain_pickle(partitions_path)
    assert raw["train_im_names"].shape == (0,) and raw["train_im_names"].dtype == np.dtype("S26")
    dataset = load_alignedreid_folder(folder)
    assert (len(dataset.train), len(dataset.query), len(dataset.gallery)) == (1, 1, 1)


@pytest.mark.parametrize(
    "arguments",
    [b"J\x00\xca\x9a;\x85", b"X\x03\x00\x00\x00abc\x85", b"]\x85"],
    ids=["a size", "a str", "a list"],
)
def test_bytes_with_any_argument_is_refused(tmp_path, arguments):
    path = tmp_path / "partitions.pkl"
    # __builtin__.bytes(1000000000) would allocate a gigabyte; only bytes() is data.
    path.write_bytes(b"\x80\x02c__builtin__\nbytes\n" + arguments + b"R.")
    with pytest.raises(ValueError, match="not a readable pickle.*bytes\\(\\)"):
        load_plain_pickle(str(path))


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Evaluates:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("payload", ["os.system", "eval", "nested"])
def test_crafted_pickle_is_refused_without_running(tmp_path, payload):
    marker = tmp_path / "ran"
    folder = str(tmp_path / "crafted")
    dataset_fixtures.write_images(os.path.join(folder, "images"), ["00000002_0001_00000000.jpg"])
    evil = {"os.system": _RunsCommand(f"touch {marker}"), "eval": _Evaluates()}.get(
        payload, [{"deep": (1, _RunsCommand(f"touch {marker}"))}]
    )
    partitions = {
        "trainval_im_names": ["00000002_0001_00000000.jpg"],
        "trainval_ids2labels": {2: 0},
        "test_im_names": evil,
        "test_marks": [0],
    }
    partitions_path = os.path.join(folder, "partitions.pkl")
    with open(partitions_path, "wb") as file:
        pickle.dump(partitions, file, protocol=2)
    with pytest.raises(UnsafePickleError, match="Nothing from the file was run") as error:
        datasets.load_dataset(folder, str(tmp_path))
    assert partitions_path in str(error.value)
    assert not marker.exists()


def test_codecs_with_another_codec_is_refused(tmp_path):
    path = tmp_path / "partitions.pkl"
    # _codecs.encode('x', 'rot13') through GLOBAL + REDUCE.
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(ValueError, match="not a readable pickle"):
        load_plain_pickle(str(path))


def test_malformed_partitions_name_the_file_and_key(tmp_path):
    folder = tmp_path / "bad"
    (folder / "images").mkdir(parents=True)
    path = folder / "partitions.pkl"
    with open(path, "wb") as file:
        pickle.dump({"trainval_im_names": [], "trainval_ids2labels": {}}, file, protocol=2)
    with pytest.raises(ValueError, match="missing partition keys.*Combined") as error:
        load_alignedreid_folder(str(folder))
    assert str(path) in str(error.value)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a readable pickle"):
        load_alignedreid_folder(str(folder))


def test_training_identity_without_label_is_an_error(tmp_path):
    folder = str(tmp_path / "nolabel")
    dataset_fixtures.write_images(os.path.join(folder, "images"), ["00000002_0001_00000000.jpg"])
    with open(os.path.join(folder, "partitions.pkl"), "wb") as file:
        pickle.dump(
            {
                "trainval_im_names": ["00000002_0001_00000000.jpg"],
                "trainval_ids2labels": {3: 0},
                "test_im_names": [],
                "test_marks": [],
            },
            file,
        )
    with pytest.raises(ValueError, match="no entry in trainval_ids2labels"):
        load_alignedreid_folder(folder)


def test_combined_labels_are_alignedreids_contiguous_ids(tmp_path):
    root = str(tmp_path)
    dataset_fixtures.write_market1501(root)
    dataset_fixtures.write_cuhk03(root)
    dataset_fixtures.write_dukemtmc_reid(root)
    dataset = datasets.load_dataset(
        "Combined",
        root,
        combined_dataset_names=list(ALIGNEDREID_COMBINED_DATASET_NAMES),
        evaluation_dataset_name="Market1501",
    )
    # AlignedReID's combine_trainval_sets.py: per dataset in that order, sorted identities get
    # new_start_id, new_start_id + 1, ...
    expected = {}
    for index, name in enumerate(ALIGNEDREID_COMBINED_DATASET_NAMES):
        part = datasets.load_dataset(name, root)
        for identity in sorted(set(part.train["identity_ID"].tolist())):
            expected[index * datasets.COMBINED_IDENTITY_OFFSET + identity] = len(expected)
    identities = dataset.train["identity_ID"].tolist()
    labels = dataset.label_encoder.transform(identities).tolist()
    assert labels == [expected[identity] for identity in identities]


def test_alignedreid_folders_are_parts_of_combined_and_each_test_set_is_kept(tmp_path):
    root = str(tmp_path)
    dataset_fixtures.write_market1501(root)
    folder = write_alignedreid_dataset(str(tmp_path / "aligned" / "market_transformed"))
    dataset = datasets.load_dataset(
        "Combined",
        root,
        combined_dataset_names=["Market1501", folder],
        evaluation_dataset_name="Market1501",
    )
    market = datasets.load_dataset("Market1501", root)
    aligned = load_alignedreid_folder(folder)
    assert len(dataset.train) == len(market.train) + len(aligned.train)
    assert dataset.num_train_identities == market.num_train_identities + 3
    test_sets = datasets.evaluation_test_sets(dataset)
    assert list(test_sets) == ["Market1501", "market_transformed"]
    for label, source in (("Market1501", market), ("market_transformed", aligned)):
        query, gallery = test_sets[label]
        assert query["image_file_path"].tolist() == source.query["image_file_path"].tolist()
        assert gallery["image_file_path"].tolist() == source.gallery["image_file_path"].tolist()
    # A single dataset has its own test set only.
    assert list(datasets.evaluation_test_sets(market)) == ["Market1501"]


def test_trainset_part_train_needs_an_alignedreid_folder(tmp_path):
    root = str(tmp_path)
    dataset_fixtures.write_market1501(root)
    folder = write_alignedreid_dataset(str(tmp_path / "aligned"))
    train_part = datasets.load_dataset(folder, root, trainset_part="train")
    assert sorted(train_part.train["identity_ID"].tolist()) == [2, 2, 7, 7]
    with pytest.raises(ValueError, match="--trainset_part train needs a folder in AlignedReID"):
        datasets.load_dataset("Market1501", root, trainset_part="train")
    with pytest.raises(ValueError, match="Combined trains on the trainval part"):
        datasets.load_dataset("Combined", root, trainset_part="train")
