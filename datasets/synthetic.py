"""A procedurally drawn person re-identification dataset ("Synthetic"), for demos and tests.

Every identity has fixed traits (clothing colours drawn from small palettes so that many people
share some of them, a clothing pattern, hair and skin tones, body proportions, an optional bag or
backpack worn on one side). Every camera has its own nuisances (background, illumination, white
balance, blur, noise, scale and framing). Every image varies on its own (leg and arm positions,
shift and scale, sometimes a partial occlusion, sometimes mirrored). The result is written in the
Market-1501 layout and naming, including distractors (identity 0000) and junk (-1) in the
gallery, so it exercises the same loader rules as the real data.

Generation is deterministic: every random draw comes from a numpy Generator seeded by
``(seed, stream, index)``, so an identity's traits do not depend on how many identities are
drawn. A generated folder holds ``manifest.json`` with the parameters and is reused when asked
for again with the same parameters; other parameters go to another folder (nothing is deleted).
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

SYNTHETIC_GENERATOR_VERSION = 1
SYNTHETIC_MANIFEST_FILE_NAME = "manifest.json"
SYNTHETIC_DEFAULT_OPTIONS = {
    "num_identities": 200,
    "num_cameras": 4,
    "num_images_per_identity": 12,
    "image_height": 128,
    "image_width": 64,
    "num_distractor_images": 20,
    "num_junk_images": 10,
    "seed": 0,
}

# Small palettes (BGR) on purpose: with 200 identities many share a colour, so a model must
# combine several cues. Colours are spread so that camera colour casts do not merge them all.
_UPPER_COLOURS = (
    (40, 40, 200),
    (120, 40, 20),
    (235, 235, 235),
    (30, 30, 30),
    (128, 128, 128),
    (50, 140, 40),
    (40, 200, 220),
    (210, 160, 90),
)
_LOWER_COLOURS = (
    (25, 25, 25),
    (110, 60, 30),
    (120, 120, 120),
    (140, 180, 200),
    (30, 60, 100),
    (220, 220, 220),
)
_HAIR_COLOURS = ((20, 20, 20), (30, 50, 80), (90, 170, 210), (170, 170, 170))
_SKIN_COLOURS = ((160, 190, 230), (120, 160, 210), (80, 120, 170), (50, 80, 120))
_SHOE_COLOURS = ((20, 20, 20), (230, 230, 230), (40, 60, 120))
_ACCESSORY_COLOURS = ((20, 20, 20), (40, 40, 160), (110, 80, 50), (60, 120, 60))
UPPER_PATTERNS = ("solid", "horizontal_stripes", "vertical_stripes", "checks")
ACCESSORIES = ("none", "bag", "backpack")
BACKGROUND_TEXTURES = ("gradient", "tiles", "stripes")

# Seed streams, so that identity, camera, image and distractor draws never share a sequence.
_IDENTITY_STREAM, _CAMERA_STREAM, _IMAGE_STREAM, _EXTRA_STREAM = 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class IdentityTraits:
    """The fixed appearance of one synthetic person (colours are BGR uint8 triples)."""

    upper_colour: tuple[int, int, int]
    upper_pattern: str
    pattern_colour: tuple[int, int, int]
    lower_colour: tuple[int, int, int]
    hair_colour: tuple[int, int, int]
    skin_colour: tuple[int, int, int]
    shoe_colour: tuple[int, int, int]
    height_fraction: float
    width_fraction: float
    leg_fraction: float
    accessory: str
    accessory_side: int
    accessory_colour: tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class CameraConditions:
    """The nuisances of one synthetic camera."""

    background_colour: tuple[int, int, int]
    texture_colour: tuple[int, int, int]
    background_texture: str
    horizon_fraction: float
    illumination_gain: float
    white_balance: tuple[float, float, float]
    blur_sigma: float
    noise_std: float
    scale: float
    vertical_offset: float


@dataclasses.dataclass(frozen=True)
class ImageVariation:
    """Per-image variation: pose, framing, occlusion, mirroring and the noise seed."""

    leg_phase: float
    arm_phase: float
    shift_x: float
    shift_y: float
    scale: float
    occlusion: tuple[float, float, float, float] | None
    occlusion_colour: tuple[int, int, int]
    mirror: bool
    noise_seed: int


def _pick(generator: np.random.Generator, palette):
    return palette[int(generator.integers(len(palette)))]


def draw_identity_traits(seed: int, identity_ID: int) -> IdentityTraits:
    """Draws the traits of one identity; the same (seed, identity_ID) always gives the same ones.

    Args:
        seed: Dataset seed.
        identity_ID: Identity number (>= 0); distractors use a separate stream.

    Returns:
        The identity's traits.
    """
    generator = np.random.default_rng([seed, _IDENTITY_STREAM, identity_ID])
    upper_colour = _pick(generator, _UPPER_COLOURS)
    pattern_colour = _pick(generator, [c for c in _UPPER_COLOURS if c != upper_colour])
    return IdentityTraits(
        upper_colour=upper_colour,
        upper_pattern=str(generator.choice(UPPER_PATTERNS, p=(0.4, 0.2, 0.2, 0.2))),
        pattern_colour=pattern_colour,
        lower_colour=_pick(generator, _LOWER_COLOURS),
        hair_colour=_pick(generator, _HAIR_COLOURS),
        skin_colour=_pick(generator, _SKIN_COLOURS),
        shoe_colour=_pick(generator, _SHOE_COLOURS),
        height_fraction=float(generator.uniform(0.78, 0.94)),
        width_fraction=float(generator.uniform(0.30, 0.46)),
        leg_fraction=float(generator.uniform(0.40, 0.52)),
        accessory=str(generator.choice(ACCESSORIES, p=(0.5, 0.25, 0.25))),
        accessory_side=int(generator.choice((-1, 1))),
        accessory_colour=_pick(generator, _ACCESSORY_COLOURS),
    )


def draw_camera_conditions(seed: int, camera_ID: int) -> CameraConditions:
    """Draws the nuisances of one camera; deterministic in (seed, camera_ID)."""
    generator = np.random.default_rng([seed, _CAMERA_STREAM, camera_ID])
    background_colour = tuple(int(v) for v in generator.integers(60, 200, size=3))
    texture_colour = tuple(
        int(np.clip(v + generator.integers(-50, 50), 0, 255)) for v in background_colour
    )
    return CameraConditions(
        background_colour=background_colour,
        texture_colour=texture_colour,
        background_texture=str(generator.choice(BACKGROUND_TEXTURES)),
        horizon_fraction=float(generator.uniform(0.55, 0.85)),
        illumination_gain=float(generator.uniform(0.7, 1.25)),
        white_balance=tuple(float(v) for v in generator.uniform(0.85, 1.15, size=3)),
        blur_sigma=float(generator.uniform(0.0, 1.2)),
        noise_std=float(generator.uniform(2.0, 8.0)),
        scale=float(generator.uniform(0.88, 1.05)),
        vertical_offset=float(generator.uniform(-0.04, 0.04)),
    )


def draw_image_variation(
    generator: np.random.Generator, *, occlusion_probability: float = 0.15
) -> ImageVariation:
    """Draws one image's pose, framing, occlusion and mirroring from ``generator``."""
    occlusion = None
    if generator.random() < occlusion_probability:
        # A rectangle entering from the bottom or a side, covering up to about a third.
        side = int(generator.integers(3))
        extent = float(generator.uniform(0.2, 0.4))
        occlusion = {
            0: (0.0, 1.0 - extent, 1.0, 1.0),
            1: (0.0, 0.3, extent, 1.0),
            2: (1.0 - extent, 0.3, 1.0, 1.0),
        }[side]
    return ImageVariation(
        leg_phase=float(generator.uniform(-1.0, 1.0)),
        arm_phase=float(generator.uniform(-1.0, 1.0)),
        shift_x=float(generator.uniform(-0.06, 0.06)),
        shift_y=float(generator.uniform(-0.03, 0.03)),
        scale=float(generator.uniform(0.93, 1.07)),
        occlusion=occlusion,
        occlusion_colour=tuple(int(v) for v in generator.integers(0, 256, size=3)),
        mirror=bool(generator.random() < 0.5),
        noise_seed=int(generator.integers(2**31)),
    )


