"""--recipe alignedreid: AlignedReID's command lines, its defaults, its epoch, and a tiny run.

AlignedReID (huanghoujing/AlignedReID-Re-Production-Pytorch): the argparse defaults and Config
of script/experiment/train.py and train_ml.py, and the commands of its README's Examples.
"""

import glob
import json
import os

import numpy as np
import pytest

from applications.config import build_experiment_config
from applications.core.backend import keras
from applications.experiment import run_experiment
from applications.flag_effects import flags_without_effect
from applications.model import build_flipreid_models
from datasets.alignedreid import identity_steps_per_epoch
from tests.test_datasets_alignedreid import write_alignedreid_dataset
from tests.test_solution import _parse

# Its README: "ResNet-50 + Global Loss" and "+ Mutual Learning" on Market1501, then the
# command lines that mean the same here (the "Coming from AlignedReID" table of our README).
ALIGNEDREID_TRAIN = (
    "python script/experiment/train.py -d '(0,)' -r 1 --dataset market1501 --ids_per_batch 32 "
    "--ims_per_id 4 --normalize_feature false -gm 0.3 -glw 1 -llw 0 -idlw 0 --base_lr 2e-4 "
    "--lr_decay_type exp --exp_decay_at_epoch 151 --total_epochs 300"
)
OURS_TRAIN = (
    "python solution.py --recipe alignedreid --dataset_name Market1501 "
    "--identity_num_per_batch 32 --image_num_per_identity 4 --nonormalize_feature "
    "--triplet_margin 0.3 --triplet_loss_weight 1 --cross_entropy_loss_weight 0 "
    "--learning_rate_base 2e-4 --learning_rate_mode exponential "
    "--exponential_decay_start_epoch 151 --epoch_num 300"
)
OURS_TRAIN_ML = (
    f"{OURS_TRAIN} --model_num 2 --probability_mutual_loss_weight 0 "
    "--global_distance_mutual_loss_weight 1 --local_distance_mutual_loss_weight 0"
)
OURS_TEST = (
    "python solution.py --recipe alignedreid --dataset_name Market1501 --nonormalize_feature "
    "--triplet_loss_weight 1 --cross_entropy_loss_weight 0 --evaluation_only "
    "--pretrained_model_file_path ?.h5"
)

# train.py's defaults, read off its argparse and Config (not from our recipe table).
ALIGNEDREID_DEFAULTS = {
    "backbone_model_name": "resnet50",  # Model: resnet50(pretrained=True)
    "pretrained": True,
    "image_height": 256,  # --resize_h_w (256, 128)
    "image_width": 128,
    "last_stride": 2,  # torchvision's ResNet-50: an 8 x 4 map at 256x128
    "region_num": 0,
    "pooling_mode": "Average",  # F.avg_pool2d over the whole map
    "use_feature_clipping": False,
    "use_horizontal_flipping_inside_model": False,
    "identity_head": "linear",  # Model.fc: nn.Linear(2048, classes) with bias on global_feat
    "identity_num_per_batch": 32,  # --ids_per_batch
    "image_num_per_identity": 4,  # --ims_per_id
    "normalize_feature": True,  # --normalize_feature True
    "local_distance_own_hard_samples": False,
    "triplet_margin": 0.3,  # -gm
    "local_triplet_margin": 0.3,  # -lm
    "triplet_loss_weight": 1.0,  # -glw
    "cross_entropy_loss_weight": 0.0,  # -idlw
    "use_local_branch": False,  # -llw 0
    "local_feature_dim": 128,  # local_conv_out_channels
    "learning_rate_base": 2e-4,  # --base_lr
    "learning_rate_mode": "exponential",  # --lr_decay_type exp
    "exponential_decay_start_epoch": 76,  # --exp_decay_at_epoch
    "staircase_decay_epochs": ("101", "201"),
    "staircase_decay_factor": 0.1,
    "epoch_num": 150,  # --total_epochs
    "learning_rate_lower_bound": 0.0,  # adjust_lr_exp has no floor
    "regularization_mode": "l2",  # Adam(weight_decay=0.0005): coupled
    "kernel_regularization_factor": 0.00025,
    "bias_regularization_factor": 0.00025,
    "gamma_regularization_factor": 0.00025,
    "beta_regularization_factor": 0.00025,
    "freeze_backbone_for_N_epochs": 0,
    "epoch_unit": "identities",
    "random_crop_probability": 0.0,  # no pad-and-crop
    "ratio_crop_probability": 0.0,  # --crop_prob 0
    "crop_ratio": 1.0,  # --crop_ratio 1
    "horizontal_flip_probability": 0.5,  # train_mirror_type 'random'
    "patch_replacement_probability": 0.0,
    "random_erasing_probability": 0.0,
    "use_horizontal_flipping_in_evaluation": False,  # test_mirror_type None
    "distance_metric": "euclidean",  # compute_dist(type='euclidean')
    "use_re_ranking": True,  # eval(to_re_rank=True)
    "cmc_config": "market1501",  # first_match_break, no separate cameras
    "evaluate_before_training": False,
    "trainset_part": "trainval",  # --trainset_part
    "model_num": 1,  # --num_models
    "probability_mutual_loss_weight": 1.0,  # -pmlw
    "global_distance_mutual_loss_weight": 1.0,  # -gdmlw
    "local_distance_mutual_loss_weight": 0.0,  # -ldmlw
}


