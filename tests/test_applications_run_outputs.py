"""A run with --visualize_ranked_lists and --export_folder_path: pictures and a checked export."""

import json
import os

import cv2
import numpy as np
import pytest

from applications.config import build_experiment_config
from applications.experiment import run_experiment
from applications.export import run_onnx_model, run_saved_model
from applications.feature_extractor import FeatureExtractor
from evaluation.distances import compute_distance_matrix
from evaluation.visualization import (
    DEFAULT_TILE_SIZE,
    STATUS_COLORS_BGR,
    frame_box,
    select_query_indices,
)
from tests.config_fixtures import tiny_config

pytestmark = pytest.mark.slow

# More than the 12 queries: one picture per query.
NUM_RANKED_LISTS = 20
NUM_QUERIES = 12


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base_path = tmp_path_factory.mktemp("run_outputs")
    config = tiny_config(
        root_folder_path=str(base_path / "data"),
        output_folder_path=str(base_path / "outputs"),
        synthetic_image_num_per_identity=6,
        epoch_num=1,
        steps_per_epoch=2,
        evaluate_before_training=False,
        save_data_to_disk=True,
        visualize_ranked_lists=NUM_RANKED_LISTS,
        export_folder_path=str(base_path / "export"),
    )
    outcome = run_experiment(config)
    return dict(base_path=base_path, outcome=outcome, folder=outcome.output_folder_path)


def test_ranked_lists_frame_each_result_by_its_identity_and_camera(run):
    # A one-epoch model ranks badly, so its pictures show few correct matches; this checks every
    # frame against the saved features. tests/test_applications_result_pictures.py checks known
    # correct matches.
    folder = run["folder"]
    with np.load(os.path.join(folder, "features.npz")) as saved:
        data = {key: saved[key] for key in saved.files}
    distmat = compute_distance_matrix(data["query_features"], data["gallery_features"])
    file_names = sorted(os.listdir(os.path.join(folder, "ranked_lists")))
    assert len(file_names) == NUM_QUERIES == distmat.shape[0]
    query_indices = select_query_indices(distmat.shape[0], NUM_RANKED_LISTS)
    for file_name, query_index in zip(file_names, query_indices):
        assert f"_query{query_index}_" in file_name
        picture = cv2.imread(os.path.join(folder, "ranked_lists", file_name))
        ranked = np.argsort(distmat[query_index], kind="stable")[:10]
        for rank, gallery_index in enumerate(ranked, start=1):
            same_identity = (
                data["gallery_identity_IDs"][gallery_index]
                == data["query_identity_IDs"][query_index]
            )
            same_camera = (
                data["gallery_camera_IDs"][gallery_index] == data["query_camera_IDs"][query_index]
            )
            expected = "junk" if same_identity and same_camera else "wrong"
            expected = "correct" if same_identity and not same_camera else expected
            x0, y0, _, _ = frame_box(rank, *DEFAULT_TILE_SIZE)
            assert tuple(int(v) for v in picture[y0 + 1, x0 + 1]) == STATUS_COLORS_BGR[expected]
    cmc = np.loadtxt(os.path.join(folder, "cmc_curve.csv"), delimiter=",", skiprows=1)
    assert cmc.shape == (50, 2) and (np.diff(cmc[:, 1]) >= 0).all()
    assert os.path.isfile(os.path.join(folder, "cmc_curve.png"))


def test_export_matches_the_saved_weights_on_held_out_images(run):
    folder = run["folder"]
    export = run["outcome"].results["export"]
    assert export["onnx_max_abs_difference"] <= 1e-4
    assert export["saved_model_max_abs_difference"] <= 1e-4
    with open(os.path.join(folder, "metrics.json")) as file:
        assert json.load(file)["export"]["onnx_file_path"] == export["onnx_file_path"]

    # Gallery images (the parity check used query images), embedded by the Python API from the
    # run's saved weights with the same flip setting.
    with np.load(os.path.join(folder, "features.npz")) as saved:
        gallery_paths = [str(path) for path in saved["gallery_image_file_paths"][:6]]
    images = np.stack([cv2.imread(path)[..., ::-1] for path in gallery_paths])
    extractor = FeatureExtractor(
        os.path.join(folder, "inference_model.h5"), use_horizontal_flipping=True
    )
    expected = extractor(list(images))
    assert np.max(np.abs(run_onnx_model(export["onnx_file_path"], images) - expected)) <= 1e-4
    saved_model = run_saved_model(export["saved_model_folder_path"], images)
    assert np.max(np.abs(saved_model - expected)) <= 1e-4


def test_an_existing_export_folder_is_refused_before_anything_runs(run):
    with pytest.raises(ValueError, match="--export_folder_path must not already hold an export"):
        build_experiment_config(export_folder_path=str(run["base_path"] / "export"))
