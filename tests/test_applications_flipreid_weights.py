"""FlipReID's own training_model.h5 / inference_model.h5 load into this project's models.

The FlipReID files are written here with h5py, laid out as FlipReID's Keras `model.save` lays
them out (measured on files FlipReID's own code wrote): a `model_weights` group of layer groups
with `layer_names` / `weight_names` attributes; the training file nests the whole inference
model in one `inference_model` layer (trainable arrays of all its layers, then non-trainable
ones) beside `classification_model`; the inference file has one group per block. The arrays
come from a source model of this project with random values, so a correct load must give a
second model exactly the source's weights and embeddings (the plain mapping: same layer name).
"""

import json

import h5py
import numpy as np
import pytest

from applications.core.backend import keras
from applications.flipreid_weights import (
    describe_flipreid_mismatch,
    is_flipreid_weights_file,
    load_flipreid_weights,
    saving_order,
)
from applications.model import build_flipreid_models
from applications.weights import load_model_weights
from applications.weights_file import (
    WeightsFileError,
    check_weights_file,
    check_weights_file_readable,
)

HEIGHT, WIDTH, NUM_IDENTITIES = 64, 32, 5
TRUNK_BLOCKS = ("init_block", "stage1", "stage2", "stage3")


def _build(region_num, seed, backbone_name="resnet18", num_identities=NUM_IDENTITIES):
    keras.utils.set_random_seed(seed)
    return build_flipreid_models(
        backbone_name,
        HEIGHT,
        WIDTH,
        num_identities,
        region_num=region_num,
        min_value=0.0,
        max_value=1.0,
        gem_initial_power=1.0,
    )


def _randomise(model, seed):
    """Moves every non-kernel variable off its initial value (kernels keep their random init).

    Kernels of two models built with different seeds already differ; the normalisation
    statistics, offsets, scales, biases and GeM powers start equal, so they are drawn here.
    """
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape, name = tuple(variable.shape), variable.name
        if "kernel" in name:
            continue
        if "moving_variance" in name or "gamma" in name:
            value = rng.uniform(0.8, 1.2, shape)
        elif "power" in name:
            value = rng.uniform(2.0, 3.5, shape)
        else:
            value = rng.normal(0.0, 0.05, shape)
        variable.assign(value.astype(np.float32))


def _tail(variable_name, scope):
    """The part of a tf2cv variable name below its block, e.g. 'unit1/body/conv1/...'."""
    components = variable_name.split("/")
    last = len(components) - 1 - components[::-1].index(scope)
    return "/".join(components[last + 1 :])


def _flipreid_parts(training_model, region_num, global_first):
    """FlipReID's inference-model layers, in its order: (layer name, [(weight name, var)])."""
    branch_network = training_model.branch_network
    trunk = branch_network.get_layer("trunk")
    blocks = [layer for layer in trunk.layers if layer.weights]
    parts = []
    for block_name, block in zip(TRUNK_BLOCKS, blocks, strict=True):
        prefix = "" if block_name == "init_block" else block_name + "/"
        parts.append((f"features/{block_name}", block, prefix, block_name))
    stages = [("global", "last_stage_global")]
    if region_num:
        stages.insert(0, ("regional", "last_stage_regional"))
    if global_first:
        stages.reverse()
    for branch, layer_name in stages:
        layer = branch_network.get_layer(layer_name)
        parts.append((f"features/stage4_{branch}_branch", layer, f"{branch}_branch/", "stage4"))
        if branch == "regional":
            for index in range(region_num):
                name = "conv2d" if index == 0 else f"conv2d_{index}"
                parts.append((name, branch_network.get_layer(f"region{index + 1}_reduction"), None))
    for index, branch in enumerate(["global"] + [f"region{i + 1}" for i in range(region_num)]):
        name = "global_ge_m_pooling2d" + ("" if index == 0 else f"_{index}")
        parts.append((name, branch_network.get_layer(f"{branch}_pooling"), None))

    def names(part, variables):
        layer_name, _, *scope = part
        if scope[0] is None:
            return [(f"{layer_name}/{v.name.split('/')[-1]}", v) for v in variables]
        prefix, block_scope = scope
        return [(prefix + _tail(v.name, block_scope), v) for v in variables]

    return [
        (
            part[0],
            names(part, part[1].trainable_weights),
            names(part, part[1].non_trainable_weights),
        )
        for part in parts
    ]


def _write_weights(group, entries):
    group.attrs["weight_names"] = np.array([name.encode() for name, _ in entries], dtype="S")
    for name, variable in entries:
        group.create_dataset(name, data=variable.numpy())


