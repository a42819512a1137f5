"""FlipReID's own full-model h5 files, read by structure and shape into this project's models.

FlipReID (nixingyang/FlipReID) saves whole Keras models, with the same networks as here but
another layout:
- `training_model.h5` (`ModelCheckpoint(save_weights_only=False)`): a `model_weights` group
  whose `inference_model` layer holds every branch-network array in one flat list (the trainable
  arrays of all its layers, then the non-trainable ones: trunk, regional stage 4, the 3x3
  reductions, global stage 4, GeM powers) and whose `classification_model` layer holds the
  heads (batch normalisation necks, bias-free classifiers); an `optimizer_weights` group may
  follow, which is not read.
- `inference_model.h5` (`inference_model.save`): one group per layer: `features/init_block`,
  `features/stage1..3`, `features/stage4_regional_branch`, `conv2d`, `conv2d_1`, ...,
  `features/stage4_global_branch` and one group per GeM layer.

Only group and dataset names, attributes and shapes are read (h5py); nothing stored in the file
is executed or deserialised (its Lambda layers and model config are ignored). Arrays are told
apart by what FlipReID's code fixes: stage 4 copies carry the `global_branch` /
`regional_branch` suffix FlipReID gives them, GeM powers are scalars, the reductions and heads
are Keras-named layers (`conv2d_<i>`, `batch_normalization_<i>`, `dense_<i>`) created in branch
order; the rest is the trunk, in Keras' saving order. Every array is then checked against the
shape of the variable it goes into.
"""

import dataclasses
import re

import h5py
import numpy as np

from applications.branches import branch_names
from applications.core.backend import keras

FLIPREID_FORMAT = (
    "FlipReID's full-model layout (its training_model.h5: inference_model + "
    "classification_model groups; its inference_model.h5: features/init_block ... "
    "features/stage4_global_branch groups)"
)
FLIPREID_BACKBONES = "resnet50, ibn_resnet50 or resnesta50"
_KERAS_NAME = r"(?:_(\d+))?"
_REDUCTION_NAME = re.compile(r"conv2d" + _KERAS_NAME)
_NECK_NAME = re.compile(r"batch_normalization" + _KERAS_NAME)
_CLASSIFIER_NAME = re.compile(r"dense" + _KERAS_NAME)


@dataclasses.dataclass
class FlipReIDLayout:
    """Where each part of a FlipReID file lies: lists of (dataset path, shape), in saving order.

    Attributes:
        file_kind: "training_model.h5" or "inference_model.h5" (the layout, not the file name).
        trunk: the trunk's arrays as one list (training layout: Keras' order for the whole
            trunk) or one list per block, init block and stages 1-3 (inference layout).
        trunk_is_flat: whether `trunk` holds one list for the whole trunk.
        global_stage: the global branch's stage 4.
        regional_stage: the regional branch's stage 4 (empty for region_num 0).
        reductions: per region, the 3x3 reduction's [kernel, bias].
        poolings: per branch (global first), the GeM power (empty for Average or Max pooling).
        heads: per branch, (neck arrays, classifier arrays); None in an inference layout.
    """

    file_kind: str
    trunk: list
    trunk_is_flat: bool
    global_stage: list
    regional_stage: list
    reductions: list
    poolings: list
    heads: list | None


def _decode(name):
    return name.decode("utf8") if isinstance(name, bytes) else str(name)


def _weight_entries(group):
    """[(path from the file's root, shape)] of a layer group's weights, in stored order."""
    entries = []
    for weight_name in group.attrs.get("weight_names", []):
        dataset = group[_decode(weight_name)]
        entries.append((dataset.name, tuple(dataset.shape)))
    return entries


def _layer_groups(model_weights):
    """[(layer name, group)] of the layers that hold weights, in stored order."""
    layers = []
    for layer_name in model_weights.attrs.get("layer_names", []):
        group = model_weights[_decode(layer_name)]
        if len(group.attrs.get("weight_names", [])):
            layers.append((_decode(layer_name), group))
    return layers


def _creation_index(match):
    return int(match.group(1) or 0)


def _in_creation_order(owners, pattern):
    """Keras names a layer `<base>`, `<base>_1`, ... as it creates them: branch order here."""
    matched = [(pattern.fullmatch(name), name) for name in owners]
    return [owners[name] for match, name in sorted(matched, key=lambda m: _creation_index(m[0]))]


