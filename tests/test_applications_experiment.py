"""run_experiment in-process on tiny Synthetic data: outputs, weights, subsets, bad input."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from applications.experiment import run_experiment
from applications.optimizers import regularization_settings
from tests.config_fixtures import tiny_config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One short training run shared by the tests that inspect its outputs."""
    base_path = tmp_path_factory.mktemp("run")
    outcome = run_experiment(
        tiny_config(
            root_folder_path=str(base_path / "data"),
            output_folder_path=str(base_path / "outputs"),
            epoch_num=2,
            steps_per_epoch=2,
            evaluate_testing_every_N_epochs=1,
            use_re_ranking=True,
            save_data_to_disk=True,
            regularization_mode="l2",  # FlipReID's L2 term, logged and checked below
        )
    )
    return dict(base_path=base_path, data_path=base_path / "data", outcome=outcome)


def _run_folder(trained_run):
    from pathlib import Path

    return Path(trained_run["outcome"].output_folder_path)


@pytest.mark.slow  # shares a training run of about a minute on 2 cores
def test_training_writes_every_output(trained_run):
    run_folder_path = _run_folder(trained_run)
    assert run_folder_path == trained_run["base_path"] / "outputs" / "Synthetic_resnet18"
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
    assert flags_used["last_stride"] == 1 and flags_used["regularization_mode"] == "l2"
    # The policy --mixed_precision_policy auto chose, so that a resume elsewhere keeps it.
    assert flags_used["mixed_precision_policy"] in ("float32", "mixed_bfloat16")

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
    assert (history["regularization_loss"] > 0).all()  # --regularization_mode l2
    assert any(column.startswith("gem_power_") for column in history.columns)

    metrics = json.loads((run_folder_path / "metrics.json").read_text())
    results = trained_run["outcome"].results
    assert metrics["final"] == pytest.approx(results["final"])
    for section in ("before_training", "final"):
        for key in ("rank1", "rank5", "rank10", "rank20", "mAP", "re_ranking_rank1"):
            assert 0.0 <= metrics[section][key] <= 1.0, (section, key)
    assert metrics["final"]["mAP"] == pytest.approx(history["test_mAP"].iloc[-1])
    assert metrics["best_epoch"] in (1, 2)


@pytest.mark.slow  # shares a training run of about a minute on 2 cores
def test_saved_features_match_the_test_split(trained_run):
    features = np.load(_run_folder(trained_run) / "features.npz")
    query_features, gallery_features = features["query_features"], features["gallery_features"]
    assert query_features.shape[0] == features["query_identity_IDs"].shape[0]
    assert gallery_features.shape[0] == features["gallery_camera_IDs"].shape[0]
    assert query_features.shape[1] == gallery_features.shape[1]
    assert np.isfinite(query_features).all() and np.isfinite(gallery_features).all()
    # Query identities all appear in the gallery: the split is by identity.
    assert set(features["query_identity_IDs"]) <= set(features["gallery_identity_IDs"])


@pytest.mark.slow  # shares a training run of about a minute on 2 cores
def test_evaluation_only_on_a_testing_subset(trained_run):
    full = np.load(_run_folder(trained_run) / "features.npz")
    outcome = run_experiment(
        tiny_config(
            root_folder_path=str(trained_run["data_path"]),
            output_folder_path=str(trained_run["base_path"] / "subset_outputs"),
            evaluation_only=True,
            pretrained_model_file_path=str(_run_folder(trained_run) / "inference_model.h5"),
            testing_size=0.5,
            save_data_to_disk=True,
        )
    )
    subset = np.load(f"{outcome.output_folder_path}/features.npz")
    full_identities = set(full["query_identity_IDs"])
    subset_identities = set(subset["query_identity_IDs"])
    assert 0 < len(subset_identities) < len(full_identities)
    assert subset_identities <= full_identities
    assert len(subset["query_features"]) < len(full["query_features"])
    assert "final" not in outcome.results and "evaluation_only" in outcome.results


