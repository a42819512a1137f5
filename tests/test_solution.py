"""End-to-end runs of solution.py on tiny Synthetic data with the small backbone."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

REPOSITORY_FOLDER_PATH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_FLAGS = [
    "--dataset_name=Synthetic",
    "--synthetic_identity_num=12",
    "--synthetic_camera_num=2",
    "--synthetic_image_num_per_identity=4",
    "--backbone_model_name=resnet18",
    "--image_height=64",
    "--image_width=32",
    "--identity_num_per_batch=3",
    "--image_num_per_identity=2",
    "--testing_batch_size=16",
]

pytestmark = pytest.mark.slow


def run_solution(*arguments, check=True):
    completed = subprocess.run(
        [sys.executable, os.path.join(REPOSITORY_FOLDER_PATH, "solution.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPOSITORY_FOLDER_PATH,
    )
    if check and completed.returncode != 0:
        raise AssertionError(
            f"solution.py failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
        )
    return completed


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One short training run shared by the tests that inspect its outputs."""
    base_path = tmp_path_factory.mktemp("run")
    data_path, output_path = base_path / "data", base_path / "outputs"
    completed = run_solution(
        *TINY_FLAGS,
        f"--root_folder_path={data_path}",
        f"--output_folder_path={output_path}",
        "--epoch_num=2",
        "--steps_per_epoch=2",
        "--evaluate_testing_every_N_epochs=1",
        "--use_re_ranking",
        "--save_data_to_disk",
    )
    run_folder_path = output_path / "Synthetic_resnet18"
    return dict(
        base_path=base_path,
        data_path=data_path,
        output_path=output_path,
        run_folder_path=run_folder_path,
        stdout=completed.stdout,
    )


def test_training_writes_every_output(trained_run):
    run_folder_path = trained_run["run_folder_path"]
    for name in (
        "flags.json",
        "model_config.json",
        "history.csv",
        "metrics.json",
        "training_model.h5",
        "inference_model.h5",
        "features.npz",
    ):
        assert (run_folder_path / name).is_file(), name
    assert any((run_folder_path / "tensorboard").rglob("events.out.tfevents*"))
    flags_used = json.loads((run_folder_path / "flags.json").read_text())
    assert flags_used["epoch_num"] == 2 and flags_used["use_re_ranking"] is True

    history = pd.read_csv(run_folder_path / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    for key in (
        "loss",
        "triplet_loss",
        "cross_entropy_loss",
        "flipping_loss",
        "regularization_loss",
        "accuracy",
        "learning_rate",
        "test_rank1",
        "test_rank5",
        "test_rank10",
        "test_rank20",
        "test_mAP",
        "test_re_ranking_rank1",
        "test_re_ranking_mAP",
    ):
        assert key in history.columns, key
        assert history[key].notna().all(), key
    assert any(column.startswith("gem_power_") for column in history.columns)
    for key in ("loss", "test_mAP", "flipping_loss"):
        assert (run_folder_path / "plots" / f"{key}.png").stat().st_size > 0

    metrics = json.loads((run_folder_path / "metrics.json").read_text())
    for section in ("before_training", "final"):
        for key in (
            "rank1",
            "rank5",
            "rank10",
            "rank20",
            "mAP",
            "re_ranking_rank1",
            "re_ranking_mAP",
        ):
            assert 0.0 <= metrics[section][key] <= 1.0, (section, key)
    assert metrics["final"]["mAP"] == pytest.approx(history["test_mAP"].iloc[-1])
    assert "mAP went from" in trained_run["stdout"]


def test_saved_features_match_the_test_split(trained_run):
    features = np.load(trained_run["run_folder_path"] / "features.npz")
    query_features, gallery_features = features["query_features"], features["gallery_features"]
    assert query_features.shape[0] == features["query_identity_IDs"].shape[0]
    assert gallery_features.shape[0] == features["gallery_camera_IDs"].shape[0]
    assert query_features.shape[1] == gallery_features.shape[1]
    assert np.isfinite(query_features).all() and np.isfinite(gallery_features).all()
    # Query identities all appear in the gallery: the split is by identity.
    assert set(features["query_identity_IDs"]) <= set(features["gallery_identity_IDs"])


def test_evaluation_only_reproduces_the_best_epoch(trained_run):
    run_folder_path = trained_run["run_folder_path"]
    metrics = json.loads((run_folder_path / "metrics.json").read_text())
    history = pd.read_csv(run_folder_path / "history.csv")
    best_epoch_mAP = history.loc[history["epoch"] == metrics["best_epoch"], "test_mAP"].item()
    completed = run_solution(
        *TINY_FLAGS,
        f"--root_folder_path={trained_run['data_path']}",
        f"--output_folder_path={trained_run['output_path']}",
        "--evaluation_only",
        f"--pretrained_model_file_path={run_folder_path / 'training_model.h5'}",
    )
    # A second run never reuses the first run's folder.
    evaluation_folder_path = trained_run["output_path"] / "Synthetic_resnet18_2"
    assert str(evaluation_folder_path) in completed.stdout
    assert "Synthetic_resnet18 already exists" in completed.stdout
    assert (trained_run["run_folder_path"] / "training_model.h5").is_file()
    assert not (evaluation_folder_path / "history.csv").exists()  # no training step ran
    evaluation = json.loads((evaluation_folder_path / "metrics.json").read_text())
    assert evaluation["evaluation_only"]["mAP"] == pytest.approx(best_epoch_mAP, abs=1e-6)


def test_evaluation_only_on_a_testing_subset(trained_run):
    full = np.load(trained_run["run_folder_path"] / "features.npz")
    output_path = trained_run["base_path"] / "subset_outputs"
    run_solution(
        *TINY_FLAGS,
        f"--root_folder_path={trained_run['data_path']}",
        f"--output_folder_path={output_path}",
        "--evaluation_only",
        f"--pretrained_model_file_path={trained_run['run_folder_path'] / 'inference_model.h5'}",
        "--testing_size=0.5",
        "--save_data_to_disk",
    )
    subset = np.load(output_path / "Synthetic_resnet18" / "features.npz")
    full_identities = set(full["query_identity_IDs"])
    subset_identities = set(subset["query_identity_IDs"])
    assert 0 < len(subset_identities) < len(full_identities)
    assert subset_identities <= full_identities
    assert len(subset["query_features"]) < len(full["query_features"])


def test_weights_of_another_backbone_are_a_clear_error(trained_run, tmp_path):
    completed = run_solution(
        *TINY_FLAGS[:4],
        "--backbone_model_name=resnet50",
        "--image_height=64",
        "--image_width=32",
        f"--root_folder_path={trained_run['data_path']}",
        f"--output_folder_path={tmp_path}",
        "--evaluation_only",
        f"--pretrained_model_file_path={trained_run['run_folder_path'] / 'training_model.h5'}",
        check=False,
    )
    assert completed.returncode != 0
    assert "training_model.h5" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["--evaluation_only"], "--pretrained_model_file_path"),
        (["--testing_size=0"], "--testing_size"),
        (["--pretrained_model_file_path=/nonexistent/model.h5"], "--pretrained_model_file_path"),
        (["--dataset_name=Market1501", "--root_folder_path=/nonexistent"], "Market-1501"),
        (["--backbone_model_name=vgg"], "resnet50"),
    ],
)
def test_bad_flags_are_clear_errors(arguments, expected, tmp_path):
    completed = run_solution(*arguments, f"--output_folder_path={tmp_path}", check=False)
    assert completed.returncode != 0
    assert expected in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not any(tmp_path.iterdir())  # a stopped run leaves no output folder behind