def _draw_background(camera: CameraConditions, image_height: int, image_width: int) -> np.ndarray:
    """Fills an (H, W, 3) uint8 canvas with the camera's wall, floor and texture."""
    image = np.empty((image_height, image_width, 3), dtype=np.uint8)
    image[:] = camera.background_colour
    horizon_y = int(camera.horizon_fraction * image_height)
    image[horizon_y:] = camera.texture_colour
    rows = np.arange(image_height)[:, None]
    columns = np.arange(image_width)[None, :]
    if camera.background_texture == "gradient":
        ramp = np.linspace(0.8, 1.15, image_height, dtype=np.float32)[:, None, None]
        image = np.clip(image.astype(np.float32) * ramp, 0, 255).astype(np.uint8)
    elif camera.background_texture == "tiles":
        cell = max(4, image_width // 6)
        mask = ((rows // cell + columns // cell) % 2 == 0) & (rows >= horizon_y)
        image[mask] = camera.background_colour
    else:
        period = max(4, image_width // 5)
        mask = ((columns // period) % 2 == 0) & (rows < horizon_y)
        image[np.broadcast_to(mask, (image_height, image_width))] = camera.texture_colour
    return image


def _fill_patterned_rectangle(
    image: np.ndarray, top_left, bottom_right, traits: IdentityTraits
) -> None:
    """Paints the torso rectangle with the identity's upper colour and pattern, in place."""
    x0, y0 = (int(round(v)) for v in top_left)
    x1, y1 = (int(round(v)) for v in bottom_right)
    clipped_x0, clipped_y0 = max(x0, 0), max(y0, 0)
    clipped_x1, clipped_y1 = min(x1, image.shape[1]), min(y1, image.shape[0])
    if clipped_x1 <= clipped_x0 or clipped_y1 <= clipped_y0:
        return
    region = image[clipped_y0:clipped_y1, clipped_x0:clipped_x1]
    region[:] = traits.upper_colour
    rows = np.arange(clipped_y0, clipped_y1)[:, None] - y0
    columns = np.arange(clipped_x0, clipped_x1)[None, :] - x0
    period = max(2, (y1 - y0) // 6)
    horizontal = (rows // period) % 2 == 1
    vertical = (columns // max(2, (x1 - x0) // 4)) % 2 == 1
    if traits.upper_pattern == "horizontal_stripes":
        mask = np.broadcast_to(horizontal, region.shape[:2])
    elif traits.upper_pattern == "vertical_stripes":
        mask = np.broadcast_to(vertical, region.shape[:2])
    elif traits.upper_pattern == "checks":
        mask = horizontal ^ vertical
    else:
        return
    region[mask] = traits.pattern_colour


@dataclasses.dataclass(frozen=True)
class BodyLayout:
    """Where the body parts of one image lie, in pixels, before mirroring."""

    centre_x: float
    body_height: float
    head_radius: float
    neck_y: float
    hip_y: float
    foot_y: float
    torso_width: float

    @property
    def torso_box(self) -> tuple[float, float, float, float]:
        """The torso rectangle (x0, y0, x1, y1)."""
        half_width = self.torso_width / 2
        return (self.centre_x - half_width, self.neck_y, self.centre_x + half_width, self.hip_y)


def compute_body_layout(
    traits: IdentityTraits,
    camera: CameraConditions,
    variation: ImageVariation,
    image_height: int,
    image_width: int,
) -> BodyLayout:
    """Places the body: proportions from the traits, scale and framing from camera and image."""
    scale = camera.scale * variation.scale
    body_height = traits.height_fraction * image_height * scale
    top = (image_height - body_height) / 2 + (
        variation.shift_y + camera.vertical_offset
    ) * image_height
    head_radius = body_height * 0.07
    return BodyLayout(
        centre_x=image_width / 2 + variation.shift_x * image_width,
        body_height=body_height,
        head_radius=head_radius,
        neck_y=top + 2 * head_radius,
        hip_y=top + body_height * (1 - traits.leg_fraction),
        foot_y=top + body_height,
        torso_width=traits.width_fraction * image_width * scale,
    )


def render_image(
    traits: IdentityTraits,
    camera: CameraConditions,
    variation: ImageVariation,
    image_height: int,
    image_width: int,
) -> np.ndarray:
    """Draws one image of a person seen by a camera.

    Args:
        traits: The person's appearance.
        camera: The camera's nuisances.
        variation: This image's pose, framing, occlusion, mirroring and noise seed.
        image_height: Output height in pixels.
        image_width: Output width in pixels.

    Returns:
        uint8 BGR image of shape (image_height, image_width, 3).
    """
    image = _draw_background(camera, image_height, image_width)
    layout = compute_body_layout(traits, camera, variation, image_height, image_width)
    x0, neck_y, x1, hip_y = layout.torso_box
    centre_x, torso_width = layout.centre_x, layout.torso_width
    body_height, head_radius, foot_y = layout.body_height, layout.head_radius, layout.foot_y
    head_centre_y = neck_y - head_radius
    leg_length = foot_y - hip_y

    def point(x, y):
        return int(round(x)), int(round(y))

    line = cv2.LINE_AA
    if traits.accessory == "backpack":
        # Seen from the front, a backpack shows as a band beside the torso and two straps.
        side_x = centre_x + traits.accessory_side * torso_width * 0.42
        cv2.rectangle(
            image,
            point(side_x - torso_width * 0.22, neck_y + head_radius * 0.5),
            point(side_x + torso_width * 0.22, hip_y - head_radius),
            traits.accessory_colour,
            -1,
            line,
        )
    limb_thickness = max(2, int(round(torso_width * 0.24)))
    for leg_side in (-1, 1):
        hip = point(centre_x + leg_side * torso_width * 0.22, hip_y)
        foot_x = (
            centre_x
            + leg_side * torso_width * 0.22
            + leg_side * variation.leg_phase * leg_length * 0.22
        )
        cv2.line(image, hip, point(foot_x, foot_y), traits.lower_colour, limb_thickness + 1, line)
        cv2.ellipse(
            image,
            point(foot_x + leg_side * limb_thickness * 0.3, foot_y),
            (max(1, limb_thickness // 2 + 1), max(1, limb_thickness // 3)),
            0,
            0,
            360,
            traits.shoe_colour,
            -1,
            line,
        )
    _fill_patterned_rectangle(image, (x0, neck_y), (x1, hip_y), traits)
    for arm_side in (-1, 1):
        shoulder = point(centre_x + arm_side * torso_width * 0.5, neck_y + limb_thickness * 0.5)
        hand_x = (
            centre_x
            + arm_side * torso_width * 0.62
            + arm_side * variation.arm_phase * body_height * 0.06
        )
        hand = point(hand_x, hip_y + leg_length * 0.1)
        cv2.line(image, shoulder, hand, traits.upper_colour, limb_thickness, line)
        cv2.circle(image, hand, max(1, limb_thickness // 2), traits.skin_colour, -1, line)
    if traits.accessory == "backpack":
        for strap_side in (-1, 1):
            strap_x = centre_x + strap_side * torso_width * 0.28
            cv2.line(
                image,
                point(strap_x, neck_y),
                point(strap_x, neck_y + (hip_y - neck_y) * 0.6),
                traits.accessory_colour,
                max(1, limb_thickness // 3),
                line,
            )
    elif traits.accessory == "bag":
        bag_x = centre_x + traits.accessory_side * torso_width * 0.62
        cv2.line(
            image,
            point(centre_x - traits.accessory_side * torso_width * 0.4, neck_y),
            point(bag_x, hip_y),
            traits.accessory_colour,
            max(1, limb_thickness // 3),
            line,
        )
        cv2.rectangle(
            image,
            point(bag_x - torso_width * 0.22, hip_y - head_radius * 0.5),
            point(bag_x + torso_width * 0.22, hip_y + head_radius * 1.8),
            traits.accessory_colour,
            -1,
            line,
        )
    head_centre = point(centre_x, head_centre_y)
    axes = (max(1, int(round(head_radius * 0.85))), max(1, int(round(head_radius))))
    cv2.ellipse(image, head_centre, axes, 0, 0, 360, traits.skin_colour, -1, line)
    cv2.ellipse(image, head_centre, axes, 0, 180, 360, traits.hair_colour, -1, line)

    if variation.occlusion is not None:
        ox0, oy0, ox1, oy1 = variation.occlusion
        cv2.rectangle(
            image,
            point(ox0 * image_width, oy0 * image_height),
            point(ox1 * image_width, oy1 * image_height),
            variation.occlusion_colour,
            -1,
        )

    pixels = image.astype(np.float32)
    pixels *= camera.illumination_gain * np.asarray(camera.white_balance, dtype=np.float32)
    if camera.blur_sigma > 0.3:
        pixels = cv2.GaussianBlur(pixels, (0, 0), camera.blur_sigma)
    noise_generator = np.random.default_rng(variation.noise_seed)
    pixels += noise_generator.normal(0.0, camera.noise_std, size=pixels.shape).astype(np.float32)
    image = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if variation.mirror:
        image = np.ascontiguousarray(image[:, ::-1])
    return image


def _validate_options(options: dict) -> None:
    """Checks the generation parameters; repeats the received values in the error."""
    limits = {
        "num_identities": (4, 9999),
        "num_cameras": (2, 99),
        "num_images_per_identity": (4, 999_999),
        "image_height": (32, 4096),
        "image_width": (16, 4096),
        "num_distractor_images": (0, 999_999),
        "num_junk_images": (0, 999_999),
    }
    for name, (low, high) in limits.items():
        value = options[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or not (low <= value <= high)
        ):
            raise ValueError(
                f"Synthetic: {name} must be an integer in [{low}, {high}]; got {value!r}"
            )
    if isinstance(options["seed"], bool) or not isinstance(options["seed"], (int, np.integer)):
        raise ValueError(f"Synthetic: seed must be an integer; got {options['seed']!r}")


def synthetic_folder_name(options: dict) -> str:
    """Names the folder of a generated dataset after its parameters, e.g.
    "Synthetic_ids200_cams4_imgs12_128x64_dis20_junk10_seed0_v1"."""
    return (
        f"Synthetic_ids{options['num_identities']}_cams{options['num_cameras']}"
        f"_imgs{options['num_images_per_identity']}"
        f"_{options['image_height']}x{options['image_width']}"
        f"_dis{options['num_distractor_images']}_junk{options['num_junk_images']}"
        f"_seed{options['seed']}_v{SYNTHETIC_GENERATOR_VERSION}"
    )


def _image_file_name(identity_ID: int, camera_ID: int, frame_index: int) -> str:
    identity = "-1" if identity_ID < 0 else f"{identity_ID:04d}"
    return f"{identity}_c{camera_ID}s1_{frame_index:06d}_00.jpg"


def _write_jpeg(image_file_path: str, image: np.ndarray) -> None:
    success, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not success:
        raise OSError(f"OpenCV could not encode {image_file_path!r}")
    encoded.tofile(image_file_path)


def _write_dataset(dataset_dir: str, options: dict) -> dict:
    """Draws every image into ``dataset_dir``; returns the expected counts per split."""
    seed = options["seed"]
    num_cameras = options["num_cameras"]
    num_images = options["num_images_per_identity"]
    image_height, image_width = options["image_height"], options["image_width"]
    split_dirs = {
        split_name: os.path.join(dataset_dir, folder_name)
        for split_name, folder_name in market1501.MARKET1501_SPLIT_FOLDER_NAMES.items()
    }
    for split_dir in split_dirs.values():
        os.makedirs(split_dir)
    cameras = {
        camera_ID: draw_camera_conditions(seed, camera_ID)
        for camera_ID in range(1, num_cameras + 1)
    }
    num_train_identities = options["num_identities"] // 2
    num_images_per_split = {"train": 0, "query": 0, "gallery": 0}
    for identity_ID in range(1, options["num_identities"] + 1):
        traits = draw_identity_traits(seed, identity_ID)
        generator = np.random.default_rng([seed, _IMAGE_STREAM, identity_ID])
        # Each person passes a few cameras; at least two images per camera, so that every query
        # (one per camera) has true matches in other cameras.
        num_visited = int(generator.integers(2, min(num_cameras, num_images // 2) + 1))
        visited = np.sort(generator.choice(np.arange(1, num_cameras + 1), num_visited, False))
        for frame_index in range(num_images):
            camera_ID = int(visited[frame_index % num_visited])
            variation = draw_image_variation(generator)
            image = render_image(traits, cameras[camera_ID], variation, image_height, image_width)
            if identity_ID <= num_train_identities:
                split_name = "train"
            elif frame_index < num_visited:
                split_name = "query"
            else:
                split_name = "gallery"
            num_images_per_split[split_name] += 1
            file_name = _image_file_name(identity_ID, camera_ID, frame_index)
            _write_jpeg(os.path.join(split_dirs[split_name], file_name), image)
    # Distractors (0000) are badly framed strangers; junk (-1) barely shows anyone. Both are
    # drawn from people who are not in the dataset.
    extras = [(0, index) for index in range(options["num_distractor_images"])]
    extras += [(-1, index) for index in range(options["num_junk_images"])]
    for identity_ID, index in extras:
        generator = np.random.default_rng([seed, _EXTRA_STREAM, identity_ID + 1, index])
        stranger = draw_identity_traits(seed, 100_000 + 1000 * (identity_ID + 1) + index)
        variation = draw_image_variation(generator)
        offset = 0.3 if identity_ID == 0 else 0.6
        variation = dataclasses.replace(
            variation, shift_x=float(generator.choice((-1, 1)) * offset)
        )
        camera_ID = int(generator.integers(1, num_cameras + 1))
        image = render_image(stranger, cameras[camera_ID], variation, image_height, image_width)
        file_name = _image_file_name(identity_ID, camera_ID, index)
        _write_jpeg(os.path.join(split_dirs["gallery"], file_name), image)
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
        "seed": seed,
    }
    _validate_options(options)
    options = {name: int(value) for name, value in options.items()}
    root_folder_path = os.path.abspath(os.path.expanduser(str(root_folder_path)))
    if _is_generated_with(root_folder_path, options):
        return root_folder_path
    base_name = synthetic_folder_name(options)
    for attempt in range(1, 1000):
        dataset_dir = os.path.join(
            root_folder_path, base_name if attempt == 1 else f"{base_name}_{attempt}"
        )
        if _is_generated_with(dataset_dir, options):
            logging.info("Synthetic: reusing %s", dataset_dir)
            return dataset_dir
        if not os.path.exists(dataset_dir):
            break
        logging.warning(
            "Synthetic: %s exists but was not generated with these parameters; leaving it alone",
            dataset_dir,
        )
    else:
        raise FileExistsError(
            f"Synthetic: no free folder name for {base_name} in {root_folder_path}"
        )

    os.makedirs(root_folder_path, exist_ok=True)
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


def load_synthetic(
    root_folder_path: str, *, synthetic_options: dict | None = None, verify_images: bool = False
) -> records.ReIDDataset:
    """Generates the Synthetic dataset if needed under ``root_folder_path`` and loads it.

    Args:
        root_folder_path: Cache folder for generated datasets (or a generated folder itself).
        synthetic_options: Keyword arguments of ``generate_synthetic_dataset`` (sizes, seed);
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
