"""Loading weights into a model rebuilt from the same settings.

Two kinds of files load: those this project's `save_weights` writes (h5 or a checkpoint
prefix), and FlipReID's own training_model.h5 / inference_model.h5 (read by structure and
shape, `applications.flipreid_weights`).
"""

import os

from applications.core.backend import tf
from applications.flipreid_weights import is_flipreid_weights_file, load_flipreid_weights
from applications.weights_file import check_weights_file


def load_model_weights(model, file_path):
    """Loads weights saved by `save_weights` of a model built with the same flags, or FlipReID's.

    Args:
        model: the training model (or the inference model) to load into.
        file_path: the weights file (.h5 or a checkpoint prefix), or FlipReID's
            training_model.h5 / inference_model.h5.

    Raises:
        FileNotFoundError: no file at file_path.
        ValueError: the file does not fit the model.
    """
    is_checkpoint = os.path.isfile(file_path + ".index")
    if not os.path.isfile(file_path) and not is_checkpoint:
        raise FileNotFoundError(f"No weights file at {file_path}.")
    if not is_checkpoint and is_flipreid_weights_file(file_path):
        load_flipreid_weights(model, file_path)
        return
    try:
        status = model.load_weights(file_path)
        if is_checkpoint and status is not None:
            status.assert_existing_objects_matched()
    except (ValueError, KeyError, IndexError, AssertionError, tf.errors.OpError) as error:
        raise ValueError(
            f"The weights file {file_path} does not fit this {model.name} model: {error}. "
            "Build the model with the same backbone_name, region_num, pooling_mode and "
            "num_identities as the model that saved it (image_height, image_width, min_value, "
            "max_value and use_horizontal_flipping_inside_model do not change the weights), and "
            "load a file "
            "saved from the same kind of model (training or inference)."
        ) from error


def load_weights_into_either(training_model, inference_model, file_path):
    """Loads a weights file into the training model, or else into the inference model.

    The inference model shares its weights with the training model, so either load sets both;
    a training_model.h5 also holds the classifier, an inference_model.h5 fits the inference
    model alone (e.g. when the number of identities differs).

    Args:
        training_model: the training model.
        inference_model: the inference model sharing its weights.
        file_path: str, a weights file `load_model_weights` reads.

    Returns:
        str, "training model" or "inference model": the one the file was loaded into.

    Raises:
        FileNotFoundError: no file at file_path.
        ValueError: the file fits neither model (the training model's reason).
    """
    try:
        load_model_weights(training_model, file_path)
        return "training model"
    except ValueError as training_model_error:
        try:
            load_model_weights(inference_model, file_path)
        except ValueError:
            raise training_model_error from None
        return "inference model"


def load_pretrained_weights(training_model, inference_model, file_path):
    """Loads a training-model or an inference-model weights file into the models of a run.

    The file is checked first (`applications.weights_file.check_weights_file`), so that a file
    of another model is one line rather than Keras' long error; then it is loaded into the
    training model, or else into the inference model sharing its weights.

    Args:
        training_model: the FlipReID training model.
        inference_model: the inference model sharing its weights.
        file_path: str, training_model.h5 or inference_model.h5 of an earlier run (or
            FlipReID's).

    Raises:
        ValueError: the file fits neither model; the message says which flags must match.
    """
    check_weights_file(
        file_path, {"training model": training_model, "inference model": inference_model}
    )
    try:
        loaded_into = load_weights_into_either(training_model, inference_model, file_path)
    except ValueError as error:
        raise ValueError(
            f"{error} To evaluate on another dataset than the one trained on (a different number "
            "of identities), pass the inference_model.h5 written beside it."
        ) from None
    print(f"Loaded the {loaded_into}'s weights from {file_path}")
