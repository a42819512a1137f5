"""Tests of the dataset loaders on tiny copies of each dataset's exact on-disk layout."""

import logging as python_logging
import os

import numpy as np
import pandas as pd
import pytest

import datasets
from datasets import combined, cuhk03, dukemtmc_reid, image_files, market1501, msmt17
from tests import dataset_fixtures


def _identities(records: pd.DataFrame) -> list[int]:
    return sorted(set(records["identity_ID"].tolist()))


def _check_record_format(records: pd.DataFrame) -> None:
    assert list(records.columns) == ["image_file_path", "identity_ID", "camera_ID"]
    assert records["identity_ID"].dtype == np.int64
    assert records["camera_ID"].dtype == np.int64
    paths = records["image_file_path"].tolist()
    assert paths == sorted(paths)
    assert all(os.path.isabs(path) and os.path.isfile(path) for path in paths)
    assert list(records.index) == list(range(len(records)))


@pytest.mark.parametrize(
    "file_name, expected",
    [
        ("0002_c1s1_000451_03.jpg", (2, 1)),
        ("-1_c3s2_001234_00.jpg", (-1, 3)),
        ("0000_c6s4_000100_01.jpg", (0, 6)),
        ("1501_c10s1_000001_00.JPG", (1501, 10)),
    ],
)
def test_parse_market1501_file_name(file_name, expected):
    assert market1501.parse_market1501_file_name(file_name) == expected


@pytest.mark.parametrize(
    "file_name",
    ["Thumbs.db", "0002_c1_000451_03.jpg", "abcd_c1s1_000451_03.jpg", "0002_c1s1_000451_03.txt",
     "-2_c1s1_000451_03.jpg", "0002_c1s1_000451.jpg"],
)  # fmt: skip
def test_parse_market1501_file_name_rejects(file_name):
    with pytest.raises(ValueError, match="Market-1501"):
        market1501.parse_market1501_file_name(file_name)


def test_other_file_name_parsers():
    assert dukemtmc_reid.parse_dukemtmc_reid_file_name("0005_c2_f0046985.jpg") == (5, 2)
    assert cuhk03.parse_cuhk03_file_name("0001_c1_1.png") == (1, 1)
    assert cuhk03.parse_cuhk03_file_name("1467_c2_10.png") == (1467, 2)
    assert cuhk03.parse_cuhk03_file_name("0003_c2s1_000123_01.png") == (3, 2)
    assert msmt17.parse_msmt17_file_name("0000_000_01_0303morning_0015_0.jpg") == (0, 1)
    assert msmt17.parse_msmt17_list_line("3059/3059_013_15_0113noon_0955_1.jpg 3059\n") == (
        "3059/3059_013_15_0113noon_0955_1.jpg",
        3059,
        15,
    )
    for parse, bad_name in [
        (dukemtmc_reid.parse_dukemtmc_reid_file_name, "0005_c2s1_0046985.jpg"),
        (cuhk03.parse_cuhk03_file_name, "0001_c1.png"),
        (msmt17.parse_msmt17_file_name, "0000_000_0303morning_0015_0.jpg"),
        (msmt17.parse_msmt17_list_line, "0000/0000_000_01_0303morning_0015_0.jpg"),
        (msmt17.parse_msmt17_list_line, "0000/0000_000_01_0303morning_0015_0.jpg zero"),
    ]:
        with pytest.raises(ValueError):
            parse(bad_name)


def test_market1501_junk_and_distractors(tmp_path):
    dataset_fixtures.write_market1501(str(tmp_path))
    dataset = datasets.load_dataset("Market1501", str(tmp_path))
    assert dataset.name == "Market1501"
    for records in (dataset.train, dataset.query, dataset.gallery):
        _check_record_format(records)
        assert -1 not in records["identity_ID"].tolist()
    assert len(dataset.train) == 6
    assert _identities(dataset.train) == [2, 7, 10]
    assert _identities(dataset.query) == [1, 3, 4]
    # 9 gallery files: 2 junk dropped, 2 distractors kept, the Thumbs.db ignored.
    assert len(dataset.gallery) == 7
    assert (dataset.gallery["identity_ID"] == 0).sum() == 2
    row = dataset.train.iloc[0]
    assert os.path.basename(row["image_file_path"]) == "0002_c1s1_000451_03.jpg"
    assert (row["identity_ID"], row["camera_ID"]) == (2, 1)
    assert dataset.num_train_identities == 3
    np.testing.assert_array_equal(dataset.label_encoder.transform([2, 7, 10]), [0, 1, 2])
    assert any("dropped 2 junk images" in message for message in dataset.messages)
    assert not any("Thumbs.db" in message for message in dataset.messages)


