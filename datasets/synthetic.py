"""The built-in Synthetic person re-identification dataset: generated once, cached, loaded.

``generate_synthetic_dataset`` draws identities, cameras and images
(``datasets.synthetic_appearance``), paints them (``datasets.synthetic_rendering``) and writes
them in the Market-1501 layout and naming, with distractors (identity 0000) and junk (-1) in the
gallery, so the same loader rules apply as on real data. It is built to be hard for features that
were not learned: every camera has its own cluttered scene and colour cast, people are occluded,
passers-by stray into the boxes, and some identities have a look-alike "twin" that differs in
one or two attributes.

Generation is deterministic for its parameters. A generated folder holds ``manifest.json`` with
the parameters and the generator version and is reused when asked for again with the same ones;
anything else goes to another folder (nothing is ever deleted), so a changed generator never
reuses an old cache.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid

import cv2
import numpy as np
from absl import logging

from datasets import market1501, records
from datasets.synthetic_appearance import (
    EXTRA_STREAM,
    IMAGE_STREAM,
    STRANGER_ID_OFFSET,
    draw_camera_conditions,
    draw_identity_traits,
    draw_image_variation,
)
from datasets.synthetic_rendering import render_camera_background, render_image

# Bump whenever the images drawn for the same parameters change: it is part of the cache key.
SYNTHETIC_GENERATOR_VERSION = 2
SYNTHETIC_MANIFEST_FILE_NAME = "manifest.json"
SYNTHETIC_DEFAULT_OPTIONS = {
    "num_identities": 200,
    "num_cameras": 4,
    "num_images_per_identity": 12,
    "image_height": 128,
    "image_width": 64,
    "num_distractor_images": 20,
    "num_junk_images": 10,
    "difficulty": 1.0,
    "twin_fraction": 0.3,
    "seed": 0,
}
# Per-image nuisance probabilities at difficulty 1 (they scale with it, up to 1).
OCCLUSION_PROBABILITY = 0.2
PASSER_BY_PROBABILITY = 0.2


def _validate_options(options: dict) -> None:
    """Checks the generation parameters; repeats the received values in the error."""
    integer_limits = {
        "num_identities": (4, 9999),
        "num_cameras": (2, 99),
        "num_images_per_identity": (4, 999_999),
        "image_height": (32, 4096),
        "image_width": (16, 4096),
        "num_distractor_images": (0, 999_999),
        "num_junk_images": (0, 999_999),
    }
    for name, (low, high) in integer_limits.items():
        value = options[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or not (low <= value <= high)
        ):
            raise ValueError(
                f"Synthetic: {name} must be an integer in [{low}, {high}]; got {value!r}"
            )
    for name, (low, high) in {"difficulty": (0.0, 2.0), "twin_fraction": (0.0, 1.0)}.items():
        value = options[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.integer, np.floating))
            or not (low <= value <= high)
        ):
            raise ValueError(
                f"Synthetic: {name} must be a number in [{low}, {high}]; got {value!r}"
            )
    if isinstance(options["seed"], bool) or not isinstance(options["seed"], (int, np.integer)):
        raise ValueError(f"Synthetic: seed must be an integer; got {options['seed']!r}")


def _normalize_options(options: dict) -> dict:
    """Plain ints and floats, so that the manifest and the folder name compare exactly."""
    return {
        name: float(value) if name in ("difficulty", "twin_fraction") else int(value)
        for name, value in options.items()
    }


def synthetic_folder_name(options: dict) -> str:
    """Names the folder of a generated dataset after its parameters and the generator version,
    e.g. "Synthetic_ids200_cams4_imgs12_128x64_dis20_junk10_diff1_twin0.3_seed0_v2"."""
    options = {**SYNTHETIC_DEFAULT_OPTIONS, **options}
    return (
        f"Synthetic_ids{options['num_identities']}_cams{options['num_cameras']}"
        f"_imgs{options['num_images_per_identity']}"
        f"_{options['image_height']}x{options['image_width']}"
        f"_dis{options['num_distractor_images']}_junk{options['num_junk_images']}"
        f"_diff{float(options['difficulty']):g}_twin{float(options['twin_fraction']):g}"
        f"_seed{options['seed']}_v{SYNTHETIC_GENERATOR_VERSION}"
    )


def _image_file_name(identity_ID: int, camera_ID: int, frame_index: int) -> str:
    identity = "-1" if identity_ID < 0 else f"{identity_ID:04d}"
    return f"{identity}_c{camera_ID}s1_{frame_index:06d}_00.jpg"


def _write_jpeg(image_file_path: str, image: np.ndarray, quality: int) -> None:
    success, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not success:
        raise OSError(f"OpenCV could not encode {image_file_path!r}")
    encoded.tofile(image_file_path)


class _ImageWriter:
    """Renders images with the dataset's cameras and writes them into the split folders.

    Creating it makes the split folders and draws each camera and its scene.

    Args:
        dataset_dir: The (empty) dataset folder.
        options: Normalised generation parameters.
    """

    def __init__(self, dataset_dir: str, options: dict):
        self.seed = options["seed"]
        self.image_height, self.image_width = options["image_height"], options["image_width"]
        self.split_dirs = {
            split_name: os.path.join(dataset_dir, folder_name)
            for split_name, folder_name in market1501.MARKET1501_SPLIT_FOLDER_NAMES.items()
        }
        for split_dir in self.split_dirs.values():
            os.makedirs(split_dir)
        self.cameras = {
            camera_ID: draw_camera_conditions(self.seed, camera_ID, options["difficulty"])
            for camera_ID in range(1, options["num_cameras"] + 1)
        }
        self.backgrounds = {
            camera_ID: render_camera_background(camera, self.image_height, self.image_width)
            for camera_ID, camera in self.cameras.items()
        }

    def write(self, split_name, file_name, traits, camera_ID, variation) -> None:
        """Renders one image of ``traits`` seen by camera ``camera_ID`` as a JPEG file."""
        camera = self.cameras[camera_ID]
        image = render_image(
            traits,
            camera,
            variation,
            self.image_height,
            self.image_width,
            background=self.backgrounds[camera_ID],
            seed=self.seed,
        )
        _write_jpeg(
            os.path.join(self.split_dirs[split_name], file_name), image, camera.jpeg_quality
        )


def _nuisance_probabilities(difficulty: float) -> dict:
    """``draw_image_variation``'s occlusion and passer-by probabilities at ``difficulty``."""
    return dict(
        occlusion_probability=min(1.0, OCCLUSION_PROBABILITY * difficulty),
        passer_by_probability=min(1.0, PASSER_BY_PROBABILITY * difficulty),
    )


