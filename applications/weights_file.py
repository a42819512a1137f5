"""Checking a weights file before loading it: one clear line for a damaged or unfitting file.

h5py and Keras report an empty, truncated or foreign file with a long traceback that does not
name the file; a weights file of another model fails deep inside Keras. These checks read only
the file's structure (names and shapes, no code is executed) and say what was expected.

Two layouts are accepted: this project's `save_weights` files, and FlipReID's own full-model
files (`applications.flipreid_weights`).
"""

import os

import h5py

from applications.flipreid_weights import (
    FLIPREID_FORMAT,
    describe_flipreid_mismatch,
    read_flipreid_layout,
)

# HDF5 files start with this signature (at offset 0 for files written by h5py/Keras).
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_EXPECTED = (
    "expected an HDF5 weights file written by this project's save_weights (training_model.h5 "
    "or inference_model.h5 from a run folder)"
)


class WeightsFileError(ValueError):
    """A weights file is missing, damaged, or holds the weights of another model."""


def _legacy_weights(layer):
    # The order Keras' HDF5 loader assigns the stored arrays in.
    return layer.trainable_weights + layer.non_trainable_weights


def check_weights_file_readable(file_path, flag_name="--pretrained_model_file_path"):
    """Makes sure `file_path` is a whole, readable Keras HDF5 weights file or checkpoint prefix.

    Args:
        file_path: str, an .h5 file, or the prefix of a TensorFlow checkpoint (prefix.index).
        flag_name: str, the flag the path came from, named in the error.

    Returns:
        "h5" or "checkpoint".

    Raises:
        WeightsFileError: one line naming the file, what is wrong and what was expected.
    """
    if not os.path.exists(file_path) and os.path.isfile(file_path + ".index"):
        return "checkpoint"
    if not os.path.exists(file_path):
        raise WeightsFileError(f"{flag_name} {file_path}: no such file; {_EXPECTED}.")
    if not os.path.isfile(file_path):
        raise WeightsFileError(f"{flag_name} {file_path} is a folder; {_EXPECTED}.")
    size = os.path.getsize(file_path)
    if size == 0:
        raise WeightsFileError(f"{flag_name} {file_path} is empty (0 bytes); {_EXPECTED}.")
    with open(file_path, "rb") as file:
        head = file.read(len(_HDF5_SIGNATURE))
    if head != _HDF5_SIGNATURE:
        raise WeightsFileError(
            f"{flag_name} {file_path} is not an HDF5 file (it starts with {head[:8]!r}); "
            f"{_EXPECTED}."
        )
    try:
        with h5py.File(file_path, "r") as file:
            group = file["model_weights"] if "model_weights" in file else file
            if "layer_names" not in group.attrs:
                raise WeightsFileError(
                    f"{flag_name} {file_path} is an HDF5 file but holds no Keras weights (no "
                    f"layer_names); {_EXPECTED}."
                )
            # Touch every array's metadata: a truncated file fails here, not halfway through
            # loading into the model.
            for layer_name in group.attrs["layer_names"]:
                layer_group = group[_decode(layer_name)]
                for weight_name in layer_group.attrs.get("weight_names", []):
                    _ = layer_group[_decode(weight_name)].shape
    except WeightsFileError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsFileError(
            f"{flag_name} {file_path} is damaged or truncated ({size} bytes; h5py: {reason}); "
            f"{_EXPECTED}."
        ) from None
    return "h5"


def _decode(name):
    return name.decode("utf8") if isinstance(name, bytes) else str(name)


