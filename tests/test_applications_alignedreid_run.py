"""End-to-end: local branch, two mutually learning models and re-ranking on tiny Synthetic data."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from applications.config import build_experiment_config
from applications.experiment import run_experiment
from applications.model import build_flipreid_models, load_model_weights
from tests.config_fixtures import tiny_config

pytestmark = pytest.mark.slow

ROWS = (
    "global",
    "global_re_ranking",
    "local",
    "local_re_ranking",
    "global_local",
    "global_local_re_ranking",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base_path = tmp_path_factory.mktemp("alignedreid_run")
    config = tiny_config(
        root_folder_path=str(base_path / "data"),
        output_folder_path=str(base_path / "outputs"),
        epoch_num=2,
        steps_per_epoch=2,
        evaluate_testing_every_N_epochs=1,
        evaluate_before_training=False,
        use_local_branch=True,
        local_feature_dim=16,
        local_triplet_margin=0.3,
        normalize_feature=True,
        model_num=2,
        local_distance_mutual_loss_weight=1.0,
        local_distance_own_hard_samples=True,
        use_re_ranking=True,
        learning_rate_mode="staircase",
        staircase_decay_epochs=("2",),
    )
    outcome = run_experiment(config)
    return dict(base_path=base_path, outcome=outcome, folder=outcome.output_folder_path)


def test_metrics_json_has_six_rows_per_model_and_the_best_marked(run):
    with open(os.path.join(run["folder"], "metrics.json")) as file:
        results = json.load(file)
    rows = results["final_rows"]
    assert rows["best_model"] in (1, 2)
    for model in ("model_1", "model_2"):
        assert set(rows[model]) == set(ROWS)
        for row in ROWS:
            assert 0.0 <= rows[model][row]["mAP"] <= 1.0
            assert set(rows[model][row]) >= {"rank1", "rank5", "rank10", "rank20", "mAP", "mINP"}
    final = results["final"]
    best = rows[f"model_{rows['best_model']}"]
    # The unprefixed keys are the best model's global row (what the checkpoint monitors).
    assert final["re_ranking_mAP"] == best["global_re_ranking"]["mAP"]
    assert final["re_ranking_mAP"] == max(
        rows["model_1"]["global_re_ranking"]["mAP"], rows["model_2"]["global_re_ranking"]["mAP"]
    )


def test_each_model_is_saved_on_its_own_and_reloads(run):
    folder = run["folder"]
    for number in (1, 2):
        for name in ("training_model.h5", "inference_model.h5"):
            assert os.path.isfile(os.path.join(folder, f"model_{number}", name))
    assert not os.path.exists(os.path.join(folder, "inference_model.h5"))
    with open(os.path.join(folder, "model_config.json")) as file:
        model_config = json.load(file)
    assert model_config["use_local_branch"] and model_config["local_feature_dim"] == 16
    _, first = build_flipreid_models(**model_config)
    _, second = build_flipreid_models(**model_config)
    load_model_weights(first, os.path.join(folder, "model_1", "inference_model.h5"))
    load_model_weights(second, os.path.join(folder, "model_2", "inference_model.h5"))
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 32, 3), dtype=np.uint8)
    first_outputs, second_outputs = first(images), second(images)
    assert first_outputs[1].shape == (2, 4, 16)
    # Two models, two sets of weights.
    assert not np.allclose(first_outputs[0].numpy(), second_outputs[0].numpy())


def test_history_logs_each_model_and_the_mutual_losses(run):
    history = pd.read_csv(os.path.join(run["folder"], "history.csv"))
    for column in (
        "model_1_local_triplet_loss",
        "model_2_probability_mutual_loss",
        "model_2_local_distance_mutual_loss",
        "test_local_re_ranking_mAP",
        "test_model_2_global_local_mAP",
    ):
        assert column in history.columns, column
    assert np.isfinite(history["loss"]).all()
    assert history["learning_rate"].tolist() == pytest.approx([1e-3, 1e-4])


def test_saved_single_model_evaluates_with_the_local_rows(run):
    base_path = run["base_path"]
    config = tiny_config(
        root_folder_path=str(base_path / "data"),
        output_folder_path=str(base_path / "evaluation"),
        use_local_branch=True,
        local_feature_dim=16,
        evaluation_only=True,
        pretrained_model_file_path=os.path.join(run["folder"], "model_1", "training_model.h5"),
    )
    results = run_experiment(config).results["evaluation_only"]
    assert {"global_mAP", "local_mAP", "global_local_mAP", "mAP"} <= set(results)
    assert "local_re_ranking_mAP" not in results


def test_model_num_with_saved_weights_is_refused():
    with pytest.raises(ValueError, match="--model_num"):
        build_experiment_config(
            model_num=2, evaluation_only=True, pretrained_model_file_path=__file__
        )


def test_export_and_pictures_of_several_models_are_refused():
    with pytest.raises(ValueError, match="--model_num 1 --evaluation_only"):
        build_experiment_config(model_num=2, visualize_ranked_lists=3)