def test_market1501_accepts_the_dataset_folder_itself(tmp_path):
    dataset_dir = dataset_fixtures.write_market1501(str(tmp_path))
    from_root = datasets.load_dataset("Market1501", str(tmp_path))
    from_dir = datasets.load_dataset("Market1501", dataset_dir)
    pd.testing.assert_frame_equal(from_root.gallery, from_dir.gallery)


def test_count_mismatch_is_a_warning_not_an_error(tmp_path, caplog):
    dataset_fixtures.write_market1501(str(tmp_path))
    with caplog.at_level(python_logging.WARNING):
        dataset = datasets.load_dataset("Market1501", str(tmp_path))
    mismatches = [message for message in dataset.messages if "published" in message]
    assert len(mismatches) == 3
    assert any(
        message.startswith("Market1501 train: found 6 images / 3 identities, published "
                           "12,936 images / 751 identities")
        for message in mismatches
    )  # fmt: skip
    assert "published 12,936" in caplog.text


def test_published_counts_match_gives_no_message():
    splits = {"train": pd.DataFrame({"identity_ID": [1, 1, 2]})}
    counts = {"train": datasets.records.PublishedCounts(num_images=3, num_identities=2)}
    assert datasets.records.compare_with_published_counts("X", splits, counts, "s") == []
    counts = {"train": datasets.records.PublishedCounts(num_images=3, num_identities=3)}
    assert len(datasets.records.compare_with_published_counts("X", splits, counts, "s")) == 1


def test_dukemtmc_reid(tmp_path):
    dataset_fixtures.write_dukemtmc_reid(str(tmp_path))
    dataset = datasets.load_dataset("DukeMTMC_reID", str(tmp_path))
    assert _identities(dataset.train) == [1, 2, 5]
    assert sorted(dataset.train["camera_ID"].tolist()) == [1, 2, 2, 3, 4, 8]
    assert _identities(dataset.gallery) == [3, 4, 9]
    assert len(dataset.query) == 2


@pytest.mark.parametrize("version", [1, 2])
def test_msmt17_list_files(tmp_path, version):
    dataset_dir = dataset_fixtures.write_msmt17(str(tmp_path), version=version)
    dataset = datasets.load_dataset("MSMT17", str(tmp_path))
    for records in (dataset.train, dataset.query, dataset.gallery):
        _check_record_format(records)
    train_folder_name = "mask_train_v2" if version == 2 else "train"
    # Train and val lists together form the training set.
    assert len(dataset.train) == 4
    assert _identities(dataset.train) == [0, 1, 2]
    assert sorted(dataset.train["camera_ID"].tolist()) == [1, 5, 11, 15]
    assert (
        dataset.train["image_file_path"]
        .str.startswith(os.path.join(dataset_dir, train_folder_name))
        .all()
    )
    assert sorted(dataset.query["camera_ID"].tolist()) == [2, 7]
    assert len(dataset.gallery) == 3
    assert _identities(dataset.gallery) == [0, 1]


def test_msmt17_bad_line_and_missing_image_are_counted_skips(tmp_path):
    dataset_dir = dataset_fixtures.write_msmt17(str(tmp_path), version=2)
    with open(os.path.join(dataset_dir, "list_gallery.txt"), "a", encoding="utf-8") as file:
        file.write("garbage line here\n0001/0001_003_04_0304noon_0999_0.jpg 1\n")
    dataset = datasets.load_dataset("MSMT17", dataset_dir)
    assert len(dataset.gallery) == 3
    assert any(
        "1 image (list line does not parse): list_gallery.txt:4" in m for m in dataset.messages
    )
    assert any("1 image (file missing)" in m for m in dataset.messages)


@pytest.mark.parametrize(
    "options, expected_name, num_train, num_gallery",
    [
        ({}, "CUHK03_detected", 4, 3),
        ({"cuhk03_variant": "detected"}, "CUHK03_detected", 4, 3),
        ({"cuhk03_variant": "labeled"}, "CUHK03_labeled", 3, 2),
        ({"cuhk03_variant": "CUHK03_labeled"}, "CUHK03_labeled", 3, 2),
    ],
)
def test_cuhk03_variants(tmp_path, options, expected_name, num_train, num_gallery):
    dataset_fixtures.write_cuhk03(str(tmp_path))
    dataset = datasets.load_dataset("CUHK03", str(tmp_path), **options)
    assert dataset.name == expected_name
    assert len(dataset.train) == num_train
    assert len(dataset.gallery) == num_gallery
    assert dataset.train["image_file_path"].str.endswith(".png").all()
    assert set(dataset.train["camera_ID"].tolist()) <= {1, 2}


