"""The extract / search / compare_cmc command, run as a user runs it."""

import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from applications import search_images
from applications.feature_extractor import FeatureExtractor, extract_folder, load_features
from applications.model import build_flipreid_models
from evaluation.distances import compute_distance_matrix
from evaluation.search import index_file_path_for
from evaluation.visualization import write_cmc_csv

REPOSITORY_FOLDER_PATH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_CONFIG = dict(backbone_name="resnet18", image_height=64, image_width=32, num_identities=4)


def _run(*arguments):
    completed = subprocess.run(
        [sys.executable, "-m", "applications.search_images", *arguments],
        cwd=REPOSITORY_FOLDER_PATH,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return completed


def _write_images(folder, num_images, seed):
    folder.mkdir(parents=True)
    random = np.random.default_rng(seed)
    for index in range(num_images):
        # Smooth colour fields give the random network distinguishable embeddings.
        small = random.integers(0, 256, size=(4, 2, 3), dtype=np.uint8)
        image = cv2.resize(small, (30 + index, 70), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"{index:03d}.jpg"), image)


def _read_results(file_path):
    with open(file_path) as file:
        rows = list(csv.DictReader(file))
    ranked = {}
    for row in rows:
        ranked.setdefault(row["query_image_file_path"], []).append(row["gallery_image_file_path"])
    return ranked


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    _, inference_model = build_flipreid_models(**MODEL_CONFIG)
    inference_model.save_weights(str(folder / "inference_model.h5"))
    (folder / "model_config.json").write_text(json.dumps(MODEL_CONFIG))
    return folder


def _check_against_brute_force(results_file_path, gallery_npz, query_npz, top_k):
    gallery_features, gallery_paths, _ = load_features(str(gallery_npz))
    query_features, query_paths, _ = load_features(str(query_npz))
    distmat = compute_distance_matrix(query_features, gallery_features)
    expected = np.argsort(distmat, axis=1, kind="stable")[:, :top_k]
    ranked = _read_results(results_file_path)
    assert list(ranked) == query_paths
    for query_index, query_path in enumerate(query_paths):
        assert ranked[query_path] == [gallery_paths[index] for index in expected[query_index]]
    return distmat, expected


def test_search_of_stored_features_returns_the_brute_force_top_k(run_folder, tmp_path, capsys):
    extractor = FeatureExtractor(run_folder / "inference_model.h5")
    _write_images(tmp_path / "gallery", 40, seed=0)
    _write_images(tmp_path / "queries", 3, seed=1)
    for name in ("gallery", "queries"):
        extract_folder(extractor, str(tmp_path / name), str(tmp_path / f"{name}.npz"), verbose=0)

    results_file_path = search_images.run_search(
        gallery_features_path=str(tmp_path / "gallery.npz"),
        query_path=str(tmp_path / "queries.npz"),
        index_type="flat",
        top_k=5,
        results_file_path=str(tmp_path / "results.csv"),
    )

    distmat, expected = _check_against_brute_force(
        results_file_path, tmp_path / "gallery.npz", tmp_path / "queries.npz", 5
    )
    index_file_path = index_file_path_for(str(tmp_path / "gallery.npz"), "flat", "cosine")
    printed = capsys.readouterr().out
    assert f"Index saved to {index_file_path}" in printed
    assert f"1. {distmat[0, expected[0, 0]]:.4f}" in printed
    # A second search reuses the saved index and keeps the first results file.
    second = search_images.run_search(
        gallery_features_path=str(tmp_path / "gallery.npz"),
        query_path=str(tmp_path / "queries.npz"),
        index_type="flat",
        top_k=5,
        results_file_path=str(tmp_path / "results.csv"),
    )
    assert second.endswith("results_2.csv") and "Index loaded from" in capsys.readouterr().out
    assert _read_results(second) == _read_results(results_file_path)
    with pytest.raises(FileNotFoundError, match="No features file at"):
        search_images.run_search(
            gallery_features_path=str(tmp_path / "none.npz"), query_path=str(tmp_path)
        )


