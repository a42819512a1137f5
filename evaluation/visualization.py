"""Pictures of evaluation results: ranked lists of queries and CMC curves.

A ranked-list picture shows a query and its nearest gallery images, left to right, each framed
by its status under the evaluation protocol: green for a correct match, red for a wrong one,
grey for junk (same identity seen by the query's camera, which the protocol ignores), with the
rank and distance under each image. CMC curves are drawn with matplotlib, one or several runs
on one plot.

NumPy, OpenCV and matplotlib only; no TensorFlow.
"""

import csv
import os

import cv2
import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; evaluation machines usually have no display
import matplotlib.pyplot as plt  # noqa: E402

from evaluation.metrics import compute_CMC_mAP, get_cmc_config  # noqa: E402

STATUS_COLORS_BGR = {
    "query": (200, 120, 0),
    "correct": (0, 190, 0),
    "wrong": (0, 0, 230),
    "junk": (150, 150, 150),
}
MARGIN = 8
BORDER = 4
QUERY_GAP = 24
TEXT_HEIGHT = 34
DEFAULT_TILE_SIZE = (128, 64)
CMC_MAX_RANK = 50


def ranked_list_statuses(
    query_identity_ID, query_camera_ID, gallery_identity_IDs, gallery_camera_IDs, cmc_config
):
    """The status of every gallery image for one query.

    Args:
        query_identity_ID: int.
        query_camera_ID: int.
        gallery_identity_IDs: int array (num_gallery,).
        gallery_camera_IDs: int array (num_gallery,).
        cmc_config: "market1501", "cuhk03" or "allshots" (see evaluation.metrics).

    Returns:
        str array (num_gallery,) of "correct", "wrong" or "junk". Junk: identity -1, the
        query's identity seen by the query's camera, and with cuhk03 (separate camera sets)
        every image of the query's camera.
    """
    config = get_cmc_config(cmc_config)
    gallery_identity_IDs = np.asarray(gallery_identity_IDs)
    gallery_camera_IDs = np.asarray(gallery_camera_IDs)
    same_identity = gallery_identity_IDs == query_identity_ID
    same_camera = gallery_camera_IDs == query_camera_ID
    junk = (same_identity & same_camera) | (gallery_identity_IDs == -1)
    if config.separate_camera_set:
        junk |= same_camera
    return np.where(junk, "junk", np.where(same_identity, "correct", "wrong"))


def frame_box(position, tile_height, tile_width):
    """Pixel box (x0, y0, x1, y1), inclusive, of the frame of tile `position` (0: the query).

    Args:
        position: int, 0 for the query, r for the gallery image at rank r.
        tile_height: int, image height in pixels (the frame adds BORDER on each side).
        tile_width: int, image width in pixels.
    """
    step = tile_width + 2 * BORDER + MARGIN
    x0 = MARGIN + position * step + (QUERY_GAP if position > 0 else 0)
    return x0, MARGIN, x0 + tile_width + 2 * BORDER - 1, MARGIN + tile_height + 2 * BORDER - 1