def _write_identities(writer: _ImageWriter, options: dict) -> dict:
    """Writes every identity's images: training identities first, then query and gallery.

    Returns:
        Split name -> number of images written.
    """
    seed, num_cameras = options["seed"], options["num_cameras"]
    num_images = options["num_images_per_identity"]
    probabilities = _nuisance_probabilities(options["difficulty"])
    num_train_identities = options["num_identities"] // 2
    num_images_per_split = {"train": 0, "query": 0, "gallery": 0}
    for identity_ID in range(1, options["num_identities"] + 1):
        traits = draw_identity_traits(seed, identity_ID, options["twin_fraction"])
        generator = np.random.default_rng([seed, IMAGE_STREAM, identity_ID])
        # Each person passes a few cameras; at least two images per camera, so that every query
        # (one per camera) has true matches in other cameras.
        num_visited = int(generator.integers(2, min(num_cameras, num_images // 2) + 1))
        visited = np.sort(generator.choice(np.arange(1, num_cameras + 1), num_visited, False))
        for frame_index in range(num_images):
            camera_ID = int(visited[frame_index % num_visited])
            variation = draw_image_variation(generator, **probabilities)
            if identity_ID <= num_train_identities:
                split_name = "train"
            elif frame_index < num_visited:
                split_name = "query"
            else:
                split_name = "gallery"
            num_images_per_split[split_name] += 1
            file_name = _image_file_name(identity_ID, camera_ID, frame_index)
            writer.write(split_name, file_name, traits, camera_ID, variation)
    return num_images_per_split


def _write_extras(writer: _ImageWriter, options: dict) -> None:
    """Writes the gallery's distractors (0000), strangers badly framed, and junk (-1) boxes
    that barely hold anyone: mostly scene, with a person cut off at the edge."""
    seed = options["seed"]
    probabilities = _nuisance_probabilities(options["difficulty"])
    extras = [(0, index) for index in range(options["num_distractor_images"])]
    extras += [(-1, index) for index in range(options["num_junk_images"])]
    for identity_ID, index in extras:
        generator = np.random.default_rng([seed, EXTRA_STREAM, identity_ID + 1, index])
        stranger_ID = STRANGER_ID_OFFSET + 2_000_000 + 10_000 * (identity_ID + 1) + index
        stranger = draw_identity_traits(seed, stranger_ID)
        variation = draw_image_variation(generator, **probabilities)
        offset = generator.uniform(0.15, 0.3) if identity_ID == 0 else generator.uniform(0.55, 0.7)
        variation = dataclasses.replace(
            variation, shift_x=float(generator.choice((-1, 1)) * offset)
        )
        camera_ID = int(generator.integers(1, options["num_cameras"] + 1))
        writer.write(
            "gallery",
            _image_file_name(identity_ID, camera_ID, index),
            stranger,
            camera_ID,
            variation,
        )


def _write_dataset(dataset_dir: str, options: dict) -> dict:
    """Draws every image into ``dataset_dir``; returns the expected counts per split."""
    writer = _ImageWriter(dataset_dir, options)
    num_images_per_split = _write_identities(writer, options)
    _write_extras(writer, options)
    num_train_identities = options["num_identities"] // 2
    num_test_identities = options["num_identities"] - num_train_identities
    return {
        "train": [num_images_per_split["train"], num_train_identities],
        "query": [num_images_per_split["query"], num_test_identities],
        "gallery": [
            num_images_per_split["gallery"] + options["num_distractor_images"],
            num_test_identities + (1 if options["num_distractor_images"] else 0),
        ],
    }


def _read_manifest(folder_path: str) -> dict | None:
    """The manifest of a generated folder, or None when there is none or it is unreadable."""
    try:
        with open(os.path.join(folder_path, SYNTHETIC_MANIFEST_FILE_NAME), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_generated_with(folder_path: str, options: dict) -> bool:
    manifest = _read_manifest(folder_path)
    return (
        manifest is not None
        and manifest.get("generator_version") == SYNTHETIC_GENERATOR_VERSION
        and manifest.get("parameters") == options
        and market1501.is_market1501_layout_folder(folder_path)
    )


def _find_dataset_dir(root_folder_path: str, options: dict) -> tuple[str, bool]:
    """Where the dataset of ``options`` is, or goes, under ``root_folder_path``.

    Returns:
        (folder, True) for a folder already generated with ``options`` (``root_folder_path``
        itself, or a folder named after the parameters, possibly with a ``_2``, ``_3``, ...
        suffix); else (the first such name that does not exist yet, False).

    Raises:
        FileExistsError: All 999 names are taken by other content.
    """
    if _is_generated_with(root_folder_path, options):
        return root_folder_path, True
    base_name = synthetic_folder_name(options)
    for attempt in range(1, 1000):
        dataset_dir = os.path.join(
            root_folder_path, base_name if attempt == 1 else f"{base_name}_{attempt}"
        )
        if _is_generated_with(dataset_dir, options):
            logging.info("Synthetic: reusing %s", dataset_dir)
            return dataset_dir, True
        if not os.path.exists(dataset_dir):
            return dataset_dir, False
        logging.warning(
            "Synthetic: %s exists but was not generated with these parameters; leaving it alone",
            dataset_dir,
        )
    raise FileExistsError(f"Synthetic: no free folder name for {base_name} in {root_folder_path}")


def _generate_into(dataset_dir: str, options: dict) -> str:
    """Writes the dataset and its manifest to a temporary folder renamed to ``dataset_dir``.

    Returns:
        ``dataset_dir``, also when another process finished the same dataset there first.
    """
    partial_dir = f"{dataset_dir}.partial-{uuid.uuid4().hex[:8]}"
    os.makedirs(partial_dir)
    try:
        counts = _write_dataset(partial_dir, options)
        manifest = {
            "generator": "datasets.synthetic",
            "generator_version": SYNTHETIC_GENERATOR_VERSION,
            "parameters": options,
            "counts": counts,
        }
        with open(
            os.path.join(partial_dir, SYNTHETIC_MANIFEST_FILE_NAME), "w", encoding="utf-8"
        ) as manifest_file:
            json.dump(manifest, manifest_file, indent=2, sort_keys=True)
        os.rename(partial_dir, dataset_dir)
    except BaseException:
        # Only our own temporary folder is removed; if another process finished the same
        # dataset first, the rename fails and its copy is used below.
        shutil.rmtree(partial_dir, ignore_errors=True)
        if _is_generated_with(dataset_dir, options):
            return dataset_dir
        raise
    logging.info("Synthetic: generated %s", dataset_dir)
    return dataset_dir


def generate_synthetic_dataset(
    root_folder_path: str,
    *,
    num_identities: int = SYNTHETIC_DEFAULT_OPTIONS["num_identities"],
    num_cameras: int = SYNTHETIC_DEFAULT_OPTIONS["num_cameras"],
    num_images_per_identity: int = SYNTHETIC_DEFAULT_OPTIONS["num_images_per_identity"],
    image_height: int = SYNTHETIC_DEFAULT_OPTIONS["image_height"],
    image_width: int = SYNTHETIC_DEFAULT_OPTIONS["image_width"],
    num_distractor_images: int = SYNTHETIC_DEFAULT_OPTIONS["num_distractor_images"],
    num_junk_images: int = SYNTHETIC_DEFAULT_OPTIONS["num_junk_images"],
    difficulty: float = SYNTHETIC_DEFAULT_OPTIONS["difficulty"],
    twin_fraction: float = SYNTHETIC_DEFAULT_OPTIONS["twin_fraction"],
    seed: int = SYNTHETIC_DEFAULT_OPTIONS["seed"],
) -> str:
    """Generates the Synthetic dataset under ``root_folder_path`` unless it is already there.

    The dataset goes to ``root_folder_path/<synthetic_folder_name(...)>``. A folder holding a
    ``manifest.json`` with the same parameters is reused (``root_folder_path`` itself too); a
    folder of that name with other content is left alone and ``..._2``, ``..._3``, ... is used.
    Images are written to a temporary folder renamed into place at the end, so an interrupted run
    never leaves a half-written dataset that looks complete.

    Args:
        root_folder_path: Cache folder (created if missing).
        num_identities: Identities in all; the first half (rounded down) are training
            identities, the rest test identities (disjoint).
        num_cameras: Cameras, each with its own background, colour cast, blur, noise, framing.
        num_images_per_identity: Images per identity (>= 4); a test identity gives one query
            image per camera it passes and the rest to the gallery.
        image_height: Image height in pixels.
        image_width: Image width in pixels.
        num_distractor_images: Gallery images of identity 0000 (distractors).
        num_junk_images: Gallery images of identity -1 (junk, dropped by the loader).
        difficulty: Nuisance strength in [0, 2]: per-camera scene clutter, colour cast,
            blur, noise, low resolution and JPEG loss, and the chance of an occluder or a
            passer-by in an image (20 % each at 1). 0 gives clean, neutral cameras.
        twin_fraction: Fraction in [0, 1] of identities drawn as look-alike pairs: identity
            2m copies 2m-1 except for one or two attributes.
        seed: Seed of every random draw.

    Returns:
        Absolute path of the dataset folder (Market-1501 layout).

    Raises:
        ValueError: A parameter is out of range.
    """
    options = {
        "num_identities": num_identities,
        "num_cameras": num_cameras,
        "num_images_per_identity": num_images_per_identity,
        "image_height": image_height,
        "image_width": image_width,
        "num_distractor_images": num_distractor_images,
        "num_junk_images": num_junk_images,
        "difficulty": difficulty,
        "twin_fraction": twin_fraction,
        "seed": seed,
    }
    _validate_options(options)
    options = _normalize_options(options)
    root_folder_path = os.path.abspath(os.path.expanduser(str(root_folder_path)))
    dataset_dir, is_generated = _find_dataset_dir(root_folder_path, options)
    if is_generated:
        return dataset_dir
    os.makedirs(root_folder_path, exist_ok=True)
    return _generate_into(dataset_dir, options)


def load_synthetic(
    root_folder_path: str, *, synthetic_options: dict | None = None, verify_images: bool = False
) -> records.ReIDDataset:
    """Generates the Synthetic dataset if needed under ``root_folder_path`` and loads it.

    Args:
        root_folder_path: Cache folder for generated datasets (or a generated folder itself).
        synthetic_options: Keyword arguments of ``generate_synthetic_dataset`` (sizes,
            difficulty, twin_fraction, seed);
            missing ones take ``SYNTHETIC_DEFAULT_OPTIONS``.
        verify_images: Decode every image and skip undecodable ones.

    Returns:
        The ReIDDataset named "Synthetic"; a difference from the counts in the manifest (a
        modified folder) is reported in its messages.

    Raises:
        ValueError: An unknown option or a value out of range.
    """
    synthetic_options = dict(synthetic_options or {})
    unknown = sorted(set(synthetic_options) - set(SYNTHETIC_DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(
            f"Unknown synthetic_options {unknown}; valid ones: {sorted(SYNTHETIC_DEFAULT_OPTIONS)}"
        )
    dataset_dir = generate_synthetic_dataset(root_folder_path, **synthetic_options)
    manifest = _read_manifest(dataset_dir) or {}
    published_counts = {
        split_name: records.PublishedCounts(num_images=counts[0], num_identities=counts[1])
        for split_name, counts in manifest.get("counts", {}).items()
    }
    return market1501.load_market1501_layout(
        dataset_dir,
        dataset_name="Synthetic",
        published_counts=published_counts,
        counts_source=f"{SYNTHETIC_MANIFEST_FILE_NAME} of the generated folder",
        verify_images=verify_images,
    )