def test_compare_cmc_draws_runs_on_one_plot(tmp_path):
    for name, rank1 in (("run_a", 0.5), ("run_b", 0.7)):
        (tmp_path / name).mkdir()
        write_cmc_csv(str(tmp_path / name / "cmc_curve.csv"), np.linspace(rank1, 1.0, 50))
    output = search_images.run_compare_cmc(
        cmc_file_paths=[str(tmp_path / "run_a"), str(tmp_path / "run_b" / "cmc_curve.csv")],
        output_file_path=str(tmp_path / "cmc.png"),
    )
    assert cv2.imread(output) is not None
    with pytest.raises(ValueError, match="--labels has 1 names for 2"):
        search_images.run_compare_cmc(
            cmc_file_paths=[str(tmp_path / "run_a"), str(tmp_path / "run_b")], labels=["a"]
        )


@pytest.mark.slow
def test_extract_and_search_from_the_command_line(run_folder, tmp_path):
    _write_images(tmp_path / "gallery", 20, seed=0)
    _write_images(tmp_path / "queries", 2, seed=1)
    (tmp_path / "queries" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")

    extracted = _run(
        "extract",
        f"--weights_path={run_folder / 'inference_model.h5'}",
        f"--image_folder_path={tmp_path / 'gallery'}",
        f"--features_file_path={tmp_path / 'gallery.npz'}",
    )
    assert extracted.returncode == 0, extracted.stderr
    assert "Embedded 20 images" in extracted.stdout

    # Queries straight from images: embedded with the weights the gallery file names.
    searched = _run(
        "search",
        f"--gallery_features_path={tmp_path / 'gallery.npz'}",
        f"--query_path={tmp_path / 'queries'}",
        "--top_k=3",
        f"--results_file_path={tmp_path / 'results.csv'}",
    )
    assert searched.returncode == 0, searched.stderr
    assert "Skipped 1 unreadable image file(s)" in searched.stdout
    extract_folder(
        FeatureExtractor(run_folder / "inference_model.h5"),
        str(tmp_path / "queries"),
        str(tmp_path / "queries.npz"),
        verbose=0,
    )
    _check_against_brute_force(
        tmp_path / "results.csv", tmp_path / "gallery.npz", tmp_path / "queries.npz", 3
    )


def test_export_command_rebuilds_the_run_and_checks_on_the_folders_images(
    run_folder, tmp_path, monkeypatch
):
    import tf2onnx

    from applications import export

    # Stand-ins for the slow writers (tests/test_applications_export.py runs the real ones).
    monkeypatch.setattr(export.tf.saved_model, "save", lambda module, path, signatures: None)
    monkeypatch.setattr(tf2onnx.convert, "from_function", lambda function, **kwargs: None)
    seen = {}

    def fake_run(path, images):
        seen["images"] = images
        module = export.ServingModule(run_folder_model, 64, 32, True)
        return module.serve(images)[export.OUTPUT_NAME].numpy()

    run_folder_model = FeatureExtractor(run_folder / "inference_model.h5").inference_model
    monkeypatch.setattr(export, "run_onnx_model", fake_run)
    monkeypatch.setattr(export, "run_saved_model", fake_run)
    _write_images(tmp_path / "images", 3, seed=2)

    summary = search_images.run_export(
        weights_path=str(run_folder / "inference_model.h5"),
        image_folder_path=str(tmp_path / "images"),
        export_folder_path=str(tmp_path / "export"),
    )

    assert summary["num_parity_images"] == 1  # three sizes: the first of the largest group
    assert seen["images"].shape == (1, 70, 30, 3)
    with open(tmp_path / "export" / "export_config.json") as file:
        config = json.load(file)
    assert (config["image_height"], config["image_width"]) == (64, 32)
    assert config["use_horizontal_flipping"] is True