def test_the_recipe_is_alignedreids_defaults():
    values = _parse("python solution.py --recipe alignedreid").to_flat()
    assert {name: values[name] for name in ALIGNEDREID_DEFAULTS} == ALIGNEDREID_DEFAULTS
    # It tests once, after the last epoch, as train.py does.
    assert values["evaluate_testing_every_N_epochs"] >= values["epoch_num"]


def test_alignedreids_readme_training_commands_mean_what_they_meant():
    assert "--total_epochs 300" in ALIGNEDREID_TRAIN  # the command transcribed below
    values = _parse(OURS_TRAIN).to_flat()
    expected = {
        **ALIGNEDREID_DEFAULTS,
        "normalize_feature": False,
        "exponential_decay_start_epoch": 151,
        "epoch_num": 300,
    }
    assert {name: values[name] for name in expected} == expected
    assert values["dataset_name"] == "Market1501"
    mutual = _parse(OURS_TRAIN_ML).to_flat()
    assert mutual["model_num"] == 2
    assert mutual["probability_mutual_loss_weight"] == 0.0
    assert mutual["global_distance_mutual_loss_weight"] == 1.0
    assert mutual["local_distance_mutual_loss_weight"] == 0.0
    assert {name: mutual[name] for name in ("epoch_num", "learning_rate_base")} == {
        "epoch_num": 300,
        "learning_rate_base": 2e-4,
    }
    # -llw 1 is --use_local_branch: AlignedReID's local branch on the 8-row map, margin 0.3.
    local = _parse(f"{OURS_TRAIN} --use_local_branch").to_flat()
    assert (local["use_local_branch"], local["local_triplet_margin"]) == (True, 0.3)
    assert (local["local_feature_dim"], local["last_stride"]) == (128, 2)


def test_alignedreids_readme_test_command_means_what_it_meant(tmp_path):
    weights_file_path = tmp_path / "training_model.h5"
    weights_file_path.write_bytes(b"")
    config = _parse(OURS_TEST.replace("?.h5", str(weights_file_path)))
    assert config.evaluation.evaluation_only is True
    assert config.evaluation.distance_metric == "euclidean"
    assert config.evaluation.use_re_ranking is True
    assert config.losses.normalize_feature is False
    assert (config.model.image_height, config.model.last_stride) == (256, 2)


def test_alignedreids_epoch_is_identities_over_p():
    # Market-1501's 751 training identities at P = 32.
    assert identity_steps_per_epoch(751, 32, keep_final_batch=False) == 23  # train.py
    assert identity_steps_per_epoch(751, 32, keep_final_batch=True) == 24  # train_ml.py
    assert identity_steps_per_epoch(768, 32, keep_final_batch=True) == 24
    assert identity_steps_per_epoch(10, 32, keep_final_batch=False) == 1


def test_local_distance_mutual_loss_without_own_hard_samples_runs_and_warns():
    # AlignedReID's train_ml.py accepts -ldmlw without --local_dist_own_hard_sample and ignores
    # it; here the same command line runs too, and the warning says what the weight needs.
    values = dict(model_num=2, use_local_branch=True, local_distance_mutual_loss_weight=1.0)
    config = build_experiment_config(**values)
    assert config.losses.local_distance_mutual_loss_weight == 1.0
    [warning] = flags_without_effect(config.to_flat(), list(values))
    assert warning.startswith("--local_distance_mutual_loss_weight has no effect")
    assert "--local_distance_own_hard_samples" in warning
    values["local_distance_own_hard_samples"] = True
    assert flags_without_effect(build_experiment_config(**values).to_flat(), list(values)) == []