def _by_trailing_number(names):
    """GeM layers are named global_ge_m_pooling2d, _1, ... (or by the user): creation order."""
    return sorted(names, key=lambda name: int(re.search(r"(\d*)$", name).group(1) or 0))


def _part_of_branch_weight(path_in_group, shape):
    """Which part of FlipReID's inference model a weight belongs to, from its stored name."""
    components = path_in_group.split("/")
    scopes = components[:-1]
    if any(scope == "global_branch" or scope.endswith("_global_branch") for scope in scopes):
        return "global_stage", None
    if any(scope == "regional_branch" or scope.endswith("_regional_branch") for scope in scopes):
        return "regional_stage", None
    owner = scopes[-1] if scopes else ""
    if shape == () and components[-1].startswith("power"):
        return "poolings", owner
    if _REDUCTION_NAME.fullmatch(owner) and len(shape) in (1, 4):
        return "reductions", owner
    return "trunk", None


def _flat_branch_layout(group):
    """Splits the training layout's flat `inference_model` list into its parts."""
    parts = {"trunk": [], "global_stage": [], "regional_stage": []}
    owned = {"poolings": {}, "reductions": {}}
    prefix_length = len(group.name) + 1
    for path, shape in _weight_entries(group):
        part, owner = _part_of_branch_weight(path[prefix_length:], shape)
        if owner is None:
            parts[part].append((path, shape))
        else:
            owned[part].setdefault(owner, []).append((path, shape))
    gem_owners = owned["poolings"]
    poolings = [gem_owners[name] for name in _by_trailing_number(gem_owners)]
    reductions = _in_creation_order(owned["reductions"], _REDUCTION_NAME)
    return parts, poolings, reductions


def _heads_layout(group):
    """Pairs the classification model's necks and classifiers, in branch order."""
    necks, classifiers, others = {}, {}, []
    prefix_length = len(group.name) + 1
    for path, shape in _weight_entries(group):
        scopes = path[prefix_length:].split("/")[:-1]
        owner = scopes[-1] if scopes else ""
        if _NECK_NAME.fullmatch(owner):
            necks.setdefault(owner, []).append((path, shape))
        elif _CLASSIFIER_NAME.fullmatch(owner):
            classifiers.setdefault(owner, []).append((path, shape))
        else:
            others.append(path)
    if others or len(necks) != len(classifiers):
        return None
    return list(
        zip(
            _in_creation_order(necks, _NECK_NAME),
            _in_creation_order(classifiers, _CLASSIFIER_NAME),
            strict=True,
        )
    )


def _training_layout(layers):
    """(FlipReIDLayout, None) of the training layout's layer groups, or (None, reason)."""
    parts, poolings, reductions = _flat_branch_layout(layers["inference_model"])
    heads = _heads_layout(layers["classification_model"])
    if heads is None:
        return None, (
            "its classification_model group holds other layers than batch_normalization "
            "necks and dense classifiers"
        )
    return FlipReIDLayout(
        "training_model.h5",
        [parts["trunk"]],
        True,
        parts["global_stage"],
        parts["regional_stage"],
        reductions,
        poolings,
        heads,
    ), None


def _inference_layout(layers):
    """FlipReIDLayout of the inference layout's layer groups (one group per block)."""
    trunk, global_stage, regional_stage = [], [], []
    poolings, reductions = {}, {}
    for name, group in layers.items():
        entries = _weight_entries(group)
        if name.endswith("_global_branch"):
            global_stage = entries
        elif name.endswith("_regional_branch"):
            regional_stage = entries
        elif _REDUCTION_NAME.fullmatch(name.split("/")[-1]):
            reductions[name.split("/")[-1]] = entries
        elif len(entries) == 1 and entries[0][1] == ():
            poolings[name] = entries
        else:
            trunk.append(entries)
    return FlipReIDLayout(
        "inference_model.h5",
        trunk,
        False,
        global_stage,
        regional_stage,
        _in_creation_order(reductions, _REDUCTION_NAME),
        [poolings[name] for name in _by_trailing_number(poolings)],
        None,
    )


def read_flipreid_layout(file):
    """Reads where each part of a FlipReID model lies in an open h5 file.

    Args:
        file: an open h5py.File.

    Returns:
        (layout, None) for a file in FlipReID's layout, else (None, why it is not: str).
    """
    if "model_weights" not in file:
        return None, "no model_weights group (FlipReID saves whole models)"
    layers = dict(_layer_groups(file["model_weights"]))
    if "inference_model" in layers and "classification_model" in layers:
        return _training_layout(layers)
    if any(name.endswith("_global_branch") for name in layers):
        return _inference_layout(layers), None
    names = ", ".join(list(layers)[:4]) or "none"
    return None, (
        "its model_weights group holds neither inference_model + classification_model nor a "
        f"features/stage4_global_branch layer (layers with weights: {names})"
    )