def describe_weights_mismatch(file_path, model):
    """Says why the HDF5 weights file does not fit `model`, or None when it fits.

    Compares what Keras' HDF5 loader compares: the layers that hold weights, in order, and the
    shapes of their weights.

    Args:
        file_path: str, a file that passed check_weights_file_readable ("h5").
        model: a built keras model.

    Returns:
        str or None.
    """
    layers = [layer for layer in model.layers if layer.weights]
    with h5py.File(file_path, "r") as file:
        group = file["model_weights"] if "model_weights" in file else file
        stored = []
        for layer_name in group.attrs["layer_names"]:
            layer_group = group[_decode(layer_name)]
            weight_names = [_decode(name) for name in layer_group.attrs.get("weight_names", [])]
            if weight_names:
                stored.append(
                    (
                        _decode(layer_name),
                        [tuple(layer_group[name].shape) for name in weight_names],
                    )
                )
    if len(stored) != len(layers):
        return (
            f"it holds {len(stored)} layers with weights ({', '.join(n for n, _ in stored[:4])}"
            f"{', ...' if len(stored) > 4 else ''}), the {model.name} has {len(layers)}"
        )
    for (stored_name, stored_shapes), layer in zip(stored, layers, strict=True):
        shapes = [tuple(weight.shape) for weight in _legacy_weights(layer)]
        if len(shapes) != len(stored_shapes):
            return (
                f"its layer {stored_name} has {len(stored_shapes)} weights, the {model.name}'s "
                f"layer {layer.name} has {len(shapes)}"
            )
        for index, (stored_shape, shape) in enumerate(zip(stored_shapes, shapes, strict=True)):
            if stored_shape != shape:
                weight_name = _legacy_weights(layer)[index].name
                return (
                    f"its weight {weight_name} in {stored_name} has shape {stored_shape}, the "
                    f"{model.name} built from the flags has {shape}"
                )
    return None


def check_weights_file(file_path, models, flag_name="--pretrained_model_file_path"):
    """Checks that `file_path` is whole and fits one of `models`; returns which one.

    Args:
        file_path: str, an .h5 weights file or a checkpoint prefix.
        models: dict description -> keras model, tried in order, e.g. {"training model":
            training_model, "inference model": inference_model}.
        flag_name: str, the flag named in errors.

    Returns:
        str, the description of the first model the file fits (the first one for a
        checkpoint prefix, whose fit Keras checks when loading).

    Raises:
        WeightsFileError: one line: the file, what is wrong, what was expected.
    """
    if check_weights_file_readable(file_path, flag_name) == "checkpoint":
        return next(iter(models))
    with h5py.File(file_path, "r") as file:
        flipreid_layout, not_flipreid_reason = read_flipreid_layout(file)
        own_layout = _looks_like_own_layout(file)
    if flipreid_layout is not None:
        reasons = {}
        for description, model in models.items():
            reason = describe_flipreid_mismatch(file_path, model)
            if reason is None:
                return description
            reasons[description] = reason
        # Most differences (backbone, regions, pooling) are the same for both models.
        if len(set(reasons.values())) == 1:
            explanation = next(iter(reasons.values()))
        else:
            explanation = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
        raise WeightsFileError(
            f"{flag_name} {file_path} is FlipReID's {flipreid_layout.file_kind} but does not fit "
            f"the model built from the flags: {explanation}."
        )
    reasons = []
    for description, model in models.items():
        reason = describe_weights_mismatch(file_path, model)
        if reason is None:
            return description
        reasons.append(f"{description}: {reason}")
    if not own_layout:
        raise WeightsFileError(
            f"{flag_name} {file_path} matches neither this project's save_weights layout "
            f"({'; '.join(reasons)}) nor {FLIPREID_FORMAT} ({not_flipreid_reason}); pass "
            "training_model.h5 or inference_model.h5 from a run folder of this project or of "
            "FlipReID."
        )
    raise WeightsFileError(
        f"{flag_name} {file_path} holds the weights of another model ({'; '.join(reasons)}). "
        "Pass the flags the file was trained with (its run folder's flags.json: "
        "backbone_model_name, region_num, pooling_mode, and the same training identities), or "
        "inference_model.h5 to evaluate on another dataset."
    )


# Layers with weights that this project's save_weights files start with: the training model's
# two sub-models, or the inference model's trunk.
_OWN_FIRST_LAYERS = ("branch_network", "trunk")


def _looks_like_own_layout(file):
    """Tells whether an open h5 file is laid out as this project's save_weights writes."""
    if "model_weights" in file or "layer_names" not in file.attrs:
        return False
    for layer_name in file.attrs["layer_names"]:
        layer_group = file[_decode(layer_name)]
        if len(layer_group.attrs.get("weight_names", [])):
            return _decode(layer_name) in _OWN_FIRST_LAYERS
    return False
