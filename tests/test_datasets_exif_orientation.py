"""EXIF orientation against cv2.imread, which applies it (FlipReID reads images with it)."""

import struct

import cv2
import numpy as np
import pytest

from applications.core.backend import tf
from datasets.exif_orientation import apply_exif_orientation, jpeg_exif_orientation
from datasets.pipeline import decode_and_resize

HEIGHT, WIDTH = 12, 8


def _stored_image():
    """A BGR image with no symmetry, smooth enough that JPEG keeps its layout."""
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([rows * 20, columns * 30, (rows * 7 + columns * 13) % 256], axis=-1).astype(
        np.uint8
    )


def _exif_segment(orientation, big_endian, extra_entries=0):
    """An APP1 Exif segment whose first IFD holds `extra_entries` other tags, then Orientation."""
    order = ">" if big_endian else "<"
    entries = [struct.pack(order + "HHII", 0x010F + i, 2, 4, 0) for i in range(extra_entries)]
    entries.append(struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0))
    ifd = struct.pack(order + "H", len(entries)) + b"".join(entries) + struct.pack(order + "I", 0)
    tiff = (b"MM" if big_endian else b"II") + struct.pack(order + "HI", 42, 8) + ifd
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _jpeg_with(segment):
    ok, encoded = cv2.imencode(".jpg", _stored_image(), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    encoded = encoded.tobytes()
    return encoded[:2] + segment + encoded[2:]


def _cv2_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_decoded_pixels_equal_cv2_imread_for_every_orientation(tmp_path, orientation, big_endian):
    path = tmp_path / f"phone_{orientation}.jpg"
    path.write_bytes(_jpeg_with(_exif_segment(orientation, big_endian, extra_entries=3)))
    expected = _cv2_rgb(path)
    # 5-8 turn the picture a quarter: cv2 returns it W x H, and so must the pipeline.
    assert expected.shape[:2] == ((WIDTH, HEIGHT) if orientation >= 5 else (HEIGHT, WIDTH))
    contents = tf.io.read_file(str(path))

    assert int(jpeg_exif_orientation(contents)) == orientation
    image = decode_and_resize(tf.constant(str(path)), *expected.shape[:2])
    np.testing.assert_array_equal(image.numpy(), expected)


def test_each_orientation_gives_a_different_image(tmp_path):
    """Guards the test above: a decoder that ignored the tag would fail it, not pass it."""
    images = set()
    for orientation in range(1, 9):
        path = tmp_path / f"{orientation}.jpg"
        path.write_bytes(_jpeg_with(_exif_segment(orientation, big_endian=False)))
        image = _cv2_rgb(path)
        images.add(image.tobytes() + bytes(image.shape))
    assert len(images) == 8


def test_apply_matches_a_plain_numpy_turn_for_every_orientation():
    image = np.arange(3 * 2 * 1).reshape(3, 2, 1)
    plain = {
        1: image,
        2: image[:, ::-1],
        3: image[::-1, ::-1],
        4: image[::-1],
        5: image.transpose(1, 0, 2),
        6: np.rot90(image, -1),
        7: np.rot90(image, -1)[::-1],
        8: np.rot90(image, 1),
    }
    for orientation, expected in plain.items():
        turned = apply_exif_orientation(tf.constant(image), tf.constant(orientation))
        np.testing.assert_array_equal(turned.numpy(), expected, err_msg=str(orientation))


@pytest.mark.parametrize(
    "contents",
    [
        b"",  # nothing
        b"\xff\xd8\xff\xd9",  # no EXIF segment
        b"\xff\xd8" + b"\xff\xe1\x00\x08Exif\x00\x00",  # the header and nothing after it
        b"\xff\xd8" + b"\xff\xe1\x00\x10Exif\x00\x00XX*\x00\x08\x00\x00\x00",  # bad byte order
        b"\xff\xd8" + b"\xff\xe1\x00\x10Exif\x00\x00II*\x00\xff\xff\xff\x7f",  # IFD past the end
        # "Exif\0\0" after the start of scan is image data, not a header.
        b"\xff\xd8\xff\xda\x00\x02" + b"\xff\xe1\x00\x10Exif\x00\x00" + b"\x00" * 40,
    ],
)
def test_missing_or_malformed_exif_keeps_the_stored_orientation(contents):
    assert int(jpeg_exif_orientation(tf.constant(contents))) == 1


def test_values_outside_one_to_eight_keep_the_stored_orientation(tmp_path):
    for value in (0, 9, 300):
        segment = _exif_segment(value, big_endian=True)
        contents = tf.constant(_jpeg_with(segment))
        assert int(jpeg_exif_orientation(contents)) == 1
