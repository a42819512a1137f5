"""Paints Synthetic images: a camera's scene, a person from body parts, nuisances on top.

A person is drawn from parts (head with hair and an optional hat, torso with a clothing pattern,
arms with long or short sleeves, trousers, shorts or a skirt, shoes, an optional backpack,
shoulder bag or handbag) in front of the camera's scene, possibly behind an occluder or next to
a partly visible passer-by. The camera then casts its colours, washes them out, lowers the
resolution, blurs and adds noise. Pure NumPy and OpenCV; colours are BGR.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import cv2
import numpy as np

from datasets.synthetic_appearance import (
    CameraConditions,
    IdentityTraits,
    ImageVariation,
    draw_identity_traits,
)

# The camera's scene is drawn this much larger than an image; each image shows a random part.
_BACKGROUND_MARGIN = (1.3, 2.0)
_LINE = cv2.LINE_AA


def render_camera_background(
    camera: CameraConditions, image_height: int, image_width: int
) -> np.ndarray:
    """Draws the camera's scene: wall, floor, and clutter (windows, posters, pillars, tiles).

    Args:
        camera: The camera.
        image_height: Image height in pixels.
        image_width: Image width in pixels.

    Returns:
        uint8 BGR array, larger than one image by ``_BACKGROUND_MARGIN`` on each side.
    """
    height = int(image_height * _BACKGROUND_MARGIN[0])
    width = int(image_width * _BACKGROUND_MARGIN[1])
    generator = np.random.default_rng(camera.clutter_seed)
    scene = np.empty((height, width, 3), np.uint8)
    horizon_y = int(camera.horizon_fraction * height)
    scene[:horizon_y] = camera.wall_colour
    scene[horizon_y:] = camera.floor_colour
    # Floor tiles: a second floor shade in a checkerboard.
    cell = max(4, width // int(generator.integers(4, 9)))
    rows, columns = np.mgrid[horizon_y:height, 0:width]
    tiles = ((rows // max(2, cell // 2) + columns // cell) % 2 == 0)[..., None]
    floor_shade = np.clip(np.asarray(camera.floor_colour) * generator.uniform(0.75, 1.2), 0, 255)
    scene[horizon_y:] = np.where(tiles, floor_shade.astype(np.uint8), scene[horizon_y:])
    num_objects = int(round(12 * camera.clutter_strength)) + 1
    for _ in range(num_objects):
        colour = tuple(int(v) for v in generator.integers(0, 256, size=3))
        kind = int(generator.integers(3))
        if kind == 0:  # a window or poster on the wall
            object_width = generator.uniform(0.1, 0.35) * width
            object_height = generator.uniform(0.1, 0.4) * height
            x0 = generator.uniform(0, width - object_width)
            y0 = generator.uniform(0, max(1.0, horizon_y - object_height))
            cv2.rectangle(
                scene,
                (int(x0), int(y0)),
                (int(x0 + object_width), int(y0 + object_height)),
                colour,
                -1,
            )
            frame = tuple(int(v * 0.5) for v in colour)
            cv2.rectangle(
                scene,
                (int(x0), int(y0)),
                (int(x0 + object_width), int(y0 + object_height)),
                frame,
                2,
            )
        elif kind == 1:  # a pillar
            x0 = generator.uniform(0, width)
            pillar_width = generator.uniform(0.04, 0.12) * width
            cv2.rectangle(scene, (int(x0), 0), (int(x0 + pillar_width), height), colour, -1)
        else:  # a plant or bin standing on the floor
            centre = (int(generator.uniform(0, width)), int(horizon_y + generator.uniform(0, 8)))
            axes = (
                int(generator.uniform(0.04, 0.1) * width),
                int(generator.uniform(0.08, 0.2) * height),
            )
            cv2.ellipse(scene, centre, axes, 0, 0, 360, colour, -1, _LINE)
    return scene


@dataclasses.dataclass(frozen=True)
class BodyLayout:
    """Where the body parts of one person lie, in pixels, before mirroring."""

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
    *,
    centre_offset: float = 0.0,
) -> BodyLayout:
    """Places the body: proportions from the traits, scale and framing from camera and image.

    Args:
        traits: The person.
        camera: The camera (box tightness and vertical bias).
        variation: The image (shift and scale jitter).
        image_height: Image height in pixels.
        image_width: Image width in pixels.
        centre_offset: Extra horizontal offset as a fraction of the width (passers-by).

    Returns:
        The layout in pixels.
    """
    scale = camera.scale * variation.scale
    body_height = traits.height_fraction * image_height * scale
    top = (image_height - body_height) / 2 + (
        variation.shift_y + camera.vertical_offset
    ) * image_height
    head_radius = body_height * 0.075
    return BodyLayout(
        centre_x=image_width * (0.5 + variation.shift_x + centre_offset),
        body_height=body_height,
        head_radius=head_radius,
        neck_y=top + 2 * head_radius,
        hip_y=top + body_height * (1 - traits.leg_fraction),
        foot_y=top + body_height,
        torso_width=traits.width_fraction * image_width * scale,
    )


def _point(x: float, y: float) -> tuple[int, int]:
    return int(round(x)), int(round(y))


def _fill_torso(image: np.ndarray, layout: BodyLayout, traits: IdentityTraits, back: bool) -> None:
    """Paints the torso rectangle with the clothing colour and pattern, in place."""
    x0, y0, x1, y1 = (int(round(v)) for v in layout.torso_box)
    clipped_x0, clipped_y0 = max(x0, 0), max(y0, 0)
    clipped_x1, clipped_y1 = min(x1, image.shape[1]), min(y1, image.shape[0])
    if clipped_x1 <= clipped_x0 or clipped_y1 <= clipped_y0:
        return
    region = image[clipped_y0:clipped_y1, clipped_x0:clipped_x1]
    region[:] = traits.upper_colour
    rows = np.arange(clipped_y0, clipped_y1)[:, None] - y0
    columns = np.arange(clipped_x0, clipped_x1)[None, :] - x0
    height, width = max(1, y1 - y0), max(1, x1 - x0)
    horizontal = (rows // max(2, height // 6)) % 2 == 1
    vertical = (columns // max(2, width // 4)) % 2 == 1
    pattern = traits.upper_pattern
    if pattern == "horizontal_stripes":
        mask = np.broadcast_to(horizontal, region.shape[:2])
    elif pattern == "vertical_stripes":
        mask = np.broadcast_to(vertical, region.shape[:2])
    elif pattern == "checks":
        mask = horizontal ^ vertical
    elif pattern == "two_tone":
        mask = np.broadcast_to(rows >= height // 2, region.shape[:2])
    elif pattern == "logo" and not back:
        # A print on the chest, seen from the front only.
        mask = (
            (rows >= height // 5)
            & (rows < height // 2)
            & (columns >= width // 4)
            & (columns < width - width // 4)
        )
    else:
        return
    region[mask] = traits.pattern_colour


@dataclasses.dataclass(frozen=True)
class _Figure:
    """The pixel geometry of one person that the drawing stages share, before mirroring."""

    x0: float
    x1: float
    neck_y: float
    hip_y: float
    foot_y: float
    centre_x: float
    torso_width: float
    head_radius: float
    body_height: float
    leg_length: float
    limb: int
    head_centre: tuple[int, int]
    head_axes: tuple[int, int]
    back: bool
    leg_phase: float
    arm_phase: float

    @classmethod
    def of(cls, layout: BodyLayout, variation: ImageVariation) -> _Figure:
        """The figure of ``layout`` in the pose and view of ``variation``."""
        x0, neck_y, x1, hip_y = layout.torso_box
        head_radius = layout.head_radius
        return cls(
            x0=x0,
            x1=x1,
            neck_y=neck_y,
            hip_y=hip_y,
            foot_y=layout.foot_y,
            centre_x=layout.centre_x,
            torso_width=layout.torso_width,
            head_radius=head_radius,
            body_height=layout.body_height,
            leg_length=layout.foot_y - hip_y,
            limb=max(2, int(round(layout.torso_width * 0.25))),
            head_centre=_point(layout.centre_x, neck_y - head_radius),
            head_axes=(max(1, int(round(head_radius * 0.85))), max(1, int(round(head_radius)))),
            back=variation.facing_back,
            leg_phase=variation.leg_phase,
            arm_phase=variation.arm_phase,
        )


def _draw_behind_body(image: np.ndarray, traits: IdentityTraits, figure: _Figure) -> None:
    """Paints what lies behind the body: long hair, and a backpack seen from the front."""
    if traits.hair_style == "long":
        # Long hair falls behind the shoulders.
        cv2.rectangle(
            image,
            _point(figure.centre_x - figure.head_radius * 0.9, figure.neck_y - figure.head_radius),
            _point(
                figure.centre_x + figure.head_radius * 0.9, figure.neck_y + figure.head_radius * 1.6
            ),
            traits.hair_colour,
            -1,
        )
    if traits.bag == "backpack" and not figure.back:
        # From the front a backpack shows beside the torso.
        side_x = figure.centre_x + traits.bag_side * figure.torso_width * 0.45
        cv2.rectangle(
            image,
            _point(side_x - figure.torso_width * 0.2, figure.neck_y + figure.head_radius * 0.5),
            _point(side_x + figure.torso_width * 0.2, figure.hip_y - figure.head_radius),
            traits.bag_colour,
            -1,
        )


def _draw_legs(image: np.ndarray, traits: IdentityTraits, figure: _Figure) -> None:
    """Paints both legs and shoes: trousers all the way down, shorts and skirts show skin."""
    centre_x, torso_width, limb = figure.centre_x, figure.torso_width, figure.limb
    hip_y, foot_y, leg_length = figure.hip_y, figure.foot_y, figure.leg_length
    for side in (-1, 1):
        hip = _point(centre_x + side * torso_width * 0.22, hip_y)
        foot_x = centre_x + side * torso_width * 0.22 + side * figure.leg_phase * leg_length * 0.2
        foot = _point(foot_x, foot_y)
        if traits.lower_type == "trousers":
            cv2.line(image, hip, foot, traits.lower_colour, limb + 1, _LINE)
        else:
            knee = _point((hip[0] + foot[0]) / 2, hip_y + leg_length * 0.45)
            cv2.line(image, hip, foot, traits.skin_colour, max(2, limb - 1), _LINE)
            if traits.lower_type == "shorts":
                cv2.line(image, hip, knee, traits.lower_colour, limb + 1, _LINE)
        shoe_axes = (max(1, limb // 2 + 1), max(1, limb // 3))
        cv2.ellipse(
            image,
            _point(foot_x + side * limb * 0.3, foot_y),
            shoe_axes,
            0,
            0,
            360,
            traits.shoe_colour,
            -1,
            _LINE,
        )


def _draw_lower_garment(image: np.ndarray, traits: IdentityTraits, figure: _Figure) -> None:
    """Paints the skirt, or the waist of the shorts or trousers, below the torso."""
    x0, x1, hip_y = figure.x0, figure.x1, figure.hip_y
    torso_width, leg_length = figure.torso_width, figure.leg_length
    if traits.lower_type == "skirt":
        skirt = np.array(
            [
                _point(x0 + torso_width * 0.05, hip_y - 1),
                _point(x1 - torso_width * 0.05, hip_y - 1),
                _point(x1 + torso_width * 0.15, hip_y + leg_length * 0.5),
                _point(x0 - torso_width * 0.15, hip_y + leg_length * 0.5),
            ],
            np.int32,
        )
        cv2.fillConvexPoly(image, skirt, traits.lower_colour, _LINE)
        return
    waist_depth = 0.15 if traits.lower_type == "shorts" else 0.1
    cv2.rectangle(
        image,
        _point(x0 + torso_width * 0.05, hip_y - 1),
        _point(x1 - torso_width * 0.05, hip_y + leg_length * waist_depth),
        traits.lower_colour,
        -1,
    )


def _draw_arms(image: np.ndarray, traits: IdentityTraits, figure: _Figure) -> None:
    """Paints both arms: sleeves in the clothing colour; short sleeves leave the forearm bare."""
    centre_x, torso_width, limb = figure.centre_x, figure.torso_width, figure.limb
    for side in (-1, 1):
        shoulder = (centre_x + side * torso_width * 0.5, figure.neck_y + limb * 0.5)
        hand = (
            centre_x
            + side * torso_width * 0.62
            + side * figure.arm_phase * figure.body_height * 0.06,
            figure.hip_y + figure.leg_length * 0.1,
        )
        elbow = ((shoulder[0] + hand[0]) / 2, (shoulder[1] + hand[1]) / 2)
        if traits.sleeves == "long":
            cv2.line(image, _point(*shoulder), _point(*hand), traits.upper_colour, limb, _LINE)
        else:
            cv2.line(
                image, _point(*elbow), _point(*hand), traits.skin_colour, max(2, limb - 1), _LINE
            )
            cv2.line(image, _point(*shoulder), _point(*elbow), traits.upper_colour, limb, _LINE)
        cv2.circle(image, _point(*hand), max(1, limb // 2), traits.skin_colour, -1, _LINE)


def _draw_backpack(image: np.ndarray, traits: IdentityTraits, figure: _Figure) -> None:
    """Paints the backpack over the torso from the back, its straps from the front."""
    if figure.back:
        cv2.rectangle(
            image,
            _point(figure.x0 + figure.torso_width * 0.12, figure.neck_y + figure.head_radius * 0.4),
            _point(figure.x1 - figure.torso_width * 0.12, figure.hip_y - figure.head_radius * 0.2),
            traits.bag_colour,
            -1,
        )
        return
    for side in (-1, 1):
        strap_x = figure.centre_x + side * figure.torso_width * 0.28
        cv2.line(
            image,
            _point(strap_x, figure.neck_y),
            _point(strap_x, figure.neck_y + (figure.hip_y - figure.neck_y) * 0.6),
            traits.bag_colour,
            max(1, figure.limb // 3),
        )


def _draw_shoulder_bag(image: np.ndarray, traits: IdentityTraits, figure: _Figure) -> None:
    """Paints a shoulder bag at the hip and its strap across the chest."""
    centre_x, torso_width, hip_y = figure.centre_x, figure.torso_width, figure.hip_y
    bag_x = centre_x + traits.bag_side * torso_width * 0.62
    cv2.line(
        image,
        _point(centre_x - traits.bag_side * torso_width * 0.4, figure.neck_y),
        _point(bag_x, hip_y),
        traits.bag_colour,
        max(1, figure.limb // 3),
        _LINE,
    )
    cv2.rectangle(
        image,
        _point(bag_x - torso_width * 0.22, hip_y - figure.head_radius * 0.5),
        _point(bag_x + torso_width * 0.22, hip_y + figure.head_radius * 1.8),
        traits.bag_colour,
        -1,
    )


def _draw_handbag(image: np.ndarray, traits: IdentityTraits, figure: _Figure) -> None:
    """Paints a handbag hanging from the hand on the bag's side."""
    torso_width = figure.torso_width
    hand_x = figure.centre_x + traits.bag_side * (
        torso_width * 0.62 + figure.arm_phase * traits.bag_side * figure.body_height * 0.06
    )
    hand_y = figure.hip_y + figure.leg_length * 0.1
    cv2.rectangle(
        image,
        _point(hand_x - torso_width * 0.18, hand_y),
        _point(hand_x + torso_width * 0.18, hand_y + figure.head_radius * 2.2),
        traits.bag_colour,
        -1,
    )