def saving_order(layer):
    """A layer's variables in the order Keras' h5 saving lists them for a trainable layer.

    Keras writes the trainable variables, then the non-trainable ones (batch-normalisation
    statistics), each depth-first. Sorting `layer.weights` by each variable's own trainability
    gives that order whether the layer is trainable or frozen as a whole (a frozen layer lists
    all its variables depth-first), so a backbone frozen for its first epochs loads the same.

    Args:
        layer: a built keras layer or model.

    Returns:
        list of variables.
    """
    variables = layer.weights
    return [v for v in variables if v.trainable] + [v for v in variables if not v.trainable]


def _find_layer(model, name):
    """The layer called `name` in `model` or in the models nested inside it, or None."""
    for layer in model.layers:
        if layer.name == name:
            return layer
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found = _find_layer(layer, name)
            if found is not None:
                return found
    return None


def _weighted_layers(model):
    return [layer for layer in model.layers if layer.weights]


def _describe_shapes(entries):
    num_values = sum(int(np.prod(shape)) for _, shape in entries)
    return f"{len(entries)} arrays, {num_values / 1e6:.2f} M values"


def _pair(entries, variables, part_name):
    """[(variable, path)] when the shapes agree one by one, else (None, reason)."""
    if len(entries) != len(variables):
        return None, (
            f"its {part_name} holds {_describe_shapes(entries)}, the model's has "
            f"{_describe_shapes([(None, tuple(v.shape)) for v in variables])}"
        )
    for (path, shape), variable in zip(entries, variables, strict=True):
        if tuple(variable.shape) != shape:
            return None, (
                f"its {part_name} array {path} has shape {shape}, the model's {variable.name} "
                f"has {tuple(variable.shape)}"
            )
    return [(variable, path) for (path, _), variable in zip(entries, variables, strict=True)], None


@dataclasses.dataclass
class _ModelParts:
    """The layers of this project's model that a FlipReID file fills, found by their names.

    Attributes:
        branch_model: the branch network.
        heads_model: the classification heads, or None in an inference model.
        trunk: the trunk (init block and stages 1-3).
        global_stage: the global branch's stage 4.
        regional_stage: the regional branch's stage 4, or None.
        reductions: the regional 3x3 reductions, in region order.
        poolings: the pooling layers with weights (GeM), global first.
        names: the branch names, global first.
    """

    branch_model: object
    heads_model: object
    trunk: object
    global_stage: object
    regional_stage: object
    reductions: list
    poolings: list
    names: list


def _find_model_parts(model):
    """_ModelParts of `model`, or None when it has no trunk or no global stage 4."""
    heads_model = _find_layer(model, "classification_heads")
    branch_model = _find_layer(model, "branch_network") or model
    trunk = _find_layer(branch_model, "trunk")
    global_stage = _find_layer(branch_model, "last_stage_global")
    if trunk is None or global_stage is None:
        return None
    reductions = []
    while _find_layer(branch_model, f"region{len(reductions) + 1}_reduction") is not None:
        reductions.append(_find_layer(branch_model, f"region{len(reductions) + 1}_reduction"))
    names = branch_names(len(reductions))
    poolings = [_find_layer(branch_model, f"{name}_pooling") for name in names]
    return _ModelParts(
        branch_model,
        heads_model,
        trunk,
        global_stage,
        _find_layer(branch_model, "last_stage_regional"),
        reductions,
        [layer for layer in poolings if layer is not None and layer.weights],
        names,
    )


def _count_mismatch(layout, parts):
    """Why the file's numbers of regions and GeM powers differ from the model's, or None."""
    if len(layout.reductions) != len(parts.reductions):
        return (
            f"it was trained with --region_num {len(layout.reductions)} "
            f"({len(layout.reductions)} regional reductions), the model built from the flags has "
            f"--region_num {len(parts.reductions)}"
        )
    if len(layout.poolings) != len(parts.poolings):
        if layout.poolings:
            wanted = f"--pooling_mode GeM ({len(layout.poolings)} GeM powers)"
        else:
            wanted = "--pooling_mode Average or Max (no GeM powers)"
        return (
            f"it was trained with {wanted}, the model built from "
            f"the flags has {len(parts.poolings)} GeM layers"
        )
    return None


