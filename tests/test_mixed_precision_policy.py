"""Which policy a run trains with, and what stays float32 under mixed_bfloat16."""

import numpy as np
import pytest

import applications.experiment
from applications.config import build_experiment_config
from applications.core.backend import keras, tf
from applications.model import build_flipreid_models
from applications.precision import (
    build_precision_twin,
    compute_dtype_of,
    global_policy,
    read_cpu_flags,
    resolve_mixed_precision_policy,
)
from tests.config_fixtures import tiny_config

SUPPORTED = frozenset({"avx512f", "avx512_bf16"})
UNSUPPORTED = frozenset({"avx2", "avx512f"})


@pytest.mark.parametrize(
    ("requested", "recipe", "cpu_flags", "num_gpus", "expected", "reason_part"),
    [
        ("auto", "random_init", SUPPORTED, 0, "mixed_bfloat16", "avx512_bf16"),
        ("auto", "random_init", frozenset({"amx_bf16"}), 0, "mixed_bfloat16", "amx_bf16"),
        ("auto", "random_init", UNSUPPORTED, 0, "float32", "no native bfloat16"),
        ("auto", "random_init", frozenset(), 0, "float32", "no native bfloat16"),
        ("auto", "random_init", SUPPORTED, 1, "float32", "GPU"),
        ("auto", "flipreid", SUPPORTED, 0, "float32", "flipreid recipe"),
        ("auto", "alignedreid", SUPPORTED, 0, "float32", "alignedreid recipe"),
        ("float32", "random_init", SUPPORTED, 0, "float32", "was given"),
        ("mixed_bfloat16", "flipreid", UNSUPPORTED, 0, "mixed_bfloat16", "was given"),
        ("mixed_float16", "random_init", SUPPORTED, 1, "mixed_float16", "was given"),
        # Asked for without native arithmetic and without a GPU: granted, with the warning.
        ("mixed_bfloat16", "random_init", UNSUPPORTED, 0, "mixed_bfloat16", "emulates it"),
        ("mixed_float16", "random_init", SUPPORTED, 0, "mixed_float16", "no native float16"),
    ],
)
def test_policy_resolution(requested, recipe, cpu_flags, num_gpus, expected, reason_part):
    policy, reason = resolve_mixed_precision_policy(
        requested, recipe, cpu_flags=cpu_flags, num_gpus=num_gpus
    )
    assert policy == expected
    assert reason_part in reason


@pytest.mark.parametrize(
    "requested, cpu_flags, num_gpus",
    [
        ("mixed_bfloat16", frozenset({"avx512f", "avx512_bf16"}), 0),
        ("mixed_bfloat16", frozenset({"amx_bf16"}), 0),
        ("mixed_bfloat16", frozenset({"avx2"}), 1),
        ("mixed_float16", frozenset({"avx512_fp16"}), 0),
        ("mixed_float16", frozenset({"avx2"}), 2),
        ("float32", frozenset({"avx2"}), 0),
    ],
)
def test_no_emulation_warning_where_the_hardware_computes_the_policy(
    requested, cpu_flags, num_gpus
):
    _, reason = resolve_mixed_precision_policy(
        requested, "random_init", cpu_flags=cpu_flags, num_gpus=num_gpus
    )
    assert reason == f"--mixed_precision_policy {requested} was given"


def test_emulation_warning_names_the_missing_flags_the_slowdown_and_the_fix():
    _, reason = resolve_mixed_precision_policy(
        "mixed_bfloat16", "random_init", cpu_flags=frozenset({"avx2", "fma"}), num_gpus=0
    )
    assert "no native bfloat16 (neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo)" in reason
    assert "8x slower than in float32" in reason
    assert "--mixed_precision_policy auto or float32" in reason
    assert not reason.endswith(".")


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="--mixed_precision_policy must be one of auto"):
        resolve_mixed_precision_policy("bfloat16", "random_init", cpu_flags=(), num_gpus=0)


