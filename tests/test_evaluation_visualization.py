"""Ranked-list pictures and CMC curves: frame colours, counts, files."""

import os

import cv2
import numpy as np
import pytest

from evaluation import visualization

TILE_SIZE = (32, 16)


def _write_image(path, bgr):
    cv2.imwrite(str(path), np.full((40, 20, 3), bgr, dtype=np.uint8))
    return str(path)


def _frame_pixel(picture, position):
    x0, y0, _, _ = visualization.frame_box(position, *TILE_SIZE)
    return tuple(int(value) for value in picture[y0 + 1, x0 + 1])


def _tile_centre(picture, position):
    x0, y0, x1, y1 = visualization.frame_box(position, *TILE_SIZE)
    return tuple(int(value) for value in picture[(y0 + y1) // 2, (x0 + x1) // 2])


def test_statuses_follow_each_protocol():
    gallery_identities = np.array([7, 7, 3, -1, 7])
    gallery_cameras = np.array([1, 2, 2, 3, 1])
    assert list(
        visualization.ranked_list_statuses(7, 1, gallery_identities, gallery_cameras, "market1501")
    ) == ["junk", "correct", "wrong", "junk", "junk"]
    # cuhk03 separates camera sets: any image from the query's camera is ignored.
    assert list(
        visualization.ranked_list_statuses(3, 2, gallery_identities, gallery_cameras, "cuhk03")
    ) == ["wrong", "junk", "junk", "junk", "wrong"]
    with pytest.raises(ValueError, match="cmc_config"):
        visualization.ranked_list_statuses(7, 1, gallery_identities, gallery_cameras, "viper")


def test_ranked_lists_frame_correct_green_wrong_red_junk_grey(tmp_path):
    blue, yellow, magenta = (255, 0, 0), (0, 255, 255), (255, 0, 255)
    query_paths = [_write_image(tmp_path / f"q{i}.png", blue) for i in range(3)]
    # Gallery 0: the query's identity from another camera; 1: another identity; 2: the query's
    # identity from its own camera (junk under market1501).
    gallery_paths = [
        _write_image(tmp_path / "g0.png", yellow),
        _write_image(tmp_path / "g1.png", magenta),
        _write_image(tmp_path / "g2.png", yellow),
    ]
    distmat = np.array([[0.1, 0.2, 0.05], [0.3, 0.1, 0.2], [0.5, 0.4, 0.3]], dtype=np.float32)
    q_pids, q_camids = np.array([1, 1, 1]), np.array([1, 1, 1])
    g_pids, g_camids = np.array([1, 2, 1]), np.array([2, 1, 1])

    file_paths, num_unreadable = visualization.write_ranked_lists(
        distmat,
        query_paths,
        gallery_paths,
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        str(tmp_path / "lists"),
        num_ranked_lists=2,
        tile_size=TILE_SIZE,
    )

    assert len(file_paths) == 2 and num_unreadable == 0
    assert sorted(os.listdir(tmp_path / "lists")) == ["001_query0_q0.png", "002_query2_q2.png"]
    picture = cv2.imread(file_paths[0])
    colors = visualization.STATUS_COLORS_BGR
    # Query 0 ranks gallery 2 (junk), 0 (correct), 1 (wrong).
    assert _frame_pixel(picture, 0) == colors["query"]
    assert _frame_pixel(picture, 1) == colors["junk"]
    assert _frame_pixel(picture, 2) == colors["correct"]
    assert _frame_pixel(picture, 3) == colors["wrong"]
    assert _tile_centre(picture, 0) == blue
    assert _tile_centre(picture, 2) == yellow and _tile_centre(picture, 3) == magenta
    assert picture.shape[1] == visualization.frame_box(3, *TILE_SIZE)[2] + 1 + visualization.MARGIN


def test_unreadable_images_become_counted_placeholders(tmp_path):
    query_path = _write_image(tmp_path / "q.png", (0, 0, 0))
    picture, num_unreadable = visualization.draw_ranked_list(
        query_path, [str(tmp_path / "gone.png")], [0.5], ["wrong"], tile_size=TILE_SIZE
    )
    assert num_unreadable == 1
    assert _frame_pixel(picture, 1) == visualization.STATUS_COLORS_BGR["wrong"]
    with pytest.raises(ValueError, match="one of each per rank"):
        visualization.draw_ranked_list(query_path, [query_path], [0.1, 0.2], ["wrong"])


def test_query_selection_spreads_over_the_list():
    np.testing.assert_array_equal(visualization.select_query_indices(10, 3), [0, 4, 9])
    np.testing.assert_array_equal(visualization.select_query_indices(2, 5), [0, 1])
    assert visualization.select_query_indices(10, 0).size == 0


def test_cmc_curve_csv_round_trip_and_plot(tmp_path):
    cmc = np.array([0.5, 0.75, 1.0])
    file_path = str(tmp_path / "cmc_curve.csv")
    visualization.write_cmc_csv(file_path, cmc)
    np.testing.assert_allclose(visualization.read_cmc_csv(file_path), cmc)

    png = str(tmp_path / "curves.png")
    visualization.plot_cmc_curves({"a": cmc, "b": cmc * 0.9}, png)
    assert cv2.imread(png).shape[0] > 100

    (tmp_path / "bad.csv").write_text("rank,cmc\n2,0.5\n")
    with pytest.raises(ValueError, match="ranks 1, 2, 3"):
        visualization.read_cmc_csv(str(tmp_path / "bad.csv"))
    with pytest.raises(FileNotFoundError, match="cmc_curve.csv"):
        visualization.read_cmc_csv(str(tmp_path / "none.csv"))


def test_evaluation_pictures_hold_the_hand_computed_cmc(tmp_path):
    paths = [_write_image(tmp_path / f"{i}.png", (i * 40, 0, 0)) for i in range(5)]
    # Query 0 (identity 1, camera 1): gallery order 2 (wrong), 0 (correct) -> first hit at rank 2.
    # Query 1 (identity 2, camera 1): gallery 1 is the nearest and correct -> rank 1.
    distmat = np.array([[0.2, 0.9, 0.1], [0.5, 0.1, 0.3]])
    summary = visualization.write_evaluation_pictures(
        distmat,
        paths[:2],
        paths[2:],
        np.array([1, 2]),
        np.array([1, 2, 3]),
        np.array([1, 1]),
        np.array([2, 2, 2]),
        str(tmp_path),
        num_ranked_lists=5,
    )
    cmc = visualization.read_cmc_csv(str(tmp_path / "cmc_curve.csv"))
    assert cmc.size == visualization.CMC_MAX_RANK
    np.testing.assert_allclose(cmc[:3], [0.5, 1.0, 1.0])
    assert os.path.isfile(summary["cmc_curve_file_path"])
    assert len(summary["ranked_list_file_paths"]) == 2
