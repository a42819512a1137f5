"""Embeddings of a user's own images from a trained run: `FeatureExtractor(weights_path)`.

A run folder holds `model_config.json` (the arguments of `build_flipreid_models`) and
`flags.json` beside `inference_model.h5` / `training_model.h5`. The extractor rebuilds the model
from that configuration and loads only the weights: no model code or layer configuration is ever
read from a user's file.

Images are prepared exactly as in evaluation (`datasets.pipeline.decode_and_resize`): decoded to
RGB, resized bilinearly to the run's size, rounded to uint8; the embedding is optionally averaged
with that of the mirrored image.
"""

import inspect
import json
import os

import numpy as np
from absl import logging

from applications.core.backend import tf
from applications.embedding import embedding_function, embedding_model, extract_embeddings
from applications.model import build_flipreid_models
from applications.weights import load_weights_into_either
from datasets.image_files import SkippedImageLog
from datasets.resizing import resize_like_cv2

IMAGE_FILE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_NUM_NAMED_FILES = 5


def list_image_files(folder_path):
    """The image files under a folder, recursively, sorted.

    Args:
        folder_path: str, the folder to search.

    Returns:
        (image_file_paths, num_other_files): sorted list of str paths whose extension is one of
        IMAGE_FILE_EXTENSIONS (any case), and the number of other files left out.

    Raises:
        FileNotFoundError: folder_path is not a folder.
    """
    if not os.path.isdir(folder_path):
        raise FileNotFoundError(f"No image folder at {folder_path}; pass an existing folder.")
    image_file_paths, num_other_files = [], 0
    for directory, _, file_names in os.walk(folder_path):
        for file_name in file_names:
            if file_name.lower().endswith(IMAGE_FILE_EXTENSIONS):
                image_file_paths.append(os.path.join(directory, file_name))
            else:
                num_other_files += 1
    return sorted(image_file_paths), num_other_files


