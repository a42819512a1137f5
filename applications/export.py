"""Export of the inference model for serving: a SavedModel and an ONNX file, checked for parity.

The exported graph takes what a camera pipeline has: a batch of uint8 RGB images of any
(common) size, `images` uint8 (N, H, W, 3). Inside, it resizes them bilinearly to the training
size and rounds to uint8, exactly as the evaluation pipeline does, optionally averages each
embedding with that of the mirrored image (`use_horizontal_flipping`), and returns
`embeddings` float32 (N, D), not L2-normalised: compare them by cosine distance.

    export_folder_path/
        saved_model/        TF Serving / tf.saved_model.load, signature "serving_default"
        model.onnx          onnxruntime (converted by tf2onnx, weights frozen in)
        export_config.json  input/output names, image size, flip setting, parity results

After writing both, `export_inference_model` runs the same batch of real images through
onnxruntime, through the reloaded SavedModel and through the TensorFlow function they were made
from, and requires the largest absolute difference of each to be at most `tolerance` (1e-4).
"""

import json
import os

import cv2
import numpy as np
from absl import logging

from applications.core.backend import tf
from applications.embedding import embed_images, embedding_model
from datasets.resizing import resize_like_cv2

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
SAVED_MODEL_FOLDER_NAME = "saved_model"
ONNX_FILE_NAME = "model.onnx"
EXPORT_CONFIG_FILE_NAME = "export_config.json"
DEFAULT_ONNX_OPSET = 17
DEFAULT_TOLERANCE = 1e-4
DEFAULT_NUM_PARITY_IMAGES = 16


class ExportParityError(RuntimeError):
    """An exported model's embeddings differ from TensorFlow's by more than the tolerance."""


class ServingModule(tf.Module):
    """The serving signature around an inference model (tracks its variables for saving).

    Args:
        inference_model: keras model, uint8/float images (B, image_height, image_width, 3) in
            [0, 255] -> float32 embeddings (B, D).
        image_height: int, the model's input height.
        image_width: int, the model's input width.
        use_horizontal_flipping: bool, average each embedding with the mirrored image's.
    """

    def __init__(self, inference_model, image_height, image_width, use_horizontal_flipping):
        super().__init__(name="flipreid_serving")
        self.inference_model = embedding_model(inference_model)
        self.image_height = int(image_height)
        self.image_width = int(image_width)
        self.use_horizontal_flipping = bool(use_horizontal_flipping)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_NAME)])
    def serve(self, images):
        """uint8 RGB (N, H, W, 3) of any H, W -> {"embeddings": float32 (N, D)}."""
        # The pixels of cv2.resize, as datasets.pipeline.decode_and_resize gives them, so served
        # embeddings equal the ones evaluated during training.
        resized = resize_like_cv2(images, self.image_height, self.image_width)
        embeddings = embed_images(self.inference_model, resized, self.use_horizontal_flipping)
        return {OUTPUT_NAME: embeddings}


def read_parity_images(image_file_paths, num_images=DEFAULT_NUM_PARITY_IMAGES):
    """A batch of real images for the parity check: the most common size among the readable ones.

    Args:
        image_file_paths: str paths (e.g. the query images).
        num_images: int, the most images to return.

    Returns:
        uint8 RGB (n, H, W, 3), n <= num_images, at the images' own size (no resizing, so the
        exported graph's resize is part of what is checked).

    Raises:
        ValueError: no image could be read.
    """
    by_shape = {}
    for path in image_file_paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        by_shape.setdefault(image.shape, []).append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        if len(by_shape[image.shape]) >= num_images:
            break
    if not by_shape:
        raise ValueError("None of the images given for the export parity check could be read.")
    return np.stack(max(by_shape.values(), key=len)[:num_images])