_BAG_PAINTERS = {
    "backpack": _draw_backpack,
    "shoulder_bag": _draw_shoulder_bag,
    "handbag": _draw_handbag,
}


def _draw_head(image: np.ndarray, traits: IdentityTraits, figure: _Figure) -> None:
    """Paints the head: face and hair from the front, hair only from the back; then the hat."""
    head_centre, head_axes, back = figure.head_centre, figure.head_axes, figure.back
    if back:
        cv2.ellipse(image, head_centre, head_axes, 0, 0, 360, traits.hair_colour, -1, _LINE)
    else:
        cv2.ellipse(image, head_centre, head_axes, 0, 0, 360, traits.skin_colour, -1, _LINE)
        cv2.ellipse(image, head_centre, head_axes, 0, 180, 360, traits.hair_colour, -1, _LINE)
    if traits.hat == "cap":
        cv2.ellipse(image, head_centre, head_axes, 0, 180, 360, traits.hat_colour, -1, _LINE)
        brim_y = head_centre[1]
        brim_x = head_centre[0] + (0 if back else head_axes[0] * 0.4)
        cv2.line(
            image,
            _point(brim_x - head_axes[0] * 1.1, brim_y),
            _point(brim_x + head_axes[0] * 1.1, brim_y),
            traits.hat_colour,
            max(1, figure.limb // 3),
        )
    elif traits.hat == "beanie":
        cv2.ellipse(
            image,
            (head_centre[0], head_centre[1] - head_axes[1] // 4),
            (head_axes[0] + 1, head_axes[1]),
            0,
            180,
            360,
            traits.hat_colour,
            -1,
            _LINE,
        )


def draw_person(
    image: np.ndarray, traits: IdentityTraits, layout: BodyLayout, variation: ImageVariation
) -> None:
    """Draws one person into ``image`` (uint8 BGR, in place), parts back to front."""
    figure = _Figure.of(layout, variation)
    _draw_behind_body(image, traits, figure)
    _draw_legs(image, traits, figure)
    _draw_lower_garment(image, traits, figure)
    _fill_torso(image, layout, traits, figure.back)
    _draw_arms(image, traits, figure)
    if traits.bag in _BAG_PAINTERS:
        _BAG_PAINTERS[traits.bag](image, traits, figure)
    _draw_head(image, traits, figure)


def _draw_occluder(image: np.ndarray, occlusion) -> None:
    kind, extent, side, colour = occlusion
    height, width = image.shape[:2]
    if kind == "bottom":
        # A car, bench or railing in front of the lower body.
        top = int(height * (1 - extent))
        cv2.rectangle(image, (0, top), (width, height), colour, -1)
        cv2.rectangle(
            image,
            (0, top),
            (width, top + max(1, height // 40)),
            tuple(int(v * 0.6) for v in colour),
            -1,
        )
    else:
        # A pole or a tree trunk on one side.
        pole_width = int(width * extent * 0.6)
        x0 = 0 if side < 0 else width - pole_width
        x0 += int(side * width * 0.05)
        cv2.rectangle(image, (x0, 0), (x0 + pole_width, height), colour, -1)


_NOISE_FIELDS: dict[tuple[int, int], np.ndarray] = {}


def _noise_patch(image_height: int, image_width: int, noise_seed: int) -> np.ndarray:
    """A float32 (H, W, 3) standard-normal patch picked by ``noise_seed`` from a fixed field.

    Cutting patches out of one field four times the image's size is about ten times faster
    than drawing fresh noise per image, and sensor noise needs no more independence than that.
    """
    key = (image_height, image_width)
    if key not in _NOISE_FIELDS:
        field = np.random.default_rng(key).standard_normal((2 * image_height, 2 * image_width, 3))
        _NOISE_FIELDS[key] = field.astype(np.float32)
    top = noise_seed % (image_height + 1)
    left = (noise_seed // (image_height + 1)) % (image_width + 1)
    return _NOISE_FIELDS[key][top : top + image_height, left : left + image_width]


class _PasserBy(NamedTuple):
    """A stranger walking past, drawn behind or in front of the person."""

    traits: IdentityTraits
    layout: BodyLayout
    variation: ImageVariation
    in_front: bool


def _passer_by(
    variation: ImageVariation,
    camera: CameraConditions,
    image_height: int,
    image_width: int,
    seed: int,
) -> _PasserBy | None:
    """The image's passer-by, facing the other way in the opposite stride; None if there is none.

    Args:
        variation: This image's variation; its ``passer_by`` says who, where and whether in front.
        camera: The camera (framing).
        image_height: Image height in pixels.
        image_width: Image width in pixels.
        seed: Dataset seed, for the passer-by's traits.
    """
    if variation.passer_by is None:
        return None
    stranger_ID, offset, in_front = variation.passer_by
    stranger = draw_identity_traits(seed, stranger_ID)
    stranger_variation = dataclasses.replace(
        variation, facing_back=not variation.facing_back, leg_phase=-variation.leg_phase
    )
    stranger_layout = compute_body_layout(
        stranger, camera, stranger_variation, image_height, image_width, centre_offset=offset
    )
    return _PasserBy(stranger, stranger_layout, stranger_variation, in_front)


def _apply_camera(
    image: np.ndarray,
    camera: CameraConditions,
    variation: ImageVariation,
    image_height: int,
    image_width: int,
) -> np.ndarray:
    """The camera's view of ``image``: lower resolution, colour map, blur and sensor noise.

    Args:
        image: uint8 BGR (image_height, image_width, 3).
        camera: The camera's nuisances.
        variation: This image's brightness and noise seed.
        image_height: Output height in pixels.
        image_width: Output width in pixels.

    Returns:
        A new uint8 BGR image (image_height, image_width, 3).
    """
    if camera.resolution_factor > 1.05:
        small_size = (
            max(4, int(image_width / camera.resolution_factor)),
            max(4, int(image_height / camera.resolution_factor)),
        )
        image = cv2.resize(
            cv2.resize(image, small_size, interpolation=cv2.INTER_AREA),
            (image_width, image_height),
            interpolation=cv2.INTER_LINEAR,
        )
    # Saturation, colour cast, brightness and offsets are one affine colour map.
    saturation_matrix = camera.saturation * np.eye(3) + (1 - camera.saturation) / 3
    gains = np.asarray(camera.channel_gains) * variation.brightness
    colour_map = np.hstack(
        [gains[:, None] * saturation_matrix, np.asarray(camera.channel_offsets)[:, None]]
    )
    pixels = cv2.transform(image.astype(np.float32), colour_map.astype(np.float32))
    if camera.blur_sigma > 0.3:
        pixels = cv2.GaussianBlur(pixels, (0, 0), camera.blur_sigma)
    pixels += camera.noise_std * _noise_patch(image_height, image_width, variation.noise_seed)
    # Non-negative after the clip, so the absolute value is a plain rounding to uint8.
    return cv2.convertScaleAbs(np.clip(pixels, 0, 255, out=pixels))


def render_image(
    traits: IdentityTraits,
    camera: CameraConditions,
    variation: ImageVariation,
    image_height: int,
    image_width: int,
    *,
    background: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Draws one image of a person seen by a camera.

    Args:
        traits: The person's appearance.
        camera: The camera's nuisances.
        variation: This image's pose, framing, view, occlusion, passer-by, mirroring and noise.
        image_height: Output height in pixels.
        image_width: Output width in pixels.
        background: The camera's scene from ``render_camera_background`` (drawn here if None;
            pass it to draw many images of one camera quickly).
        seed: Dataset seed, for the passer-by's traits.

    Returns:
        uint8 BGR image of shape (image_height, image_width, 3).
    """
    if background is None:
        background = render_camera_background(camera, image_height, image_width)
    top = int(variation.background_y * (background.shape[0] - image_height))
    left = int(variation.background_x * (background.shape[1] - image_width))
    image = background[top : top + image_height, left : left + image_width].copy()

    # Painted back to front: a passer-by behind, the person, a passer-by in front, an occluder.
    passer_by = _passer_by(variation, camera, image_height, image_width, seed)
    if passer_by is not None and not passer_by.in_front:
        draw_person(image, passer_by.traits, passer_by.layout, passer_by.variation)
    layout = compute_body_layout(traits, camera, variation, image_height, image_width)
    draw_person(image, traits, layout, variation)
    if passer_by is not None and passer_by.in_front:
        draw_person(image, passer_by.traits, passer_by.layout, passer_by.variation)
    if variation.occlusion is not None:
        _draw_occluder(image, variation.occlusion)
    image = _apply_camera(image, camera, variation, image_height, image_width)
    if variation.mirror:
        image = np.ascontiguousarray(image[:, ::-1])
    return image