def test_cuhk03_registry_names_and_bad_variant(tmp_path):
    base_dir = dataset_fixtures.write_cuhk03(str(tmp_path))
    assert datasets.load_dataset("CUHK03_labeled", str(tmp_path)).name == "CUHK03_labeled"
    assert len(datasets.load_dataset("CUHK03_detected", base_dir).query) == 2
    with pytest.raises(ValueError, match="labeled"):
        datasets.load_dataset("CUHK03", str(tmp_path), cuhk03_variant="hand-drawn")


def test_combined_keeps_identities_apart(tmp_path):
    dataset_fixtures.write_market1501(str(tmp_path))
    dataset_fixtures.write_dukemtmc_reid(str(tmp_path))
    dataset = datasets.load_dataset(
        "Combined",
        str(tmp_path),
        combined_dataset_names=["Market1501", "DukeMTMC_reID"],
        evaluation_dataset_name="DukeMTMC_reID",
    )
    offset = combined.COMBINED_IDENTITY_OFFSET
    assert dataset.name == "Combined"
    _check_record_format(dataset.train)
    assert len(dataset.train) == 12
    # Market's 2, 7, 10 and Duke's 1, 2, 5: identity 2 of each stays two people.
    assert _identities(dataset.train) == [2, 7, 10, offset + 1, offset + 2, offset + 5]
    assert dataset.num_train_identities == 6
    labels = dataset.label_encoder.transform(dataset.train["identity_ID"])
    assert sorted(set(labels.tolist())) == list(range(6))
    assert _identities(dataset.query) == [3, 4]
    assert any("DukeMTMC_reID gives 6 images of 3 identities" in m for m in dataset.messages)
    assert any(m.startswith("[Market1501]") for m in dataset.messages)


def test_combined_defaults_and_bad_names(tmp_path):
    dataset_fixtures.write_market1501(str(tmp_path))
    dataset_fixtures.write_dukemtmc_reid(str(tmp_path))
    dataset = datasets.load_dataset(
        "Combined", str(tmp_path), combined_dataset_names="DukeMTMC_reID,Market1501"
    )
    assert _identities(dataset.query) == [3, 4]  # DukeMTMC-reID's, the first name
    assert len(dataset.gallery) == 4
    with pytest.raises(ValueError, match="valid names"):
        datasets.load_dataset("Combined", str(tmp_path), combined_dataset_names=["Market"])
    with pytest.raises(ValueError, match="Combined"):
        datasets.load_dataset("Combined", str(tmp_path), combined_dataset_names=["Combined"])


def test_user_folder_in_market1501_layout(tmp_path):
    user_dir = dataset_fixtures.write_market1501_layout(
        str(tmp_path / "my_shop_cameras"),
        ["0001_c1s1_000001_00.jpg", "0001_c2s1_000002_00.jpg"],
        ["0002_c1s1_000003_00.jpg"],
        ["0002_c2s1_000004_00.jpg", "0000_c1s1_000005_00.jpg", "-1_c1s1_000006_00.jpg"],
    )
    dataset = datasets.load_dataset(user_dir, "/unused")
    assert dataset.name == user_dir
    assert len(dataset.train) == 2
    assert _identities(dataset.gallery) == [0, 2]
    assert not any("published" in message for message in dataset.messages)


def test_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="Market1501.*DukeMTMC_reID.*MSMT17.*Synthetic"):
        datasets.load_dataset("Market", str(tmp_path))
    assert "Synthetic" in datasets.DATASET_NAMES and "Combined" in datasets.DATASET_NAMES


@pytest.mark.parametrize(
    "dataset_name, folder_name, source",
    [
        ("Market1501", "Market-1501-v15.09.15", "project_reid"),
        ("DukeMTMC_reID", "DukeMTMC-reID", "github.com/layumi"),
        ("MSMT17", "MSMT17_V2", "pkuvmc"),
        ("CUHK03", "cuhk03-np/detected", "zhunzhong07"),
    ],
)
def test_missing_root_folder_names_what_was_expected(tmp_path, dataset_name, folder_name, source):
    missing_root = str(tmp_path / "no_such_folder")
    with pytest.raises(FileNotFoundError) as error:
        datasets.load_dataset(dataset_name, missing_root)
    message = str(error.value)
    assert folder_name in message
    assert missing_root in message
    assert source in message
    assert "does not exist" in message


def test_misnamed_dataset_folder_is_an_error(tmp_path):
    dataset_fixtures.write_market1501_layout(
        str(tmp_path / "Market-1501"), ["0001_c1s1_000001_00.jpg"], [], []
    )
    with pytest.raises(FileNotFoundError, match="Market-1501-v15.09.15"):
        datasets.load_dataset("Market1501", str(tmp_path))