def _max_abs_difference(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.shape != b.shape:
        raise ExportParityError(
            f"Exported output shape {a.shape} differs from TensorFlow's {b.shape}."
        )
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def run_onnx_model(onnx_file_path, images):
    """Embeddings of uint8 RGB images (N, H, W, 3) from an exported model.onnx, float32 (N, D)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_file_path, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.asarray(images, np.uint8)})[0]


def run_saved_model(saved_model_folder_path, images):
    """Embeddings of uint8 RGB images (N, H, W, 3) from an exported SavedModel, float32 (N, D)."""
    loaded = tf.saved_model.load(saved_model_folder_path)
    outputs = loaded.signatures["serving_default"](**{INPUT_NAME: tf.constant(images, tf.uint8)})
    return outputs[OUTPUT_NAME].numpy()


def _export_file_paths(export_folder_path):
    """(SavedModel folder, ONNX file, config file) of an export folder that holds no export yet.

    Raises:
        FileExistsError: one of them exists (nothing is overwritten).
    """
    paths = (
        os.path.join(export_folder_path, SAVED_MODEL_FOLDER_NAME),
        os.path.join(export_folder_path, ONNX_FILE_NAME),
        os.path.join(export_folder_path, EXPORT_CONFIG_FILE_NAME),
    )
    for path in paths:
        if os.path.exists(path):
            raise FileExistsError(
                f"{path} already exists and is left untouched; choose another export folder."
            )
    return paths


def _checked_parity_images(parity_images):
    """parity_images as a uint8 array (N, H, W, 3); ValueError naming the argument otherwise."""
    parity_images = np.asarray(parity_images)
    if parity_images.ndim != 4 or parity_images.shape[-1] != 3 or parity_images.dtype != np.uint8:
        raise ValueError(
            "parity_images must be uint8 RGB images (N, H, W, 3), got "
            f"{parity_images.dtype} {parity_images.shape}."
        )
    return parity_images


def _write_exports(module, saved_model_folder_path, onnx_file_path, opset, tf2onnx):
    """Writes the module's serving signature as a SavedModel and as an ONNX file (tf2onnx)."""
    logging.info("Writing the SavedModel to %s", saved_model_folder_path)
    tf.saved_model.save(
        module, saved_model_folder_path, signatures={"serving_default": module.serve}
    )
    logging.info("Converting to ONNX (opset %d): %s", opset, onnx_file_path)
    tf2onnx.convert.from_function(
        module.serve,
        input_signature=module.serve.input_signature,
        opset=opset,
        output_path=onnx_file_path,
    )


def _export_config(module, summary, parity_images, embedding_dim, opset, tolerance):
    """The content of export_config.json: input/output, image size, flip setting, parity."""
    return {
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": [None, None, None, 3]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [None, embedding_dim]},
        "image_height": module.image_height,
        "image_width": module.image_width,
        "use_horizontal_flipping": module.use_horizontal_flipping,
        "onnx_opset": int(opset),
        "parity": {
            "num_images": summary["num_parity_images"],
            "image_size": list(parity_images.shape[1:3]),
            "onnx_max_abs_difference": summary["onnx_max_abs_difference"],
            "saved_model_max_abs_difference": summary["saved_model_max_abs_difference"],
            "tolerance": tolerance,
        },
    }


def _check_parity(summary, tolerance, export_folder_path):
    """Raises ExportParityError when an export differs from TensorFlow by more than tolerance."""
    failures = [
        f"{name} differs from TensorFlow by up to {difference:.3g}"
        for name, difference in (
            ("ONNX", summary["onnx_max_abs_difference"]),
            ("SavedModel", summary["saved_model_max_abs_difference"]),
        )
        if not difference <= tolerance
    ]
    if failures:
        raise ExportParityError(
            f"Export parity check failed: {'; '.join(failures)} (tolerance {tolerance:g}, "
            f"{summary['num_parity_images']} images). The files in {export_folder_path} are kept "
            "for inspection; do not serve them."
        )


def export_inference_model(
    inference_model,
    export_folder_path,
    *,
    image_height,
    image_width,
    use_horizontal_flipping=True,
    parity_images,
    opset=DEFAULT_ONNX_OPSET,
    tolerance=DEFAULT_TOLERANCE,
):
    """Writes the SavedModel and ONNX exports and checks both against TensorFlow.

    Args:
        inference_model: keras model, images (B, image_height, image_width, 3) -> (B, D).
        export_folder_path: str, created; it must not already hold an export.
        image_height: int, the model's input height.
        image_width: int, the model's input width.
        use_horizontal_flipping: bool, put flip averaging in the exported graph.
        parity_images: uint8 RGB (N, H, W, 3), any H and W: real images for the parity check
            (see read_parity_images).
        opset: int, ONNX opset of the conversion.
        tolerance: float, the largest allowed absolute difference of any embedding value.

    Returns:
        dict: saved_model_folder_path, onnx_file_path, export_config_file_path,
        onnx_max_abs_difference, saved_model_max_abs_difference, num_parity_images.

    Raises:
        FileExistsError: the folder already holds an export (nothing is overwritten).
        ExportParityError: a difference exceeds the tolerance (the files stay for inspection).
    """
    import tf2onnx  # before any check or file: without the converter nothing is written

    saved_model_folder_path, onnx_file_path, config_file_path = _export_file_paths(
        export_folder_path
    )
    parity_images = _checked_parity_images(parity_images)
    os.makedirs(export_folder_path, exist_ok=True)
    module = ServingModule(inference_model, image_height, image_width, use_horizontal_flipping)
    reference = module.serve(tf.constant(parity_images))[OUTPUT_NAME].numpy()
    _write_exports(module, saved_model_folder_path, onnx_file_path, opset, tf2onnx)
    onnx_difference = _max_abs_difference(run_onnx_model(onnx_file_path, parity_images), reference)
    saved_model_difference = _max_abs_difference(
        run_saved_model(saved_model_folder_path, parity_images), reference
    )
    summary = {
        "saved_model_folder_path": saved_model_folder_path,
        "onnx_file_path": onnx_file_path,
        "export_config_file_path": config_file_path,
        "onnx_max_abs_difference": onnx_difference,
        "saved_model_max_abs_difference": saved_model_difference,
        "num_parity_images": int(parity_images.shape[0]),
    }
    config = _export_config(
        module, summary, parity_images, int(reference.shape[1]), opset, tolerance
    )
    with open(config_file_path, "w") as file:
        json.dump(config, file, indent=2)
    _check_parity(summary, tolerance, export_folder_path)
    return summary


def format_export_summary(summary):
    """The export summary as lines for stdout."""
    return "\n".join(
        [
            f"Exported the inference model to {os.path.dirname(summary['onnx_file_path'])}:",
            f"  SavedModel: {summary['saved_model_folder_path']}",
            f"  ONNX:       {summary['onnx_file_path']}",
            f"  Parity on {summary['num_parity_images']} images, max abs difference vs "
            f"TensorFlow: onnxruntime {summary['onnx_max_abs_difference']:.2e}, reloaded "
            f"SavedModel {summary['saved_model_max_abs_difference']:.2e}",
        ]
    )


def export_for_serving(
    inference_model,
    export_folder_path,
    *,
    image_height,
    image_width,
    export_with_flipping=True,
    parity_image_file_paths,
):
    """Exports a run's inference model and prints where it went and the parity check's numbers.

    Args:
        inference_model: keras model with the weights to serve.
        export_folder_path: str, a folder without an export yet.
        image_height: int, the model's input height.
        image_width: int, the model's input width.
        export_with_flipping: bool, flip averaging inside the exported graph.
        parity_image_file_paths: str paths of real images (e.g. the query set); up to
            DEFAULT_NUM_PARITY_IMAGES of one size are used.

    Returns:
        dict, see export_inference_model.
    """
    print(f"\nExporting the inference model to {export_folder_path} ...")
    summary = export_inference_model(
        inference_model,
        export_folder_path,
        image_height=image_height,
        image_width=image_width,
        use_horizontal_flipping=export_with_flipping,
        parity_images=read_parity_images(parity_image_file_paths),
    )
    print(format_export_summary(summary))
    return summary
