"""solution.py: flags generated from the config, FlipReID's command lines, and true end-to-end runs.

The end-to-end runs start `python solution.py` as a user does (three subprocesses in all); the
other behaviours of a run are tested in-process in test_applications_experiment.py.
"""

import dataclasses
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from absl import flags

import solution
from applications import config as config_module

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

# FlipReID's README (nixingyang/FlipReID, release 1.0.0), its training and evaluation commands.
FLIPREID_TRAINING = (
    'python3 -u solution.py --dataset_name "Market1501" --use_horizontal_flipping_inside_model '
    "--nouse_horizontal_flipping_in_evaluation --steps_per_epoch 200 --epoch_num 200"
)
FLIPREID_BACKBONES = {
    "resnet50": '--backbone_model_name "resnet50" --learning_rate_start 2e-4 '
    "--learning_rate_end 2e-4 --learning_rate_base 2e-4 --learning_rate_lower_bound 2e-6 "
    "--kernel_regularization_factor 0.0005 --bias_regularization_factor 0.0005 "
    "--gamma_regularization_factor 0.0005 --beta_regularization_factor 0.0005",
    "ibn_resnet50": '--backbone_model_name "ibn_resnet50" --learning_rate_start 3e-4 '
    "--learning_rate_end 3e-4 --learning_rate_base 3e-4 --learning_rate_lower_bound 3e-6 "
    "--kernel_regularization_factor 0.0005 --bias_regularization_factor 0.0005 "
    "--gamma_regularization_factor 0.0005 --beta_regularization_factor 0.0005",
    "resnesta50": '--backbone_model_name "resnesta50" --learning_rate_start 3e-4 '
    "--learning_rate_end 3e-4 --learning_rate_base 3e-4 --learning_rate_lower_bound 3e-6 "
    "--kernel_regularization_factor 0.0010 --bias_regularization_factor 0.0010 "
    "--gamma_regularization_factor 0.0010 --beta_regularization_factor 0.0010",
}
FLIPREID_EVALUATION = (
    'python3 -u solution.py --dataset_name "Market1501" --backbone_model_name "resnesta50" '
    '--pretrained_model_file_path "?.h5" --use_horizontal_flipping_inside_model '
    "--use_horizontal_flipping_in_evaluation --output_folder_path "
    '"evaluation_only" --evaluation_only --freeze_backbone_for_N_epochs 0 --testing_size 1.0 '
    "--evaluate_testing_every_N_epochs 1"
)


def _fresh_flag_values():
    flag_values = flags.FlagValues()
    solution.define_flags(flag_values)
    return flag_values


def _parse(command_line):
    """Parses a command line as solution.py would and returns the config it runs."""
    flag_values = _fresh_flag_values()
    arguments = shlex.split(command_line)
    flag_values(["solution.py", *arguments[arguments.index("solution.py") + 1 :]])
    return solution.config_from_flags(flag_values)


def test_every_config_field_is_a_flag_with_its_default_help_and_group():
    flag_values = _fresh_flag_values()
    for group_name, field, _ in config_module.flag_fields():
        flag = flag_values[field.name]
        default = list(field.default) if isinstance(field.default, tuple) else field.default
        assert flag.default == default, field.name
        assert flag.help.endswith(field.metadata["help"]), field.name  # enums prefix choices
        assert field in dataclasses.fields(dict(config_module.GROUPS)[group_name])
        assert flag in flag_values.get_flags_for_module(group_name)
    # Parsing nothing gives the config's defaults.
    flag_values(["solution.py"])
    assert solution.config_from_flags(flag_values) == config_module.ExperimentConfig()


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["--epoch_num=0"], "--epoch_num"),
        (["--testing_size=-1"], "--testing_size"),
        (["--last_stride=3"], "--last_stride must be one of 1, 2"),
        (["--backbone_model_name=vgg"], "resnet50"),
        (["--regularization_mode=weight_decay"], "decoupled"),
        (["--random_erasing_probability=1.5"], "random_erasing_probability"),
        (["--evaluation_only"], "--pretrained_model_file_path"),
        (["--pretrained_model_file_path=/nonexistent/model.h5"], "--pretrained_model_file_path"),
        (["--use_feature_clipping", "--min_value=1", "--max_value=0"], "--nouse_feature_clipping"),
        (["--workers=0"], "workers"),
        # Cross-field rules see the recipe's defaults of the flags not given.
        (
            ["--recipe=flipreid", "--learning_rate_mode=cosine"],
            r"cosine decays .* recipe's defaults in use: --learning_rate_start=0.0002",
        ),
    ],
)
def test_bad_flags_are_refused_by_the_parser_naming_the_flag(arguments, expected):
    flag_values = _fresh_flag_values()
    with pytest.raises(flags.IllegalFlagValueError, match=expected):
        flag_values(["solution.py", *arguments])


