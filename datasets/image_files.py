"""The bad-image policy, in one place: which files count as images, and what happens to bad ones.

A dataset of tens of thousands of files usually holds a few bad ones (empty, cut short by a
failed copy, not an image at all). They are skipped and counted, never fatal and never silent:

1. At load, every file gets a cheap structural check, ``check_image_file``: it exists, is not
   empty, starts with a known image signature (JPEG, PNG, GIF, BMP) and, for JPEG and PNG, ends
   with the end-of-image marker. It reads two small pieces of each file, so a Market-1501-sized
   dataset is checked in about a second. ``verify_images=True`` (``--verify_images``) also
   decodes every file with OpenCV (``is_decodable_image``): minutes on a real dataset.
2. In the tf.data pipelines, the same structural rule runs again in TensorFlow ops
   (``image_contents_look_whole_tf``) before decoding, and a file that still fails (a whole
   header and end marker around corrupt data) is dropped by the pipeline and recorded in a
   ``SkippedImageLog``: training replaces it by another image of the same identity, testing
   leaves it out of the evaluated set.

Nothing here imports TensorFlow at module level, so the loaders stay TensorFlow-free.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import cv2
import numpy as np
from absl import logging

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# First bytes of the formats both OpenCV and tf.io.decode_image read.
IMAGE_SIGNATURES = (JPEG_SIGNATURE, PNG_SIGNATURE, b"GIF87a", b"GIF89a", b"BM")
# Bytes read from the start and searched at the end of a file (encoders may pad after a JPEG's
# end marker).
HEAD_LENGTH = 8
TAIL_LENGTH = 256
# How many offending file names a skip message names before it only counts.
NUM_NAMED_EXAMPLES = 3

# Reasons a file is skipped, as the messages write them.
FILE_MISSING = "file missing"
FILE_EMPTY = "file empty"
NOT_AN_IMAGE = "not a JPEG, PNG, GIF or BMP file"
TRUNCATED = "truncated: no end-of-image marker"
UNDECODABLE = "image undecodable"


def is_image_file_name(file_name: str) -> bool:
    """Tells whether a file name has one of the ``IMAGE_EXTENSIONS`` (case-insensitive)."""
    return os.path.splitext(file_name)[1].lower() in IMAGE_EXTENSIONS


def image_bytes_look_whole(head: bytes, tail: bytes) -> str | None:
    """The structural rule on a file's first and last bytes.

    Args:
        head: The file's first ``HEAD_LENGTH`` bytes (fewer for a shorter file).
        tail: The file's last ``TAIL_LENGTH`` bytes (the whole file when shorter).

    Returns:
        None when the bytes look like a whole image, else the reason (``NOT_AN_IMAGE`` or
        ``TRUNCATED``).
    """
    if not any(head.startswith(signature) for signature in IMAGE_SIGNATURES):
        return NOT_AN_IMAGE
    # 0xFF 0xD9 cannot occur inside JPEG entropy-coded data (0xFF is byte-stuffed there).
    if head.startswith(JPEG_SIGNATURE) and b"\xff\xd9" not in tail:
        return TRUNCATED
    # A PNG ends with the 12-byte IEND chunk: length, "IEND", CRC.
    if head.startswith(PNG_SIGNATURE) and tail[-8:-4] != b"IEND":
        return TRUNCATED
    return None


def check_image_file(image_file_path: str) -> str | None:
    """The cheap load-time check: exists, not empty, image signature, end-of-image marker.

    Args:
        image_file_path: The file.

    Returns:
        None for a file that looks like a whole image, else why it does not (``FILE_MISSING``,
        ``FILE_EMPTY``, ``NOT_AN_IMAGE`` or ``TRUNCATED``).
    """
    if not os.path.isfile(image_file_path):
        return FILE_MISSING
    try:
        size = os.path.getsize(image_file_path)
        if size == 0:
            return FILE_EMPTY
        with open(image_file_path, "rb") as file:
            head = file.read(HEAD_LENGTH)
            file.seek(max(0, size - TAIL_LENGTH))
            tail = file.read(TAIL_LENGTH)
    except OSError:
        return FILE_MISSING
    return image_bytes_look_whole(head, tail)


def is_decodable_image(image_file_path: str) -> bool:
    """Tells whether OpenCV can decode the image file (the full check of ``--verify_images``)."""
    encoded = np.fromfile(image_file_path, dtype=np.uint8)
    if encoded.size == 0:
        return False
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR) is not None


def image_contents_look_whole_tf(contents):
    """``image_bytes_look_whole`` in TensorFlow ops, for the tf.data pipelines.

    Args:
        contents: string scalar tensor, a whole file's bytes.

    Returns:
        bool scalar tensor, True when the bytes look like a whole image.
    """
    from applications.core.backend import tf

    is_image = tf.reduce_any(
        [
            tf.equal(tf.strings.substr(contents, 0, len(signature)), signature)
            for signature in IMAGE_SIGNATURES
        ]
    )
    length = tf.strings.length(contents)
    tail = tf.io.decode_raw(
        tf.strings.substr(contents, tf.maximum(length - TAIL_LENGTH, 0), TAIL_LENGTH), tf.uint8
    )
    tail = tf.cast(tail, tf.int32)
    has_jpeg_end = tf.reduce_any((tail[:-1] == 0xFF) & (tail[1:] == 0xD9))
    has_png_end = tf.equal(tf.strings.substr(contents, tf.maximum(length - 8, 0), 4), b"IEND")
    is_jpeg = tf.equal(tf.strings.substr(contents, 0, len(JPEG_SIGNATURE)), JPEG_SIGNATURE)
    is_png = tf.equal(tf.strings.substr(contents, 0, len(PNG_SIGNATURE)), PNG_SIGNATURE)
    return is_image & (~is_jpeg | has_jpeg_end) & (~is_png | has_png_end)


def format_skip_message(
    dataset_name: str, split_name: str, reason: str, examples: Sequence[str]
) -> str:
    """Formats a counted-skip note naming the first few offending files.

    Args:
        dataset_name: Dataset name for the message.
        split_name: "train", "query" or "gallery".
        reason: Why the files were skipped, e.g. "file name does not parse".
        examples: All skipped file names or paths.

    Returns:
        One line, e.g.
        "Market1501 query: skipped 2 images (file name does not parse): a.jpg, b.jpg".
    """
    return _format_skip(f"{dataset_name} {split_name}", reason, examples)


def _format_skip(where: str, reason: str, examples: Sequence[str]) -> str:
    named = ", ".join(str(example) for example in examples[:NUM_NAMED_EXAMPLES])
    more = ", ..." if len(examples) > NUM_NAMED_EXAMPLES else ""
    return (
        f"{where}: skipped {len(examples)} image"
        f"{'s' if len(examples) != 1 else ''} ({reason}): {named}{more}"
    )


class SkippedImageLog:
    """Thread-safe record of the image files a pipeline could not decode.

    The tf.data pipelines record into it from their worker threads; the run reads it for its
    messages and its end-of-run count. Each file is counted once, however often it is drawn,
    and logged as a warning the first time.

    Args:
        name: Who skips, for the messages, e.g. "Market1501 train".
    """

    def __init__(self, name: str = "images"):
        self.name = name
        self._lock = threading.Lock()
        self._skipped: dict[str, str] = {}

    def record(self, image_file_path: str, reason: str = UNDECODABLE) -> None:
        """Counts ``image_file_path`` as skipped (once), logging it the first time."""
        with self._lock:
            if image_file_path in self._skipped:
                return
            self._skipped[image_file_path] = reason
        logging.warning("%s: skipped %s (%s)", self.name, image_file_path, reason)

    @property
    def num_skipped(self) -> int:
        """The number of distinct files skipped so far."""
        with self._lock:
            return len(self._skipped)

    @property
    def skipped_file_paths(self) -> list[str]:
        """The skipped files, in the order they were first met."""
        with self._lock:
            return list(self._skipped)

    def messages(self) -> list[str]:
        """One ``format_skip_message`` line per reason, in ``ReIDDataset.messages`` style."""
        with self._lock:
            by_reason: dict[str, list[str]] = {}
            for path, reason in self._skipped.items():
                by_reason.setdefault(reason, []).append(os.path.basename(path))
        return [_format_skip(self.name, reason, examples) for reason, examples in by_reason.items()]