@pytest.mark.slow  # shares a training run of about a minute on 2 cores
def test_a_corrupt_gallery_image_is_skipped_counted_and_reported(trained_run, tmp_path, capsys):
    data_path = tmp_path / "data"
    shutil.copytree(trained_run["data_path"], data_path)
    gallery_files = sorted(data_path.glob("Synthetic_*/bounding_box_test/0*.jpg"))
    corrupt_file = gallery_files[len(gallery_files) // 2]
    corrupt_file.write_bytes(b"not a jpeg at all")
    outcome = run_experiment(
        tiny_config(
            root_folder_path=str(data_path),
            output_folder_path=str(tmp_path / "outputs"),
            evaluation_only=True,
            pretrained_model_file_path=str(_run_folder(trained_run) / "inference_model.h5"),
            save_data_to_disk=True,
        )
    )
    metrics = json.loads((tmp_path / "outputs" / "Synthetic_resnet18" / "metrics.json").read_text())
    notes = [note for note in metrics["dataset_notes"] if corrupt_file.name in note]
    assert len(notes) == 1 and "skipped 1 image " in notes[0], metrics["dataset_notes"]
    assert notes == [note for note in outcome.results["dataset_notes"] if corrupt_file.name in note]
    assert corrupt_file.name in capsys.readouterr().out  # printed with the results, not only logged
    features = np.load(tmp_path / "outputs" / "Synthetic_resnet18" / "features.npz")
    full = np.load(_run_folder(trained_run) / "features.npz")
    assert len(features["gallery_features"]) == len(full["gallery_features"]) - 1
    assert not any(corrupt_file.name in path for path in features["gallery_image_file_paths"])


@pytest.mark.slow  # shares a training run of about a minute on 2 cores
def test_cross_dataset_evaluation_takes_the_inference_weights(trained_run, tmp_path, capsys):
    # Another Synthetic draw with a different number of training identities than the run's 6.
    values = dict(
        synthetic_identity_num=16,
        root_folder_path=str(tmp_path / "data"),
        output_folder_path=str(tmp_path / "outputs"),
        evaluation_only=True,
    )
    run_experiment(
        tiny_config(
            **values,
            pretrained_model_file_path=str(_run_folder(trained_run) / "inference_model.h5"),
        )
    )
    assert "Loaded the inference model's weights" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"inference_model\.h5"):
        run_experiment(
            tiny_config(
                **values,
                pretrained_model_file_path=str(_run_folder(trained_run) / "training_model.h5"),
            )
        )


@pytest.mark.slow
def test_weights_of_another_backbone_are_a_clear_error_and_write_nothing(trained_run, tmp_path):
    with pytest.raises(ValueError, match="training_model.h5"):
        run_experiment(
            tiny_config(
                backbone_model_name="resnet50",
                root_folder_path=str(trained_run["data_path"]),
                output_folder_path=str(tmp_path / "outputs"),
                evaluation_only=True,
                pretrained_model_file_path=str(_run_folder(trained_run) / "training_model.h5"),
            )
        )
    assert not any((tmp_path / "outputs").glob("*"))  # no run folder: nothing half-written


def test_a_missing_dataset_stops_before_anything_is_written(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError), match="Market-1501"):
        run_experiment(
            tiny_config(
                dataset_name="Market1501",
                root_folder_path=str(tmp_path / "nonexistent"),
                output_folder_path=str(tmp_path / "outputs"),
            )
        )
    assert not any((tmp_path / "outputs").glob("*"))  # no run folder: nothing half-written


@pytest.mark.slow  # shares a training run of about a minute on 2 cores
def test_testing_size_zero_trains_without_evaluating_and_keeps_the_last_weights(
    trained_run, tmp_path, capsys
):
    outcome = run_experiment(
        tiny_config(
            root_folder_path=str(trained_run["data_path"]),
            output_folder_path=str(tmp_path / "outputs"),
            testing_size=0,
            epoch_num=2,
            steps_per_epoch=1,
            regularization_mode="none",
        )
    )
    printed = capsys.readouterr().out
    assert "test evaluation is off (--testing_size 0)" in printed
    assert "Evaluating on" not in printed
    run_folder_path = tmp_path / "outputs" / "Synthetic_resnet18"
    for name in ("training_model.h5", "inference_model.h5", "history.csv", "metrics.json"):
        assert (run_folder_path / name).is_file(), name
    history = pd.read_csv(run_folder_path / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert not any(column.startswith("test_") for column in history.columns)
    # --regularization_mode none: no L2 term in the loss.
    assert (history["regularization_loss"] == 0).all()
    assert outcome.results["best_epoch"] == 2
    assert not {"before_training", "final"} & set(outcome.results)


@pytest.mark.parametrize("mode", ["l2", "decoupled", "none"])
def test_regularization_modes(mode):
    factors = dict(
        kernel_regularization_factor=0.01,
        bias_regularization_factor=0.02,
        gamma_regularization_factor=0.03,
        beta_regularization_factor=0.04,
    )
    model_factors, optimizer = regularization_settings(mode, **factors)
    if mode == "l2":
        assert model_factors == factors
        assert type(optimizer).__name__ == "FusedAdam"
    else:
        assert model_factors == dict.fromkeys(factors, 0.0)
    if mode == "decoupled":
        assert type(optimizer).__name__ == "FusedAdamW"
        assert optimizer.weight_decay == pytest.approx(0.01)  # the kernel factor
    if mode == "none":
        assert type(optimizer).__name__ == "FusedAdam"