def test_cross_field_rules_at_parsing_see_the_recipes_values():
    # Valid with the recipe's values, though not with the flags' own defaults.
    config = _parse("python solution.py --recipe alignedreid --learning_rate_mode exponential")
    assert (config.training.epoch_num, config.training.exponential_decay_start_epoch) == (150, 76)
    config = _parse("python solution.py --recipe flipreid --learning_rate_mode constant")
    assert config.training.learning_rate_start == config.training.learning_rate_end == 2e-4


def test_flipreid_training_command_lines_mean_what_they_meant():
    config = _parse(FLIPREID_TRAINING)
    assert config.data.dataset_name == "Market1501"
    assert config.model.use_horizontal_flipping_inside_model is True
    assert config.evaluation.use_horizontal_flipping_in_evaluation is False
    assert (config.training.steps_per_epoch, config.training.epoch_num) == (200, 200)
    for backbone, arguments in FLIPREID_BACKBONES.items():
        config = _parse(f"{FLIPREID_TRAINING} {arguments}")
        assert config.model.backbone_model_name == backbone
        learning_rate = 2e-4 if backbone == "resnet50" else 3e-4
        training = config.training
        assert training.learning_rate_start == training.learning_rate_end == learning_rate
        assert training.learning_rate_base == learning_rate
        assert training.learning_rate_lower_bound == pytest.approx(learning_rate / 100)
        factor = 0.001 if backbone == "resnesta50" else 0.0005
        assert config.model.regularization_mode == "l2"  # FlipReID's L2 term with its factors
        for name in ("kernel", "bias", "gamma", "beta"):
            assert getattr(config.model, f"{name}_regularization_factor") == factor
    # What the README's lines leave unset takes FlipReID's own defaults (recipe "flipreid").
    model, training = config.model, config.training
    assert model.pretrained is True
    assert (model.image_height, model.image_width, model.last_stride) == (384, 128, 1)
    assert (model.region_num, model.pooling_mode, model.gem_initial_power) == (2, "GeM", 1.0)
    assert (model.use_feature_clipping, model.min_value, model.max_value) == (True, 0.0, 1.0)
    assert training.freeze_backbone_for_N_epochs == 20
    assert (training.learning_rate_mode, training.learning_rate_warmup_epochs) == ("default", 10)
    assert config.evaluation.evaluate_testing_every_N_epochs == 10
    # The README's two variants of test evaluation, and FlipReID's own --workers flag.
    assert _parse(f"{FLIPREID_TRAINING} --testing_size 0.5").data.testing_size == 0.5
    assert _parse(f"{FLIPREID_TRAINING} --testing_size 0.0").data.testing_size == 0.0
    assert _parse(f"{FLIPREID_TRAINING} --testing_size 100").data.testing_size == 100
    assert _parse(f"{FLIPREID_TRAINING} --workers 5").training.workers == 5