def _pair_all(parts):
    """_pair over (entries, variables, part name) triples, stopping at the first misfit.

    Returns:
        ([(variable, path)] of all of them, None), or (None, the first misfit's reason).
    """
    pairs = []
    for entries, variables, part_name in parts:
        matched, reason = _pair(entries, variables, part_name)
        if reason is not None:
            return None, reason
        pairs.extend(matched)
    return pairs, None


def _pair_trunk(layout, parts):
    """The trunk's pairs; a misfit's reason names the backbone flag (or a partly frozen save)."""
    blocks = _weighted_layers(parts.trunk)
    if layout.trunk_is_flat:
        pairs, reason = _pair_all([(layout.trunk[0], saving_order(parts.trunk), "trunk")])
    elif len(blocks) != len(layout.trunk):
        pairs, reason = None, f"{len(layout.trunk)} trunk blocks, the model's has {len(blocks)}"
    else:
        pairs, reason = _pair_all(
            [
                (entries, saving_order(block), f"trunk block {block.name}")
                for entries, block in zip(layout.trunk, blocks, strict=True)
            ]
        )
    if reason is None:
        return pairs, None
    stored_trunk = [entry for entries in layout.trunk for entry in entries]
    model_trunk = [(v.name, tuple(v.shape)) for v in saving_order(parts.trunk)]
    if sorted(shape for _, shape in stored_trunk) == sorted(s for _, s in model_trunk):
        return None, f"{reason} (the model's arrays, in another order: saved partly frozen?)"
    return None, (
        "it was trained with another backbone: its trunk "
        f"({_describe_shapes(stored_trunk)}) {_backbone_hint(layout)}, the trunk built from "
        f"the flags has {_describe_shapes(model_trunk)}; pass the --backbone_model_name it "
        f"was trained with ({FLIPREID_BACKBONES})"
    )


def _pair_stages(layout, parts):
    """The pairs of both stage 4 copies, the reductions and the GeM powers."""
    stage_parts = [(layout.global_stage, saving_order(parts.global_stage), "global stage 4")]
    if parts.reductions:
        if parts.regional_stage is None:
            return None, "the model built from the flags has regions but no regional stage 4"
        stage_parts.append(
            (layout.regional_stage, saving_order(parts.regional_stage), "regional stage 4")
        )
    elif layout.regional_stage:
        return None, f"it holds a regional stage 4 but no regional reductions ({layout.file_kind})"
    for index, layer in enumerate(parts.reductions):
        stage_parts.append((layout.reductions[index], saving_order(layer), f"{layer.name}"))
    for index, layer in enumerate(parts.poolings):
        stage_parts.append((layout.poolings[index], saving_order(layer), f"{layer.name}"))
    pairs, reason = _pair_all(stage_parts)
    if reason is not None:
        return None, f"{reason} (pass the flags it was trained with in FlipReID)"
    return pairs, None


def _identity_count_mismatch(classifier_entries, classifier_variables):
    """Why a stored classifier's number of identities differs from the model's, or None."""
    if not (classifier_entries and classifier_variables):
        return None
    stored = classifier_entries[0][1]
    wanted = tuple(classifier_variables[0].shape)
    if stored[-1:] != wanted[-1:]:
        return (
            f"its classifiers have {stored[-1]} identities, the model built for "
            f"this dataset has {wanted[-1]}"
        )
    return None


def _pair_heads(layout, parts):
    """The pairs of each branch's neck and classifier; none for an inference model."""
    if parts.heads_model is None:
        return [], None
    if layout.heads is None:
        return None, "it is a FlipReID inference_model.h5, which holds no classification heads"
    heads = [
        (
            _find_layer(parts.heads_model, f"{name}_neck"),
            _find_layer(parts.heads_model, f"{name}_classifier"),
        )
        for name in parts.names
    ]
    if len(layout.heads) != len(heads) or any(None in head for head in heads):
        return None, (
            f"its classification model has {len(layout.heads)} heads, the model built from "
            f"the flags has {len(parts.names)} branches"
        )
    pairs = []
    for (neck_entries, classifier_entries), (neck, classifier) in zip(
        layout.heads, heads, strict=True
    ):
        classifier_variables = saving_order(classifier)
        reason = _identity_count_mismatch(classifier_entries, classifier_variables)
        if reason is not None:
            return None, reason
        matched, reason = _pair_all(
            [
                (neck_entries, saving_order(neck), neck.name),
                (classifier_entries, classifier_variables, classifier.name),
            ]
        )
        if reason is not None:
            return None, reason
        pairs.extend(matched)
    return pairs, None