def write_flipreid_file(
    file_path,
    training_model,
    region_num,
    kind,
    *,
    with_optimizer=False,
    global_first=False,
    keras_version="2.21.0",
):
    """Writes `training_model`'s weights as FlipReID's training_model.h5 or inference_model.h5."""
    parts = _flipreid_parts(training_model, region_num, global_first)
    with h5py.File(file_path, "w") as file:
        file.attrs["backend"] = "tensorflow"
        file.attrs["keras_version"] = keras_version
        # FlipReID's config holds Lambda layers (marshalled code); a loader must never use it.
        file.attrs["model_config"] = json.dumps(
            {"class_name": "Functional", "config": {"layers": [{"class_name": "Lambda"}]}}
        )
        model_weights = file.create_group("model_weights")
        model_weights.attrs["backend"] = "tensorflow"
        model_weights.attrs["keras_version"] = keras_version
        if kind == "inference":
            layer_names = ["input_1", "preprocess_input"]
            for layer_name, trainable, non_trainable in parts:
                layer_names.append(layer_name)
                _write_weights(model_weights.create_group(layer_name), trainable + non_trainable)
            layer_names += ["activation", "lambda"]
            for empty in ["input_1", "preprocess_input", "activation", "lambda"]:
                _write_weights(model_weights.create_group(empty), [])
        else:
            file.attrs["training_config"] = json.dumps({"loss": ["<lambda>"]})
            layer_names = ["input_11", "inference_model", "tf.image.flip_left_right"]
            layer_names += ["classification_model", "add_loss"]
            trainable = [entry for _, entries, _ in parts for entry in entries]
            non_trainable = [entry for _, _, entries in parts for entry in entries]
            _write_weights(model_weights.create_group("inference_model"), trainable + non_trainable)
            heads = training_model.classification_heads
            branches = ["global"] + [f"region{i + 1}" for i in range(region_num)]
            necks = [heads.get_layer(f"{branch}_neck") for branch in branches]
            classifiers = [heads.get_layer(f"{branch}_classifier") for branch in branches]

            def named(layers, base):
                return [
                    [(f"{base}{'' if i == 0 else f'_{i}'}/{v.name.split('/')[-1]}", v) for v in vs]
                    for i, vs in enumerate(layers)
                ]

            entries = (
                sum(named([n.trainable_weights for n in necks], "batch_normalization"), [])
                + sum(named([c.trainable_weights for c in classifiers], "dense"), [])
                + sum(named([n.non_trainable_weights for n in necks], "batch_normalization"), [])
            )
            _write_weights(model_weights.create_group("classification_model"), entries)
            for empty in ["input_11", "tf.image.flip_left_right", "add_loss"]:
                _write_weights(model_weights.create_group(empty), [])
            if with_optimizer:
                optimizer = file.create_group("optimizer_weights")
                names = ["iteration:0"] + [f"Adam/m/{name}" for name, _ in trainable[:3]]
                optimizer.attrs["weight_names"] = np.array([n.encode() for n in names], "S")
                for name in names:
                    optimizer.create_dataset(name, data=np.zeros(3, np.float32))
        model_weights.attrs["layer_names"] = np.array([n.encode() for n in layer_names], "S")


@pytest.fixture(scope="module")
def built_models():
    """region_num -> (region_num, source models with random values, target models), cached."""
    cache = {}

    def get(region_num):
        if region_num not in cache:
            source_training, source_inference = _build(region_num, seed=1)
            _randomise(source_training, seed=11)
            target = _build(region_num, seed=2)
            cache[region_num] = (region_num, (source_training, source_inference), target)
        return cache[region_num]

    return get


@pytest.fixture(params=[2, 0], ids=["region_num2", "region_num0"])
def models(request, built_models):
    return built_models(request.param)


@pytest.fixture
def models2(built_models):
    return built_models(2)


def _weighted_layers(model):
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.update(_weighted_layers(layer))
        elif layer.weights:
            found[layer.name] = layer
    return found


def _assert_same_weights(source, target):
    source_layers, target_layers = _weighted_layers(source), _weighted_layers(target)
    assert source_layers.keys() == target_layers.keys()
    for name, layer in source_layers.items():
        for expected, loaded in zip(
            layer.get_weights(), target_layers[name].get_weights(), strict=True
        ):
            np.testing.assert_array_equal(loaded, expected, err_msg=name)


def _images():
    return np.random.default_rng(5).integers(0, 256, (3, HEIGHT, WIDTH, 3)).astype(np.uint8)