def test_flipreid_evaluation_command_line_means_what_it_meant(tmp_path):
    weights_file_path = tmp_path / "model.h5"
    weights_file_path.write_bytes(b"")  # the README's "?.h5" is filled in by the user
    command_line = FLIPREID_EVALUATION.replace("?.h5", str(weights_file_path))
    config = _parse(f"{command_line} --use_re_ranking")
    evaluation = config.evaluation
    assert evaluation.evaluation_only is True
    assert evaluation.pretrained_model_file_path == str(weights_file_path)
    assert evaluation.output_folder_path == "evaluation_only"
    assert evaluation.use_horizontal_flipping_in_evaluation is True
    assert evaluation.use_re_ranking is True
    assert evaluation.evaluate_testing_every_N_epochs == 1
    assert config.model.backbone_model_name == "resnesta50"
    assert config.data.testing_size == 1.0
    # The model it rebuilds is FlipReID's: 384x128, clipped, two stripes.
    assert (config.model.image_height, config.model.image_width) == (384, 128)
    assert config.model.use_feature_clipping is True


def test_recipe_defaults_follow_the_backbone_and_given_flags_win():
    default = _parse("python solution.py")
    assert default.model.recipe == "auto" and default.model.backbone_model_name == "resnet18"
    assert default.model.use_feature_clipping is False and default.model.pretrained is False
    assert default.model.regularization_mode == "none"
    assert default.training.learning_rate_mode == "cosine"
    flipreid = _parse("python solution.py --backbone_model_name resnet50 --image_height 256")
    assert flipreid.model.image_height == 256  # given: kept
    assert flipreid.model.image_width == 128 and flipreid.model.pretrained is True
    assert flipreid.model.regularization_mode == "l2"
    own = _parse("python solution.py --backbone_model_name resnet50 --recipe random_init")
    assert own.model.pretrained is False and own.model.use_feature_clipping is False
    small = _parse(
        "python solution.py --recipe flipreid --backbone_model_name resnet18 --nopretrained"
    )
    assert small.model.backbone_model_name == "resnet18" and small.model.pretrained is False
    assert small.training.freeze_backbone_for_N_epochs == 20


def test_flipreid_headline_command_trains_its_resnet50_from_imagenet_at_384x128():
    config = _parse(FLIPREID_TRAINING)  # no --backbone_model_name, as in FlipReID's README
    model, training = config.model, config.training
    assert model.backbone_model_name == "resnet50" and model.pretrained is True
    assert (model.image_height, model.image_width, model.last_stride) == (384, 128, 1)
    assert (model.use_feature_clipping, model.regularization_mode) == (True, "l2")
    # FlipReID's procedure: 20 frozen epochs, then the README's 200 on a restarted schedule,
    # batches from its identity sampler.
    assert (training.freeze_backbone_for_N_epochs, training.epoch_num) == (20, 200)
    assert training.restart_schedule_after_freezing is True
    assert training.sampling_mode == "flipreid"
    assert (training.learning_rate_mode, training.learning_rate_base) == ("default", 2e-4)
    # The other datasets of its README get the same.
    for dataset_name in ("DukeMTMC_reID", "MSMT17"):
        other = _parse(FLIPREID_TRAINING.replace("Market1501", dataset_name))
        assert other.model.backbone_model_name == "resnet50" and other.model.pretrained is True


def test_no_flags_is_the_cpu_demo_and_the_backbone_follows_the_dataset():
    demo = _parse("python solution.py")
    assert demo.data.dataset_name == "Synthetic"
    assert (demo.model.backbone_model_name, demo.model.pretrained) == ("resnet18", False)
    assert (demo.model.image_height, demo.model.image_width) == (64, 32)
    assert demo.training.restart_schedule_after_freezing is False
    assert demo.training.sampling_mode == "balanced"
    assert demo == config_module.ExperimentConfig()
    # A real dataset without a backbone: FlipReID's resnet50; a backbone or recipe given wins.
    market = _parse("python solution.py --dataset_name Market1501")
    assert (market.model.backbone_model_name, market.model.pretrained) == ("resnet50", True)
    small = _parse("python solution.py --dataset_name Market1501 --backbone_model_name resnet18")
    assert small.model.pretrained is False and small.model.image_height == 64
    own = _parse("python solution.py --dataset_name Market1501 --recipe random_init")
    assert (own.model.backbone_model_name, own.model.pretrained) == ("resnet18", False)
    flipreid = _parse("python solution.py --recipe flipreid")
    assert flipreid.data.dataset_name == "Synthetic"
    assert (flipreid.model.backbone_model_name, flipreid.model.pretrained) == ("resnet50", True)
    deeper = _parse("python solution.py --backbone_model_name resnesta101")
    assert deeper.model.pretrained is True and deeper.training.sampling_mode == "flipreid"


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