@pytest.mark.slow
def test_tiny_alignedreid_run_on_combined_reports_each_test_set(tmp_path):
    folder = write_alignedreid_dataset(str(tmp_path / "aligned_folder"))
    config = build_experiment_config(
        recipe="alignedreid",
        dataset_name="Combined",
        combined_dataset_names=("Synthetic", folder),
        evaluation_dataset_name="Synthetic",
        root_folder_path=str(tmp_path / "data"),
        output_folder_path=str(tmp_path / "outputs"),
        synthetic_identity_num=12,
        synthetic_camera_num=2,
        synthetic_image_num_per_identity=4,
        backbone_model_name="resnet18",
        pretrained=False,
        image_height=64,
        image_width=32,
        identity_num_per_batch=3,
        image_num_per_identity=2,
        epoch_num=1,
        exponential_decay_start_epoch=1,
        use_re_ranking=False,
        crop_ratio=0.8,
        ratio_crop_probability=1.0,
        testing_batch_size=16,
    )
    outcome = run_experiment(config)
    final = outcome.results["final"]
    # Synthetic's test set unprefixed, the AlignedReID folder's under its label.
    assert 0.0 <= final["mAP"] <= 1.0
    assert 0.0 <= final["aligned_folder/mAP"] <= 1.0
    with open(os.path.join(outcome.output_folder_path, "metrics.json")) as file:
        rows = json.load(file)["final_rows"]
    assert rows["test_sets"]["aligned_folder"]["global"]["mAP"] == final["aligned_folder/mAP"]
    # AlignedReID's epoch: (6 Synthetic + 3 folder identities) // P = 3 batches.
    pattern = os.path.join(outcome.output_folder_path, "**", "state.json")
    states = sorted(glob.glob(pattern, recursive=True))
    with open(states[-1]) as file:
        assert json.load(file)["stream_batch_index"] == 9 // 3


def readme_alignedreid_commands():
    """The solution.py command lines of the README's "Coming from AlignedReID" block."""
    readme_path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")
    with open(readme_path) as file:
        text = file.read()
    section = text[text.index("### Coming from AlignedReID") :]
    block = section[section.index("```bash") + len("```bash") : section.index("```\n", 10)]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        if line.startswith("python solution.py"):
            commands.append(" ".join(line.split()))
    return commands


def test_the_readme_commands_mean_alignedreids(tmp_path):
    train, mutual, test = readme_alignedreid_commands()
    weights_file_path = tmp_path / "training_model.h5"
    weights_file_path.write_bytes(b"")
    for command in (train, mutual):
        values = _parse(command.replace('"$HOME/datasets"', str(tmp_path))).to_flat()
        expected = {
            **ALIGNEDREID_DEFAULTS,
            "normalize_feature": False,  # --normalize_feature false
            "exponential_decay_start_epoch": 151,  # --exp_decay_at_epoch 151
            "epoch_num": 300,  # --total_epochs 300
        }
        if command == mutual:  # --num_models 2 -pmlw 0 -gdmlw 1 -ldmlw 0
            expected.update(model_num=2, probability_mutual_loss_weight=0.0)
        assert {name: values[name] for name in expected} == expected
    test = test.replace('"$HOME/datasets"', str(tmp_path))
    test = test.replace("outputs/Market1501_resnet50/training_model.h5", str(weights_file_path))
    config = _parse(test)
    assert config.evaluation.evaluation_only and not config.losses.normalize_feature


def test_linear_identity_head_is_alignedreids_fc_on_the_raw_feature():
    training_model, inference_model = build_flipreid_models(
        "resnet18", 64, 32, 5, region_num=0, identity_head="linear"
    )
    heads = training_model.classification_heads
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in heads.layers)
    dense = heads.get_layer("global_classifier")
    kernel, bias = (weight.numpy() for weight in dense.weights)
    assert bias.shape == (5,) and not bias.any()  # init.constant(fc.bias, 0)
    assert 0.0005 < kernel.std() < 0.0015  # init.normal(fc.weight, std=0.001)
    embeddings = np.random.default_rng(0).normal(size=(3, kernel.shape[0])).astype(np.float32)
    dense.bias.assign(np.arange(5, dtype=np.float32))
    logits = embeddings @ kernel + np.arange(5, dtype=np.float32)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(heads([embeddings]).numpy(), expected, rtol=1e-5, atol=1e-7)
    assert _parse("python solution.py --recipe alignedreid").model.identity_head == "linear"
    assert _parse("python solution.py").model.identity_head == "bn_neck"
