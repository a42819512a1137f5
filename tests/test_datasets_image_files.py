"""Tests of the bad-image policy: the cheap structural check, its TensorFlow twin, the skip log."""

import os
import threading

import pytest

from applications.core.backend import tf
from datasets import image_files
from tests.dataset_fixtures import BAD_IMAGE_KINDS, write_bad_image_file, write_image

EXPECTED_REASONS = {
    "header_only_jpeg": image_files.TRUNCATED,
    "text_file": image_files.NOT_AN_IMAGE,
    "truncated_jpeg": image_files.TRUNCATED,
    "empty": image_files.FILE_EMPTY,
    "corrupt_png": None,  # whole header and end: only a decoder finds it
    "corrupt_jpeg": None,
}


@pytest.fixture
def files(tmp_path):
    """Good files of each format the decoders read, and one bad file of each planted kind."""
    paths = {}
    for extension in ("jpg", "png", "bmp"):
        paths[f"good_{extension}"] = str(tmp_path / f"good.{extension}")
        write_image(paths[f"good_{extension}"], height=40, width=20)
    # A JPEG with bytes after its end marker, as some encoders write.
    padded = str(tmp_path / "padded.jpg")
    with open(paths["good_jpg"], "rb") as source, open(padded, "wb") as target:
        target.write(source.read() + b"\0" * 100)
    paths["padded_jpg"] = padded
    for kind in BAD_IMAGE_KINDS:
        extension = "png" if "png" in kind else "jpg"
        paths[kind] = write_bad_image_file(str(tmp_path / f"{kind}.{extension}"), kind)
    return paths


def test_cheap_check_reasons(files, tmp_path):
    for name, path in files.items():
        assert image_files.check_image_file(path) == EXPECTED_REASONS.get(name), name
    assert image_files.check_image_file(str(tmp_path / "gone.jpg")) == image_files.FILE_MISSING
    assert image_files.check_image_file(str(tmp_path)) == image_files.FILE_MISSING


def test_tensorflow_rule_agrees_with_the_python_rule(files):
    for name, path in files.items():
        with open(path, "rb") as file:
            contents = file.read()
        looks_whole = bool(image_files.image_contents_look_whole_tf(tf.constant(contents)))
        python_reason = image_files.image_bytes_look_whole(
            contents[: image_files.HEAD_LENGTH], contents[-image_files.TAIL_LENGTH :]
        )
        assert looks_whole == (python_reason is None), name


def test_full_decode_of_verify_images(files):
    decodable = {name for name, path in files.items() if image_files.is_decodable_image(path)}
    # OpenCV is lenient with corrupt JPEG data (the pipeline's TensorFlow decoder is not).
    assert decodable == {"good_jpg", "good_png", "good_bmp", "padded_jpg", "corrupt_jpeg"}


def test_skip_log_counts_each_file_once_across_threads():
    log = image_files.SkippedImageLog("D train")
    paths = [f"/data/{index}.jpg" for index in range(5)]

    def record_all():
        for path in paths * 3:
            log.record(path)

    threads = [threading.Thread(target=record_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.record("/data/x.png", "other reason")
    assert log.num_skipped == 6
    assert sorted(log.skipped_file_paths) == sorted([*paths, "/data/x.png"])
    undecodable, other = log.messages()
    # The first three met are named; which three depends on the threads.
    prefix = "D train: skipped 5 images (image undecodable): "
    assert undecodable.startswith(prefix) and undecodable.endswith(", ...")
    assert set(undecodable[len(prefix) : -len(", ...")].split(", ")) < {
        f"{i}.jpg" for i in range(5)
    }
    assert other == "D train: skipped 1 image (other reason): x.png"


def test_image_file_names():
    assert image_files.is_image_file_name("0001_c1s1_000001_00.JPG")
    assert image_files.is_image_file_name("a.png") and image_files.is_image_file_name("a.jpeg")
    assert not image_files.is_image_file_name("Thumbs.db")
    assert not image_files.is_image_file_name(os.path.join("folder.jpg", "notes.txt"))