@pytest.mark.slow
def test_train_then_evaluate_the_best_weights_end_to_end(tmp_path):
    data_path, output_path = tmp_path / "data", tmp_path / "outputs"
    common = [*TINY_FLAGS, f"--root_folder_path={data_path}", f"--output_folder_path={output_path}"]
    completed = run_solution(
        *common, "--epoch_num=2", "--steps_per_epoch=2", "--evaluate_testing_every_N_epochs=1"
    )
    run_folder_path = output_path / "Synthetic_resnet18"
    assert "mAP went from" in completed.stdout
    assert f"Results: {run_folder_path}" in completed.stdout
    metrics = json.loads((run_folder_path / "metrics.json").read_text())
    history = pd.read_csv(run_folder_path / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    best_epoch_mAP = history.loc[history["epoch"] == metrics["best_epoch"], "test_mAP"].item()

    completed = run_solution(
        *common,
        "--evaluation_only",
        f"--pretrained_model_file_path={run_folder_path / 'training_model.h5'}",
    )
    # A second run never reuses the first run's folder, and takes no training step.
    evaluation_folder_path = output_path / "Synthetic_resnet18_2"
    assert str(evaluation_folder_path) in completed.stdout
    assert "Synthetic_resnet18 already exists" in completed.stdout
    assert not (evaluation_folder_path / "history.csv").exists()
    evaluation = json.loads((evaluation_folder_path / "metrics.json").read_text())
    assert evaluation["evaluation_only"]["mAP"] == pytest.approx(best_epoch_mAP, abs=1e-6)


@pytest.mark.slow
def test_an_error_past_flag_parsing_is_one_line_without_traceback(tmp_path):
    completed = run_solution(
        "--dataset_name=Market1501",
        f"--root_folder_path={tmp_path / 'nonexistent'}",
        f"--output_folder_path={tmp_path / 'outputs'}",
        check=False,
    )
    assert completed.returncode == 1
    error_lines = [line for line in completed.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1 and "Market-1501" in error_lines[0]
    assert "Traceback" not in completed.stderr
    assert not any((tmp_path / "outputs").glob("*"))  # a stopped run leaves no run folder


def test_ctrl_c_while_tensorflow_loads_is_one_line_without_traceback(tmp_path):
    process = subprocess.Popen(
        [
            sys.executable,
            "solution.py",
            f"--root_folder_path={tmp_path / 'data'}",
            f"--output_folder_path={tmp_path / 'outputs'}",
        ],
        cwd=REPOSITORY_FOLDER_PATH,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell that starts the suite in the background ignores SIGINT, and Python keeps an
        # ignored SIGINT ignored: the child gets the default a terminal gives.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # TensorFlow's import has begun once its shared library is mapped; it takes seconds more.
    deadline = time.monotonic() + 120
    while "libtensorflow" not in pathlib.Path(f"/proc/{process.pid}/maps").read_text():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in errors
    assert (
        errors.strip()
        .splitlines()[-1]
        .startswith(
            "Stopped by SIGINT while TensorFlow was loading, before any flag was read; nothing was "
            "written."
        )
    )
    assert not (tmp_path / "data").exists() and not (tmp_path / "outputs").exists()