def test_unparsable_file_names_are_counted_skips(tmp_path):
    dataset_dir = dataset_fixtures.write_market1501(str(tmp_path))
    dataset_fixtures.write_images(
        os.path.join(dataset_dir, "query"), ["holiday.jpg", "0005_cXs1_000001_00.jpg"]
    )
    dataset = datasets.load_dataset("Market1501", str(tmp_path))
    assert len(dataset.query) == 3
    assert any(
        "query: skipped 2 images (file name does not parse): 0005_cXs1_000001_00.jpg, holiday.jpg"
        in message
        for message in dataset.messages
    )


def test_bad_image_files_are_skipped_and_counted_at_load(tmp_path):
    dataset_dir = dataset_fixtures.write_market1501(str(tmp_path))
    train_dir = os.path.join(dataset_dir, "bounding_box_train")
    gallery_dir = os.path.join(dataset_dir, "bounding_box_test")
    # The planted faults: a header-only JPEG in the gallery, the rest in training.
    planted = {
        os.path.join(gallery_dir, "0001_c4s1_000001_00.jpg"): "header_only_jpeg",
        os.path.join(train_dir, "0011_c1s1_000001_00.jpg"): "text_file",
        os.path.join(train_dir, "0012_c1s1_000001_00.jpg"): "truncated_jpeg",
        os.path.join(train_dir, "0013_c1s1_000001_00.jpg"): "empty",
        os.path.join(train_dir, "0014_c1s1_000001_00.png"): "corrupt_png",
        os.path.join(train_dir, "0015_c1s1_000001_00.jpg"): "corrupt_jpeg",
    }
    for path, kind in planted.items():
        dataset_fixtures.write_bad_image_file(path, kind)

    unverified = datasets.load_dataset("Market1501", str(tmp_path))
    # The cheap check catches all but the two with a whole header and end marker.
    train_names = {os.path.basename(path) for path in unverified.train["image_file_path"]}
    assert len(unverified.train) == 6 + 2
    assert {"0014_c1s1_000001_00.png", "0015_c1s1_000001_00.jpg"} <= train_names
    assert len(unverified.gallery) == 7
    expected = [
        "Market1501 train: skipped 1 image (file empty): 0013_c1s1_000001_00.jpg",
        "Market1501 train: skipped 1 image (not a JPEG, PNG, GIF or BMP file): "
        "0011_c1s1_000001_00.jpg",
        "Market1501 train: skipped 1 image (truncated: no end-of-image marker): "
        "0012_c1s1_000001_00.jpg",
        "Market1501 gallery: skipped 1 image (truncated: no end-of-image marker): "
        "0001_c4s1_000001_00.jpg",
    ]
    for message in expected:
        assert message in unverified.messages

    # A full decode (OpenCV) also catches the corrupt PNG; the corrupt JPEG decodes there and
    # is left to the pipeline, whose TensorFlow decoder rejects it.
    verified = datasets.load_dataset("Market1501", str(tmp_path), verify_images=True)
    assert len(verified.train) == 6 + 1
    assert (
        "Market1501 train: skipped 1 image (image undecodable): 0014_c1s1_000001_00.png"
        in verified.messages
    )


def test_cheap_check_reads_two_small_pieces_of_each_file(tmp_path, monkeypatch):
    path = str(tmp_path / "big.jpg")
    dataset_fixtures.write_image(path, height=400, width=200)
    sizes = []
    real_open = open

    class CountingFile:
        def __init__(self, file):
            self._file = file

        def read(self, size=-1):
            sizes.append(size)
            return self._file.read(size)

        def __getattr__(self, name):
            return getattr(self._file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._file.close()

    monkeypatch.setattr(
        datasets.image_files,
        "open",
        lambda *a, **k: CountingFile(real_open(*a, **k)),
        raising=False,
    )
    assert image_files.check_image_file(path) is None
    assert sizes == [image_files.HEAD_LENGTH, image_files.TAIL_LENGTH]


def test_empty_split_is_an_error(tmp_path):
    dataset_dir = dataset_fixtures.write_market1501_layout(
        str(tmp_path / "Market-1501-v15.09.15"),
        ["0001_c1s1_000001_00.jpg"],
        [],
        ["0001_c2s1_000002_00.jpg"],
    )
    os.makedirs(os.path.join(dataset_dir, "query"), exist_ok=True)
    with pytest.raises(ValueError, match="query split has no usable image"):
        datasets.load_dataset("Market1501", str(tmp_path))


def test_skip_message_names_only_the_first_few():
    message = image_files.format_skip_message(
        "D", "train", "why", [f"f{index}.jpg" for index in range(10)]
    )
    assert message == "D train: skipped 10 images (why): f0.jpg, f1.jpg, f2.jpg, ..."