@pytest.mark.parametrize(
    "kind, with_optimizer, global_first, keras_version",
    [
        ("training", True, False, "2.21.0"),
        ("training", False, True, "2.3.0-tf"),
        ("inference", False, False, "2.21.0"),
        ("inference", False, True, "2.3.0-tf"),
    ],
)
def test_flipreid_files_give_the_source_weights_and_embeddings(
    models, tmp_path, kind, with_optimizer, global_first, keras_version
):
    region_num, (source_training, source_inference), (target_training, target_inference) = models
    # Whatever an earlier case loaded is overwritten, kernels included.
    _randomise(target_training, seed=99)
    for variable in target_training.weights:
        if "kernel" in variable.name:
            variable.assign(variable * 0.5)
    file_path = str(tmp_path / f"{kind}_model.h5")
    write_flipreid_file(
        file_path,
        source_training,
        region_num,
        kind,
        with_optimizer=with_optimizer,
        global_first=global_first,
        keras_version=keras_version,
    )
    assert is_flipreid_weights_file(file_path)
    assert check_weights_file_readable(file_path) == "h5"
    all_models = {"training model": target_training, "inference model": target_inference}
    fitting = check_weights_file(file_path, all_models)
    assert fitting == ("training model" if kind == "training" else "inference model")

    load_model_weights(all_models[fitting], file_path)

    if kind == "training":
        _assert_same_weights(source_training, target_training)
    else:
        _assert_same_weights(source_inference, target_inference)
    images = _images()
    np.testing.assert_allclose(
        target_inference(images, training=False).numpy(),
        source_inference(images, training=False).numpy(),
        rtol=0,
        atol=1e-6,
    )


def test_training_file_of_another_dataset_loads_into_the_inference_model(models2, tmp_path):
    region_num, (source_training, source_inference), _ = models2
    file_path = str(tmp_path / "training_model.h5")
    write_flipreid_file(file_path, source_training, region_num, "training")
    other_training, other_inference = _build(region_num, seed=3, num_identities=7)
    all_models = {"training model": other_training, "inference model": other_inference}

    assert check_weights_file(file_path, all_models) == "inference model"
    assert "5 identities" in describe_flipreid_mismatch(file_path, other_training)
    load_flipreid_weights(other_inference, file_path)
    _assert_same_weights(source_inference, other_inference)


def _single_line(raised):
    text = str(raised.value)
    assert "\n" not in text
    return text


def test_flipreid_file_of_other_regions_names_the_flag(models, tmp_path):
    region_num, (source_training, _), _ = models
    file_path = str(tmp_path / "inference_model.h5")
    write_flipreid_file(file_path, source_training, region_num, "inference")
    other_regions = 1 if region_num == 0 else 0
    other_training, other_inference = _build(other_regions, seed=4)
    with pytest.raises(WeightsFileError) as raised:
        check_weights_file(
            file_path, {"training model": other_training, "inference model": other_inference}
        )
    text = _single_line(raised)
    assert text.startswith(f"--pretrained_model_file_path {file_path} is FlipReID's ")
    assert f"trained with --region_num {region_num} " in text
    assert f"has --region_num {other_regions}" in text
    with pytest.raises(ValueError, match=f"trained with --region_num {region_num} "):
        load_model_weights(other_inference, file_path)


def test_flipreid_file_of_another_backbone_gets_one_line(models2, tmp_path):
    region_num, (source_training, _), (target_training, target_inference) = models2
    file_path = str(tmp_path / "inference_model.h5")
    write_flipreid_file(file_path, source_training, region_num, "inference")
    # An IBN-ResNet stage 1: instance normalisation added to its first unit's first convolution.
    with h5py.File(file_path, "r+") as file:
        stage = file["model_weights/features/stage1"]
        names = list(stage.attrs["weight_names"])
        extra = b"stage1/unit1/body/conv1/ibn/inst_norm/gamma:0"
        stage.create_dataset(extra.decode(), data=np.ones(32, np.float32))
        stage.attrs["weight_names"] = np.array(names[:1] + [extra] + names[1:], "S")
    with pytest.raises(WeightsFileError) as raised:
        check_weights_file(
            file_path, {"training model": target_training, "inference model": target_inference}
        )
    text = _single_line(raised)
    assert "trained with another backbone" in text and "looks like an IBN-ResNet" in text
    assert "pass the --backbone_model_name it was trained with" in text