def test_a_corrupt_image_is_skipped_counted_and_reported_with_verify_images(trained_run, tmp_path):
    import shutil

    data_path = tmp_path / "data"
    shutil.copytree(trained_run["data_path"], data_path)
    gallery_files = sorted(data_path.glob("Synthetic_*/bounding_box_test/0*.jpg"))
    corrupt_file = gallery_files[len(gallery_files) // 2]
    corrupt_file.write_bytes(b"not a jpeg at all")
    output_path = tmp_path / "outputs"
    completed = run_solution(
        *TINY_FLAGS,
        f"--root_folder_path={data_path}",
        f"--output_folder_path={output_path}",
        "--evaluation_only",
        f"--pretrained_model_file_path={trained_run['run_folder_path'] / 'inference_model.h5'}",
        "--verify_images",
        "--save_data_to_disk",
    )
    metrics = json.loads((output_path / "Synthetic_resnet18" / "metrics.json").read_text())
    notes = [note for note in metrics["dataset_notes"] if corrupt_file.name in note]
    assert len(notes) == 1 and "1" in notes[0]
    assert corrupt_file.name in completed.stdout  # printed with the results, not only logged
    features = np.load(output_path / "Synthetic_resnet18" / "features.npz")
    full = np.load(trained_run["run_folder_path"] / "features.npz")
    assert len(features["gallery_features"]) == len(full["gallery_features"]) - 1
    assert not any(corrupt_file.name in path for path in features["gallery_image_file_paths"])


def test_cross_dataset_evaluation_takes_the_inference_weights(trained_run, tmp_path):
    # Another Synthetic draw with a different number of training identities than the run's 6.
    other_dataset_flags = [flag for flag in TINY_FLAGS if "synthetic_identity_num" not in flag]
    other_dataset_flags += ["--synthetic_identity_num=16", f"--root_folder_path={tmp_path}/data"]
    completed = run_solution(
        *other_dataset_flags,
        f"--output_folder_path={tmp_path}/outputs",
        "--evaluation_only",
        f"--pretrained_model_file_path={trained_run['run_folder_path'] / 'inference_model.h5'}",
    )
    assert "Loaded the inference model's weights" in completed.stdout
    completed = run_solution(
        *other_dataset_flags,
        f"--output_folder_path={tmp_path}/outputs",
        "--evaluation_only",
        f"--pretrained_model_file_path={trained_run['run_folder_path'] / 'training_model.h5'}",
        check=False,
    )
    assert completed.returncode != 0
    assert "pass the inference_model.h5" in completed.stderr
    assert "Traceback" not in completed.stderr
