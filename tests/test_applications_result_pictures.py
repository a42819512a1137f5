"""Ranked lists of a model whose embeddings reveal the identity: correct matches framed green."""

import os

import cv2
import numpy as np
import pandas as pd

from applications.core.backend import keras
from applications.result_pictures import write_result_pictures
from evaluation.visualization import DEFAULT_TILE_SIZE, STATUS_COLORS_BGR, frame_box

# Identity -> its colour (BGR); every image of an identity is that flat colour, so a model that
# embeds the mean colour puts an identity's images at distance 0 from each other.
COLORS = {1: (200, 30, 30), 2: (30, 200, 30), 3: (30, 30, 200)}


def _mean_colour_model(height, width):
    images = keras.Input((height, width, 3))
    # Centred colours: the cosine distance compares directions, which tell the colours apart.
    centred = keras.layers.Rescaling(1 / 255, offset=-0.45)(images)
    return keras.Model(images, keras.layers.GlobalAveragePooling2D()(centred))


def _split(folder, rows):
    records = []
    for index, (identity, camera) in enumerate(rows):
        path = str(folder / f"{identity:04d}_c{camera}_{index}.png")
        cv2.imwrite(path, np.full((40, 20, 3), COLORS[identity], dtype=np.uint8))
        records.append(dict(image_file_path=path, identity_ID=identity, camera_ID=camera))
    return pd.DataFrame(records)


def test_correct_matches_are_framed_green_and_junk_grey(tmp_path):
    (tmp_path / "query").mkdir()
    (tmp_path / "gallery").mkdir()
    query = _split(tmp_path / "query", [(1, 1), (2, 1), (3, 2)])
    # Identity 1: one match from camera 2 (correct) and one from camera 1 (junk for query 1).
    gallery = _split(tmp_path / "gallery", [(2, 2), (3, 1), (1, 1), (1, 2), (2, 1), (3, 1), (2, 2)])

    summary = write_result_pictures(
        _mean_colour_model(32, 16),
        query,
        gallery,
        str(tmp_path / "run"),
        visualize_ranked_lists=3,
        image_height=32,
        image_width=16,
        use_horizontal_flipping_in_evaluation=True,
    )

    paths = summary["ranked_list_file_paths"]
    assert len(paths) == 3 and all(os.path.isfile(path) for path in paths)
    first = cv2.imread(paths[0])

    def frame_colour(position):
        x0, y0, _, _ = frame_box(position, *DEFAULT_TILE_SIZE)
        return tuple(int(value) for value in first[y0 + 1, x0 + 1])

    # Query 1 (camera 1): its two same-colour images come first in gallery order: gallery 2
    # (camera 1, junk), then gallery 3 (camera 2, correct); the rest are wrong.
    assert frame_colour(1) == STATUS_COLORS_BGR["junk"]
    assert frame_colour(2) == STATUS_COLORS_BGR["correct"]
    assert frame_colour(3) == STATUS_COLORS_BGR["wrong"]
    cmc = np.loadtxt(tmp_path / "run" / "cmc_curve.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(cmc[0, 1], 1.0)  # every query's first valid match is correct
