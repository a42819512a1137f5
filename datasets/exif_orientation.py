"""EXIF orientation of JPEG files, read and applied in TensorFlow ops, as `cv2.imread` does.

Phones and some cameras store a picture as the sensor saw it and record in its EXIF block how
to turn it for display (tag 0x0112, values 1-8). `cv2.imread`, which FlipReID reads images
with, applies that tag; `tf.io.decode_jpeg` ignores it. The pipeline reads the tag with these
string ops and applies it, so that a phone picture gives the pixels `cv2.imread` gives.

Only the first IFD of an APP1 "Exif" segment that comes before the image data is read; a file
without one, or with a malformed one, keeps orientation 1 (as stored), as in OpenCV.
"""

from applications.core.backend import tf

EXIF_HEADER = b"Exif\x00\x00"
APP1_MARKER = b"\xff\xe1"
START_OF_SCAN_MARKER = b"\xff\xda"
ORIENTATION_TAG = 0x0112
SHORT_TYPE = 3
# Entries of the first IFD read at most (a camera writes a few dozen).
MAX_IFD_ENTRIES = 256
_IFD_ENTRY_BYTES = 12


def _byte_values(data, position, length):
    """`length` bytes of `data` from `position` as int64 (zeros past the end; never raises)."""
    size = tf.cast(tf.strings.length(data), tf.int64)
    position = tf.clip_by_value(tf.cast(position, tf.int64), 0, size)
    padded = data + b"\x00" * length
    values = tf.io.decode_raw(tf.strings.substr(padded, position, length), tf.uint8)
    return tf.cast(tf.reshape(values, [length]), tf.int64)


def _unsigned(byte_values, big_endian):
    """The unsigned integer of a (n,) byte vector in the TIFF block's byte order."""
    ordered = tf.where(big_endian, byte_values, tf.reverse(byte_values, [0]))
    weights = tf.constant([256**i for i in reversed(range(ordered.shape[0]))], tf.int64)
    return tf.reduce_sum(ordered * weights)


def _tiff_orientation(tiff):
    """The orientation entry of the first IFD of a TIFF block (int64; 1 where absent)."""
    byte_order = tf.strings.substr(tiff, 0, 2)
    big_endian = tf.equal(byte_order, b"MM")
    valid_order = big_endian | tf.equal(byte_order, b"II")
    first_ifd = _unsigned(_byte_values(tiff, 4, 4), big_endian)
    num_entries = _unsigned(_byte_values(tiff, first_ifd, 2), big_endian)
    size = tf.cast(tf.strings.length(tiff), tf.int64)
    readable = tf.maximum(size - first_ifd - 2, 0) // _IFD_ENTRY_BYTES
    num_entries = tf.minimum(tf.minimum(num_entries, readable), MAX_IFD_ENTRIES)
    entries = tf.reshape(
        tf.cast(
            tf.io.decode_raw(
                tf.strings.substr(
                    tiff,
                    tf.minimum(first_ifd + 2, size),
                    num_entries * _IFD_ENTRY_BYTES,
                ),
                tf.uint8,
            ),
            tf.int64,
        ),
        [-1, _IFD_ENTRY_BYTES],
    )

    def field(start):
        high, low = entries[:, start], entries[:, start + 1]
        return tf.where(big_endian, high * 256 + low, low * 256 + high)

    # Tag (bytes 0-1), type (2-3), count (4-7), a SHORT value in bytes 8-9.
    matches = tf.equal(field(0), ORIENTATION_TAG) & tf.equal(field(2), SHORT_TYPE)
    values = tf.boolean_mask(field(8), matches)
    orientation = tf.cond(tf.size(values) > 0, lambda: values[0], lambda: tf.constant(1, tf.int64))
    return tf.where(valid_order, orientation, tf.constant(1, tf.int64))


def jpeg_exif_orientation(contents):
    """The EXIF orientation of a JPEG file's bytes.

    Args:
        contents: string scalar, the file's bytes.

    Returns:
        int32 scalar in 1..8: 1 (as stored) without an EXIF orientation before the image data,
        or with a value outside 1..8.
    """
    # Most files (every public ReID set) carry no "Exif\0\0" at all: one scan settles them.
    parts = tf.strings.split(tf.reshape(contents, [1]), EXIF_HEADER, maxsplit=1).values
    return tf.cond(
        tf.equal(tf.size(parts), 2),
        lambda: _orientation_after_exif_header(parts[0], parts[1]),
        lambda: tf.constant(1, tf.int32),
    )


def _orientation_after_exif_header(head, tiff):
    """The orientation where "Exif\0\0" was found after `head`, followed by `tiff` (int32)."""
    head_size = tf.strings.length(head)
    # The header opens an APP1 segment (marker, 2 length bytes) among the headers, before the
    # first start-of-scan marker; anywhere else it is image data.
    in_app1 = tf.greater_equal(head_size, 4) & tf.equal(
        tf.strings.substr(head, tf.maximum(head_size - 4, 0), 2), APP1_MARKER
    )
    scan_parts = tf.strings.split(tf.reshape(head, [1]), START_OF_SCAN_MARKER, maxsplit=1)
    before_scan = tf.equal(tf.size(scan_parts.values), 1)
    orientation = tf.cond(
        in_app1 & before_scan,
        lambda: _tiff_orientation(tiff),
        lambda: tf.constant(1, tf.int64),
    )
    in_range = (orientation >= 1) & (orientation <= 8)
    return tf.cast(tf.where(in_range, orientation, 1), tf.int32)


def apply_exif_orientation(image, orientation):
    """Turns a decoded (H, W, C) image as its EXIF orientation says, for display.

    Args:
        image: (H, W, C) tensor, as stored in the file.
        orientation: int32 scalar in 1..8 (jpeg_exif_orientation).

    Returns:
        (H, W, C) for orientations 1-4, (W, H, C) for 5-8: the pixels `cv2.imread` returns.
    """
    transposed = lambda: tf.transpose(image, [1, 0, 2])  # noqa: E731
    branches = [
        lambda: image,  # 1: as stored
        lambda: tf.reverse(image, [1]),  # 2: mirrored left-right
        lambda: tf.reverse(image, [0, 1]),  # 3: turned 180 degrees
        lambda: tf.reverse(image, [0]),  # 4: mirrored top-bottom
        transposed,  # 5: mirrored along the main diagonal
        lambda: tf.reverse(transposed(), [1]),  # 6: turned 90 degrees clockwise for display
        lambda: tf.reverse(transposed(), [0, 1]),  # 7: mirrored along the other diagonal
        lambda: tf.reverse(transposed(), [0]),  # 8: turned 90 degrees counter-clockwise
    ]
    return tf.switch_case(orientation - 1, branches)