def read_model_config(run_folder_path):
    """Reads and checks a run's model_config.json.

    Args:
        run_folder_path: str, the folder holding model_config.json.

    Returns:
        dict of build_flipreid_models keyword arguments, with pretrained=False.

    Raises:
        FileNotFoundError: no model_config.json there.
        ValueError: the file is not JSON, or lacks arguments build_flipreid_models needs.
    """
    file_path = os.path.join(run_folder_path, "model_config.json")
    if not os.path.isfile(file_path):
        raise FileNotFoundError(
            f"No model_config.json beside the weights in {run_folder_path}. Pass a weights file "
            "from a run folder (it holds model_config.json), or model_config_path=."
        )
    try:
        with open(file_path) as file:
            model_config = json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(f"{file_path} is not a readable JSON file: {error}") from error
    if not isinstance(model_config, dict):
        raise ValueError(f"{file_path} must hold a JSON object of model settings.")
    parameters = inspect.signature(build_flipreid_models).parameters
    required = [
        name
        for name, parameter in parameters.items()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    missing = [name for name in required if name not in model_config]
    if missing:
        raise ValueError(f"{file_path} lacks the model settings {missing}.")
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = [name for name in model_config if name not in parameters]
    if unknown and not accepts_any:
        # A newer run may record settings this version does not know; they cannot shape the
        # model built here, so say so instead of failing.
        logging.warning("Ignoring settings unknown to this version in %s: %s", file_path, unknown)
        model_config = {key: value for key, value in model_config.items() if key in parameters}
    # The weights come from the file; never download ImageNet weights to overwrite them.
    return {**model_config, "pretrained": False}


def _read_flags(run_folder_path):
    file_path = os.path.join(run_folder_path, "flags.json")
    if not os.path.isfile(file_path):
        return {}
    try:
        with open(file_path) as file:
            flags = json.load(file)
    except (OSError, ValueError):
        logging.warning("Cannot read %s; using default evaluation settings.", file_path)
        return {}
    return flags if isinstance(flags, dict) else {}


def _format_file_list(file_paths):
    named = ", ".join(file_paths[:_NUM_NAMED_FILES])
    more = len(file_paths) - _NUM_NAMED_FILES
    return named + (f" and {more} more" if more > 0 else "")


class FeatureExtractor:
    """Embeds images with a trained FlipReID inference model.

    Args:
        weights_path: str, inference_model.h5 or training_model.h5 from a run folder.
        model_config_path: str or None, the model_config.json to build the model from (None: the
            one beside weights_path, or in the folder above for model_<i>/ weights).
        use_horizontal_flipping: bool or None, average each embedding with that of the mirrored
            image (None: the run's --use_horizontal_flipping_in_evaluation, else True).
        batch_size: int, images per forward pass.

    Raises:
        FileNotFoundError: no weights file or model_config.json.
        ValueError: the weights do not fit the configuration.

    Example:
        >>> extractor = FeatureExtractor("outputs/Synthetic_resnet18/inference_model.h5")
        >>> features = extractor(["a.jpg", "b.jpg"])  # float32 (2, D)
    """

    def __init__(
        self, weights_path, *, model_config_path=None, use_horizontal_flipping=None, batch_size=64
    ):
        weights_path = os.fspath(weights_path)
        if not os.path.isfile(weights_path) and not os.path.isfile(weights_path + ".index"):
            raise FileNotFoundError(
                f"No weights file at {weights_path}; pass the inference_model.h5 (or "
                "training_model.h5) of a run folder."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        run_folder_path = os.path.dirname(os.path.abspath(weights_path))
        if not model_config_path and not os.path.isfile(
            os.path.join(run_folder_path, "model_config.json")
        ):
            # Runs of several models keep each model's weights in model_<i>/ below the run.
            parent_folder_path = os.path.dirname(run_folder_path)
            if os.path.isfile(os.path.join(parent_folder_path, "model_config.json")):
                run_folder_path = parent_folder_path
        config_folder_path = (
            os.path.dirname(os.path.abspath(model_config_path))
            if model_config_path
            else run_folder_path
        )
        self.model_config = read_model_config(config_folder_path)
        flags = _read_flags(run_folder_path)
        if use_horizontal_flipping is None:
            use_horizontal_flipping = bool(flags.get("use_horizontal_flipping_in_evaluation", True))
        self.use_horizontal_flipping = bool(use_horizontal_flipping)
        self.weights_path = weights_path
        self.batch_size = int(batch_size)
        self.image_height = int(self.model_config["image_height"])
        self.image_width = int(self.model_config["image_width"])
        training_model, self.inference_model = build_flipreid_models(**self.model_config)
        load_weights_into_either(training_model, self.inference_model, weights_path)
        self.inference_model = embedding_model(self.inference_model)
        self.feature_dimension = int(self.inference_model.output_shape[-1])
        self._forward = embedding_function(self.inference_model, self.use_horizontal_flipping)

    def _resize(self, image, index):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or not np.issubdtype(image.dtype, np.number):
            raise ValueError(
                f"Image {index} must be a numeric RGB array (height, width, 3), got shape "
                f"{image.shape} and dtype {image.dtype}."
            )
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"Image {index} is empty (shape {image.shape}).")
        if image.dtype == np.uint8:
            # The pixels the evaluation pipeline gives a decoded file (cv2.resize's).
            return resize_like_cv2(image, self.image_height, self.image_width)
        resized = tf.image.resize(
            tf.convert_to_tensor(image, tf.float32), [self.image_height, self.image_width]
        )
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    def embed_arrays(self, images):
        """Embeds RGB arrays of any size.

        Args:
            images: uint8 (or float in [0, 255]) RGB array (N, H, W, 3), or a sequence of
                (H_i, W_i, 3) arrays.

        Returns:
            float32 (N, D).
        """
        resized = [self._resize(image, index) for index, image in enumerate(images)]
        if not resized:
            return np.zeros((0, self.feature_dimension), dtype=np.float32)
        batches = [
            np.asarray(self._forward(tf.stack(resized[start : start + self.batch_size])))
            for start in range(0, len(resized), self.batch_size)
        ]
        return np.concatenate(batches, axis=0).astype(np.float32, copy=False)

    def extract_files(self, image_file_paths, *, skip_unreadable=True, verbose=1):
        """Embeds image files in order, skipping (and returning) those that cannot be read.

        Args:
            image_file_paths: sequence of str.
            skip_unreadable: True skips missing, non-image, truncated or corrupt files; False
                raises instead.
            verbose: 1 shows a progress bar, 0 is silent.

        Returns:
            (features, kept_file_paths, unreadable_file_paths): float32 (len(kept), D), the
            paths whose rows they are (input order), and the skipped paths.

        Raises:
            ValueError: skip_unreadable is False and some file cannot be read (all are named).
        """
        image_file_paths = [os.fspath(path) for path in image_file_paths]
        if not image_file_paths:
            return np.zeros((0, self.feature_dimension), dtype=np.float32), [], []
        # A file that fails to read or decode drops out (datasets.image_files' policy); its
        # position is missing below, which is how it gets counted and named.
        (features,), kept = extract_embeddings(
            self.inference_model,
            image_file_paths,
            image_height=self.image_height,
            image_width=self.image_width,
            batch_size=self.batch_size,
            use_horizontal_flipping=self.use_horizontal_flipping,
            verbose=verbose,
            skipped_images=SkippedImageLog("FeatureExtractor"),
        )
        is_kept = np.zeros(len(image_file_paths), dtype=bool)
        is_kept[kept] = True
        unreadable = [path for path, ok in zip(image_file_paths, is_kept) if not ok]
        if unreadable and not skip_unreadable:
            raise ValueError(
                f"Cannot read {len(unreadable)} image file(s): {_format_file_list(unreadable)}. "
                "Check that they are whole JPEG, PNG, BMP or GIF files."
            )
        if unreadable:
            logging.info("Skipped %d unreadable image files.", len(unreadable))
        return features, [image_file_paths[position] for position in kept], unreadable

    def __call__(self, images):
        """Embeds images given as file paths or arrays.

        Args:
            images: one path (str or os.PathLike), a sequence of paths, one RGB array
                (H, W, 3), an array batch (N, H, W, 3), or a sequence of RGB arrays of any
                sizes. Arrays are uint8 (or float in [0, 255]) RGB.

        Returns:
            float32 (N, D), row i for image i.

        Raises:
            ValueError: a file cannot be read (named), or an array is not RGB.
        """
        if isinstance(images, (str, os.PathLike)):
            images = [images]
        if isinstance(images, np.ndarray):
            return self.embed_arrays(images[None] if images.ndim == 3 else images)
        images = list(images)
        if all(isinstance(image, (str, os.PathLike)) for image in images):
            features, _, _ = self.extract_files(images, skip_unreadable=False, verbose=0)
            return features
        if any(isinstance(image, (str, os.PathLike)) for image in images):
            raise ValueError("Pass either file paths or image arrays, not a mixture.")
        return self.embed_arrays(images)

    def description(self):
        """A JSON string of what produced the features (stored beside them)."""
        return json.dumps(
            {
                "weights_path": os.path.abspath(self.weights_path),
                "use_horizontal_flipping": self.use_horizontal_flipping,
                "model_config": self.model_config,
            },
            sort_keys=True,
        )


def save_features(features_file_path, features, image_file_paths, unreadable_file_paths, extractor):
    """Writes extracted features to one .npz file.

    The file holds `features` float32 (N, D), `image_file_paths` (N,) str,
    `unreadable_image_file_paths` (M,) str and `extractor` (a JSON string: weights, flip setting,
    model configuration). It loads with np.load(..., allow_pickle=False).

    Args:
        features_file_path: str, the .npz to write (its folder must exist).
        features: float32 (N, D).
        image_file_paths: N str.
        unreadable_file_paths: str paths that were skipped.
        extractor: the FeatureExtractor that produced them.
    """
    np.savez(
        features_file_path,
        features=np.asarray(features, dtype=np.float32),
        image_file_paths=np.asarray(list(image_file_paths), dtype=str),
        unreadable_image_file_paths=np.asarray(list(unreadable_file_paths), dtype=str),
        extractor=np.asarray(extractor.description()),
    )


def load_features(features_file_path):
    """Reads a features file written by save_features (no pickled objects are loaded).

    Returns:
        (features float32 (N, D), image_file_paths list of N str, extractor description dict).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a features file of this project.
    """
    if not os.path.isfile(features_file_path):
        raise FileNotFoundError(
            f"No features file at {features_file_path}; write one with the extract command."
        )
    try:
        with np.load(features_file_path, allow_pickle=False) as contents:
            features = contents["features"].astype(np.float32, copy=False)
            image_file_paths = [str(path) for path in contents["image_file_paths"]]
            description = json.loads(str(contents["extractor"])) if "extractor" in contents else {}
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(
            f"{features_file_path} is not a features file written by the extract command "
            f"(it needs 'features' and 'image_file_paths' arrays): {error}"
        ) from error
    if features.ndim != 2 or features.shape[0] != len(image_file_paths):
        raise ValueError(
            f"{features_file_path}: features of shape {features.shape} do not match "
            f"{len(image_file_paths)} image file paths."
        )
    return features, image_file_paths, description


def extract_folder(extractor, image_folder_path, features_file_path, *, verbose=1):
    """Embeds every image under a folder into one .npz file (see save_features).

    Unreadable images are skipped, counted and named in the returned summary; files without an
    image extension are counted and left out.

    Args:
        extractor: FeatureExtractor.
        image_folder_path: str, searched recursively.
        features_file_path: str, the .npz to write; its folder is created if needed. An
            existing file is not overwritten.
        verbose: 1 shows a progress bar.

    Returns:
        dict with num_images (embedded), unreadable_image_file_paths (list of str),
        num_other_files and features_file_path.

    Raises:
        FileNotFoundError: no such folder.
        FileExistsError: features_file_path exists.
        ValueError: the folder holds no readable image.
    """
    if not features_file_path.endswith(".npz"):
        # np.savez would append the suffix itself and the file would not be where we say.
        features_file_path += ".npz"
    if os.path.exists(features_file_path):
        raise FileExistsError(
            f"{features_file_path} already exists and is left untouched; choose another "
            "features file path."
        )
    image_file_paths, num_other_files = list_image_files(image_folder_path)
    if not image_file_paths:
        raise ValueError(
            f"No image files ({', '.join(IMAGE_FILE_EXTENSIONS)}) under {image_folder_path}."
        )
    features, kept, unreadable = extractor.extract_files(image_file_paths, verbose=verbose)
    if not kept:
        raise ValueError(
            f"None of the {len(image_file_paths)} image files under {image_folder_path} could be "
            f"read, e.g. {_format_file_list(unreadable)}."
        )
    os.makedirs(os.path.dirname(os.path.abspath(features_file_path)), exist_ok=True)
    save_features(features_file_path, features, kept, unreadable, extractor)
    return {
        "num_images": len(kept),
        "unreadable_image_file_paths": unreadable,
        "num_other_files": num_other_files,
        "features_file_path": features_file_path,
    }


def format_extraction_summary(summary):
    """The summary of extract_folder as lines for stdout."""
    lines = [f"Embedded {summary['num_images']} images into {summary['features_file_path']}."]
    unreadable = summary["unreadable_image_file_paths"]
    if unreadable:
        lines.append(
            f"Skipped {len(unreadable)} unreadable image file(s): {_format_file_list(unreadable)}"
        )
    if summary["num_other_files"]:
        lines.append(f"Left out {summary['num_other_files']} file(s) without an image extension.")
    return "\n".join(lines)