def test_file_of_neither_layout_names_both(tmp_path, models2):
    _, _, (target_training, target_inference) = models2
    all_models = {"training model": target_training, "inference model": target_inference}
    foreign = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense_9")])
    weights_path = str(tmp_path / "foreign.h5")
    foreign.save_weights(weights_path)
    full_path = str(tmp_path / "foreign_full.h5")
    with h5py.File(full_path, "w") as file:
        group = file.create_group("model_weights")
        _write_weights(
            group.create_group("dense_9"), [(v.name, v) for v in foreign.layers[0].weights]
        )
        group.attrs["layer_names"] = np.array([b"dense_9"], "S")
    not_flipreid = {
        weights_path: "(no model_weights group (FlipReID saves whole models))",
        full_path: "holds neither inference_model + classification_model nor a "
        "features/stage4_global_branch layer (layers with weights: dense_9)",
    }
    for file_path, reason in not_flipreid.items():
        assert not is_flipreid_weights_file(file_path)
        with pytest.raises(WeightsFileError) as raised:
            check_weights_file(file_path, all_models)
        text = _single_line(raised)
        assert text.startswith(f"--pretrained_model_file_path {file_path} matches neither ")
        assert "this project's save_weights layout (training model: it holds 1 layers" in text
        assert "nor FlipReID's full-model layout" in text and reason in text
        assert "flags.json" not in text


def test_truncated_flipreid_file_keeps_the_damaged_file_line(models2, tmp_path):
    region_num, (source_training, _), _ = models2
    file_path = tmp_path / "training_model.h5"
    write_flipreid_file(str(file_path), source_training, region_num, "training")
    content = file_path.read_bytes()
    cut_path = tmp_path / "cut.h5"
    cut_path.write_bytes(content[: len(content) // 2])
    with pytest.raises(WeightsFileError, match="cut.h5 is damaged or truncated") as raised:
        check_weights_file_readable(str(cut_path))
    _single_line(raised)
    assert not is_flipreid_weights_file(str(cut_path))


def test_saving_order_is_keras_order_for_trainable_and_frozen_layers(models2):
    _, _, (target_training, _) = models2
    trunk = target_training.branch_network.get_layer("trunk")
    keras_order = [v.name for v in trunk.trainable_weights + trunk.non_trainable_weights]
    assert [v.name for v in saving_order(trunk)] == keras_order
    trunk.trainable = False
    try:
        assert [v.name for v in saving_order(trunk)] == keras_order
    finally:
        trunk.trainable = True


def test_feature_extractor_embeds_with_a_flipreid_file(models2, tmp_path):
    from applications.feature_extractor import FeatureExtractor

    region_num, (source_training, source_inference), _ = models2
    write_flipreid_file(
        str(tmp_path / "training_model.h5"), source_training, region_num, "training"
    )
    # FlipReID writes no model_config.json: the user writes the settings it was trained with.
    model_config = dict(
        backbone_name="resnet18",
        image_height=HEIGHT,
        image_width=WIDTH,
        num_identities=NUM_IDENTITIES,
        region_num=region_num,
        min_value=0.0,
        max_value=1.0,
    )
    (tmp_path / "model_config.json").write_text(json.dumps(model_config))
    extractor = FeatureExtractor(tmp_path / "training_model.h5", use_horizontal_flipping=False)
    images = _images()
    np.testing.assert_allclose(
        extractor(images), source_inference(images, training=False).numpy(), rtol=0, atol=1e-5
    )


@pytest.mark.slow
def test_resnet50_flipreid_training_file_loads_and_a_resnet18_file_is_refused(models2, tmp_path):
    source_training, source_inference = _build(2, seed=1, backbone_name="resnet50")
    _randomise(source_training, seed=11)
    file_path = str(tmp_path / "training_model.h5")
    write_flipreid_file(file_path, source_training, 2, "training", with_optimizer=True)
    target_training, target_inference = _build(2, seed=2, backbone_name="resnet50")
    all_models = {"training model": target_training, "inference model": target_inference}

    assert check_weights_file(file_path, all_models) == "training model"
    load_model_weights(target_training, file_path)
    _assert_same_weights(source_training, target_training)
    images = _images()
    np.testing.assert_allclose(
        target_inference(images, training=False).numpy(),
        source_inference(images, training=False).numpy(),
        rtol=0,
        atol=1e-6,
    )

    _, (resnet18_training, _), _ = models2
    resnet18_path = str(tmp_path / "resnet18_training_model.h5")
    write_flipreid_file(resnet18_path, resnet18_training, 2, "training")
    with pytest.raises(WeightsFileError) as raised:
        check_weights_file(resnet18_path, all_models)
    text = _single_line(raised)
    assert "is FlipReID's training_model.h5 but does not fit" in text
    assert "trained with another backbone" in text and "looks like a ResNet" in text