def _uncovered_layer_names(parts):
    """Names of the branch network's weighted layers that no FlipReID array goes into."""
    covered = {
        id(layer)
        for layer in [
            parts.trunk,
            parts.global_stage,
            parts.regional_stage,
            *parts.reductions,
            *parts.poolings,
        ]
    }
    return [
        layer.name
        for layer in _weighted_layers(parts.branch_model)
        if id(layer) not in covered and layer is not parts.heads_model
    ]


def plan_flipreid_assignment(layout, model):
    """Pairs every weight of `model` with the array of a FlipReID file that goes into it.

    Args:
        layout: FlipReIDLayout of the file.
        model: this project's training model (branch network and classification heads) or
            inference model (branch network only), built from the flags.

    Returns:
        ([(variable, dataset path)], None) when the file fits, else (None, reason: str).
    """
    parts = _find_model_parts(model)
    if parts is None:
        return None, f"the {model.name} is not a FlipReID branch network (no trunk)"
    reason = _count_mismatch(layout, parts)
    if reason is not None:
        return None, reason
    pairs = []
    for pair_part in (_pair_trunk, _pair_stages, _pair_heads):
        matched, reason = pair_part(layout, parts)
        if reason is not None:
            return None, reason
        pairs.extend(matched)
    uncovered = _uncovered_layer_names(parts)
    if uncovered:
        return None, (
            f"the model built from the flags has layers that FlipReID files do not hold "
            f"({', '.join(uncovered)}; e.g. AlignedReID's local branch)"
        )
    return pairs, None


def _backbone_hint(layout):
    """What the file's own trunk names say of its backbone, for the message."""
    paths = [path for entries in layout.trunk for path, _ in entries]
    family = "ResNet"
    if any("/ibn/" in path or "inst_norm" in path for path in paths):
        family = "IBN-ResNet"
    elif any("/att/" in path or "convgroup" in path for path in paths):
        family = "ResNeSt"
    bottleneck = any("/conv3/" in path for path in paths)
    units = set()
    for path in paths + [path for path, _ in layout.global_stage]:
        match = re.search(r"unit_(\d+)_(\d+)", path)
        if match:
            units.add((int(match.group(1)), int(match.group(2))))
    article = "an" if family.startswith("I") else "a"
    description = f"looks like {article} {family}"
    if units:
        counts = [sum(1 for stage, _ in units if stage == index) for index in range(4)]
        blocks = "bottleneck" if bottleneck else "basic"
        description += f" with {counts} {blocks} units per stage"
    return description


def describe_flipreid_mismatch(file_path, model):
    """Says why a FlipReID file does not fit `model`, or None when it fits.

    Args:
        file_path: str, an h5 file in FlipReID's layout.
        model: this project's training or inference model.

    Returns:
        str or None.
    """
    with h5py.File(file_path, "r") as file:
        layout, reason = read_flipreid_layout(file)
        if layout is None:
            return reason
        _, reason = plan_flipreid_assignment(layout, model)
    return reason


def is_flipreid_weights_file(file_path):
    """Tells whether an h5 file has the layout of FlipReID's training or inference model file."""
    try:
        with h5py.File(file_path, "r") as file:
            layout, _ = read_flipreid_layout(file)
    except (OSError, KeyError, ValueError, RuntimeError):
        return False
    return layout is not None


def load_flipreid_weights(model, file_path):
    """Loads a FlipReID training_model.h5 or inference_model.h5 into this project's model.

    Args:
        model: the training model (needs the training layout, with heads for the same number of
            identities) or the inference model (either layout; the heads are not read).
        file_path: str, the h5 file.

    Raises:
        ValueError: the file is not in FlipReID's layout or does not fit the model; the message
            says which flag differs.
    """
    with h5py.File(file_path, "r") as file:
        layout, reason = read_flipreid_layout(file)
        if layout is None:
            raise ValueError(f"{file_path} is not in {FLIPREID_FORMAT}: {reason}.")
        pairs, reason = plan_flipreid_assignment(layout, model)
        if pairs is None:
            raise ValueError(
                f"The FlipReID file {file_path} does not fit the {model.name}: {reason}."
            )
        values = [
            np.asarray(file[path][()], dtype=variable.dtype.as_numpy_dtype)
            for variable, path in pairs
        ]
    keras.backend.batch_set_value(list(zip([variable for variable, _ in pairs], values)))