def test_cpu_flags_are_read_from_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu\n"
    )
    assert read_cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx512f", "avx512_bf16"}
    assert read_cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_config_default_is_auto_and_recipes_keep_it():
    assert build_experiment_config().training.mixed_precision_policy == "auto"
    flipreid = build_experiment_config(recipe="flipreid")
    assert flipreid.training.mixed_precision_policy == "auto"
    assert flipreid.model.flip_batch_norm_mode == "separate"
    assert build_experiment_config().model.flip_batch_norm_mode == "shared"
    assert build_experiment_config().evaluation.evaluation_precision == "float32"


@pytest.fixture(scope="module")
def bfloat16_models():
    with global_policy("mixed_bfloat16"):
        keras.utils.set_random_seed(0)
        return build_flipreid_models("resnet18", 64, 32, 4, region_num=2)


def batch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 64, 32, 3), dtype=np.uint8)
    return images, np.repeat(np.arange(4), 2).astype(np.int32)


def test_embeddings_and_losses_stay_float32_under_mixed_bfloat16(bfloat16_models):
    training_model, inference_model = bfloat16_models
    # The convolutions really compute in bfloat16 (else this test would prove nothing).
    assert compute_dtype_of(inference_model) == "bfloat16"
    images, labels = batch()
    values = training_model.compute_losses(images, labels, training=True)
    for name, value in values.items():
        assert value.dtype == tf.float32, name
        assert np.isfinite(value.numpy()), name
    embeddings, flipping_losses = training_model.compute_branch_embeddings(images, training=True)
    assert [embedding.dtype for embedding in embeddings] == [tf.float32] * 3
    assert [loss.dtype for loss in flipping_losses] == [tf.float32] * 3
    assert inference_model(images, training=False).dtype == tf.float32
    for layer in training_model.branch_network.layers:
        if layer.name.endswith("_pooling"):
            assert layer.compute_dtype == "float32", layer.name


def test_float32_twin_of_a_bfloat16_model_equals_a_float32_model(bfloat16_models):
    _, inference_model = bfloat16_models
    images, _ = batch()
    build_float32 = lambda: build_flipreid_models("resnet18", 64, 32, 4, region_num=2)[1]  # noqa: E731
    current = build_precision_twin([inference_model], build_float32, "float32")
    (twin,) = current()
    assert twin is not inference_model and compute_dtype_of(twin) == "float32"
    reference = build_float32()
    reference.set_weights(inference_model.get_weights())
    np.testing.assert_array_equal(
        twin(images, training=False).numpy(), reference(images, training=False).numpy()
    )
    # bfloat16 features are close to float32's, not equal (8 bits of mantissa).
    bfloat16_features = inference_model(images, training=False).numpy()
    float32_features = twin(images, training=False).numpy()
    assert not np.array_equal(bfloat16_features, float32_features)
    np.testing.assert_allclose(bfloat16_features, float32_features, rtol=0.1, atol=0.05)
    # A model already at the asked precision is used as it is.
    assert build_precision_twin([twin], build_float32, "float32")()[0] is twin


def test_run_states_its_policy_and_leaves_the_global_policy_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(applications.experiment, "read_cpu_flags", lambda: SUPPORTED)
    monkeypatch.setattr(applications.experiment, "num_visible_gpus", lambda: 0)
    config = tiny_config(
        synthetic_identity_num=8,
        region_num=0,
        identity_num_per_batch=2,
        epoch_num=1,
        steps_per_epoch=1,
        evaluate_before_training=False,
        save_data_to_disk=True,
        root_folder_path=str(tmp_path / "data"),
        output_folder_path=str(tmp_path / "outputs"),
    )
    outcome = applications.experiment.run_experiment(config)
    lines = capsys.readouterr().out.splitlines()
    precision_line = next(line for line in lines if line.startswith("Precision:"))
    assert lines.index(precision_line) <= 2
    assert "training in mixed_bfloat16" in precision_line
    assert "avx512_bf16" in precision_line
    assert "Evaluation features in float32" in precision_line
    assert keras.mixed_precision.global_policy().name == "float32"
    with np.load(f"{outcome.output_folder_path}/features.npz") as features:
        assert features["query_features"].dtype == np.float32