def _read_tile(image_file_path, tile_height, tile_width):
    """The image resized to the tile, BGR, or a grey tile with '?' when it cannot be read."""
    image = cv2.imread(image_file_path, cv2.IMREAD_COLOR) if image_file_path else None
    if image is None:
        tile = np.full((tile_height, tile_width, 3), 200, dtype=np.uint8)
        cv2.putText(
            tile,
            "?",
            (tile_width // 2 - 8, tile_height // 2 + 8),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.9,
            (60, 60, 60),
            2,
        )
        return tile, False
    return cv2.resize(image, (tile_width, tile_height), interpolation=cv2.INTER_AREA), True


def draw_ranked_list(
    query_image_file_path,
    gallery_image_file_paths,
    distances,
    statuses,
    *,
    tile_size=DEFAULT_TILE_SIZE,
):
    """Draws one query and its ranked gallery images side by side.

    Args:
        query_image_file_path: str.
        gallery_image_file_paths: R str, nearest first.
        distances: float (R,), their distances.
        statuses: R str, "correct", "wrong" or "junk" (frame colour: green, red, grey).
        tile_size: (height, width) of each image in pixels.

    Returns:
        (picture, num_unreadable): uint8 BGR (height, width, 3) picture, and how many of the
        images could not be read (drawn as grey tiles with '?').
    """
    tile_height, tile_width = tile_size
    num_results = len(gallery_image_file_paths)
    if not len(distances) == len(statuses) == num_results:
        raise ValueError(
            f"{num_results} gallery images, {len(distances)} distances and {len(statuses)} "
            "statuses: one of each per rank is needed."
        )
    width = frame_box(num_results, tile_height, tile_width)[2] + 1 + MARGIN
    height = MARGIN + tile_height + 2 * BORDER + TEXT_HEIGHT
    picture = np.full((height, width, 3), 255, dtype=np.uint8)
    entries = [(query_image_file_path, "query", "query", "")]
    for rank, (path, distance, status) in enumerate(
        zip(gallery_image_file_paths, distances, statuses), start=1
    ):
        if status not in STATUS_COLORS_BGR or status == "query":
            raise ValueError(f"Unknown status {status!r}; use correct, wrong or junk.")
        # Three significant digits: well-trained models put the top ranks at distances ~1e-3.
        entries.append((path, status, f"#{rank}", f"{float(distance):.3g}"))
    num_unreadable = 0
    for position, (path, status, first_line, second_line) in enumerate(entries):
        tile, readable = _read_tile(path, tile_height, tile_width)
        num_unreadable += not readable
        x0, y0, x1, y1 = frame_box(position, tile_height, tile_width)
        picture[y0 : y1 + 1, x0 : x1 + 1] = STATUS_COLORS_BGR[status]
        picture[y0 + BORDER : y1 + 1 - BORDER, x0 + BORDER : x1 + 1 - BORDER] = tile
        for line_index, text in enumerate((first_line, second_line)):
            cv2.putText(
                picture,
                text,
                (x0, y1 + 14 + 14 * line_index),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4,
                (0, 0, 0),
                1,
                cv2.LINE_AA,
            )
    return picture, num_unreadable


def select_query_indices(num_query, num_ranked_lists):
    """min(num_ranked_lists, num_query) query indices spread evenly, first and last included."""
    if num_ranked_lists < 1 or num_query < 1:
        return np.zeros(0, dtype=np.int64)
    return np.unique(
        np.linspace(0, num_query - 1, min(num_ranked_lists, num_query)).round()
    ).astype(np.int64)


def write_ranked_lists(
    distmat,
    query_image_file_paths,
    gallery_image_file_paths,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    output_folder_path,
    *,
    num_ranked_lists,
    num_ranks=10,
    cmc_config="market1501",
    tile_size=DEFAULT_TILE_SIZE,
):
    """Writes one ranked-list PNG per selected query (see draw_ranked_list).

    Args:
        distmat: float (num_query, num_gallery), smaller is closer.
        query_image_file_paths: num_query str.
        gallery_image_file_paths: num_gallery str.
        q_pids: int (num_query,) identities.
        g_pids: int (num_gallery,).
        q_camids: int (num_query,) cameras.
        g_camids: int (num_gallery,).
        output_folder_path: str, created if needed.
        num_ranked_lists: int, queries drawn (spread evenly over the query list).
        num_ranks: int, gallery images per query (ties follow gallery order).
        cmc_config: str, the protocol that decides junk.
        tile_size: (height, width) of each image.

    Returns:
        (file_paths, num_unreadable): the written PNGs, and the number of images that could not
        be read and were drawn as grey '?' tiles.
    """
    distmat = np.asarray(distmat)
    os.makedirs(output_folder_path, exist_ok=True)
    file_paths, num_unreadable = [], 0
    num_ranks = min(num_ranks, distmat.shape[1])
    for order, query_index in enumerate(select_query_indices(distmat.shape[0], num_ranked_lists)):
        ranked = np.argsort(distmat[query_index], kind="stable")[:num_ranks]
        statuses = ranked_list_statuses(
            q_pids[query_index], q_camids[query_index], g_pids[ranked], g_camids[ranked], cmc_config
        )
        picture, unreadable = draw_ranked_list(
            query_image_file_paths[query_index],
            [gallery_image_file_paths[index] for index in ranked],
            distmat[query_index, ranked],
            statuses,
            tile_size=tile_size,
        )
        num_unreadable += unreadable
        stem = os.path.splitext(os.path.basename(query_image_file_paths[query_index]))[0]
        file_path = os.path.join(
            output_folder_path, f"{order + 1:03d}_query{query_index}_{stem}.png"
        )
        if not cv2.imwrite(file_path, picture, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise OSError(f"Cannot write {file_path}.")
        file_paths.append(file_path)
    return file_paths, num_unreadable


def write_cmc_csv(file_path, cmc):
    """Writes a CMC curve as CSV rows (rank, cmc), rank 1-based, cmc a fraction in [0, 1]."""
    with open(file_path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["rank", "cmc"])
        for rank, value in enumerate(np.asarray(cmc, dtype=np.float64), start=1):
            writer.writerow([rank, f"{value:.6f}"])


def read_cmc_csv(file_path):
    """Reads a CMC curve written by write_cmc_csv.

    Returns:
        float64 (num_ranks,), the value at ranks 1, 2, ...

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a CMC CSV.
    """
    if not os.path.isfile(file_path):
        raise FileNotFoundError(
            f"No CMC curve at {file_path}; runs write cmc_curve.csv after their final evaluation."
        )
    try:
        with open(file_path, newline="") as file:
            rows = list(csv.DictReader(file))
        ranks = [int(row["rank"]) for row in rows]
        values = np.array([float(row["cmc"]) for row in rows], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{file_path} is not a CMC CSV with rank and cmc columns: {error}"
        ) from None
    if not rows or ranks != list(range(1, len(rows) + 1)):
        raise ValueError(f"{file_path} must list ranks 1, 2, 3, ... in order.")
    return values


def plot_cmc_curves(curves, output_file_path, *, max_rank=CMC_MAX_RANK, title="CMC curve"):
    """Draws one or several CMC curves (rank 1..max_rank) on one plot.

    Args:
        curves: dict label -> float (num_ranks,) CMC values in [0, 1] at ranks 1, 2, ...
        output_file_path: str, the PNG to write.
        max_rank: int, last rank shown.
        title: str.
    """
    if not curves:
        raise ValueError("plot_cmc_curves got no curves.")
    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    for label, cmc in curves.items():
        cmc = np.asarray(cmc, dtype=np.float64)[:max_rank]
        ranks = np.arange(1, cmc.size + 1)
        axes.plot(
            ranks, 100 * cmc, marker="o", markersize=3, label=f"{label} (rank-1 {cmc[0]:.1%})"
        )
    axes.set_xlim(1, max_rank)
    axes.set_xlabel("rank")
    axes.set_ylabel("matching rate (%)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(output_file_path, dpi=100)
    plt.close(figure)


def write_evaluation_pictures(
    distmat,
    query_image_file_paths,
    gallery_image_file_paths,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    output_folder_path,
    *,
    num_ranked_lists,
    cmc_config="market1501",
    label="this run",
):
    """Writes the CMC curve (cmc_curve.csv, cmc_curve.png) and ranked lists of one evaluation.

    Args:
        distmat: float (num_query, num_gallery).
        query_image_file_paths: num_query str.
        gallery_image_file_paths: num_gallery str.
        q_pids: int (num_query,).
        g_pids: int (num_gallery,).
        q_camids: int (num_query,).
        g_camids: int (num_gallery,).
        output_folder_path: str, the run folder (created if needed); ranked lists go to its
            ranked_lists/.
        num_ranked_lists: int, queries to draw (0: none).
        cmc_config: str, the CMC protocol.
        label: str, the curve's legend label.

    Returns:
        dict with cmc_curve_file_path, ranked_list_file_paths and num_unreadable_images.
    """
    os.makedirs(output_folder_path, exist_ok=True)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    cmc, _ = compute_CMC_mAP(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank=CMC_MAX_RANK, cmc_config=cmc_config
    )
    write_cmc_csv(os.path.join(output_folder_path, "cmc_curve.csv"), cmc)
    cmc_curve_file_path = os.path.join(output_folder_path, "cmc_curve.png")
    plot_cmc_curves({label: cmc}, cmc_curve_file_path)
    ranked_list_file_paths, num_unreadable = [], 0
    if num_ranked_lists > 0:
        ranked_list_file_paths, num_unreadable = write_ranked_lists(
            distmat,
            query_image_file_paths,
            gallery_image_file_paths,
            q_pids,
            g_pids,
            q_camids,
            g_camids,
            os.path.join(output_folder_path, "ranked_lists"),
            num_ranked_lists=num_ranked_lists,
            cmc_config=cmc_config,
        )
    return {
        "cmc_curve_file_path": cmc_curve_file_path,
        "ranked_list_file_paths": ranked_list_file_paths,
        "num_unreadable_images": num_unreadable,
    }
