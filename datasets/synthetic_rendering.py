"""Paints Synthetic images: a camera's scene, a person from body parts, nuisances on top.

A person is drawn from parts (head with hair and an optional hat, torso with a clothing pattern,
arms with long or short sleeves, trousers, shorts or a skirt, shoes, an optional backpack,
shoulder bag or handbag) in front of the camera's scene, possibly behind an occluder or next to
a partly visible passer-by. The camera then casts its colours, washes them out, lowers the
resolution, blurs and adds noise. Pure NumPy and OpenCV; colours are BGR.
"""

from __future__ import annotations

import dataclasses

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


def draw_person(
    image: np.ndarray, traits: IdentityTraits, layout: BodyLayout, variation: ImageVariation
) -> None:
    """Draws one person into ``image`` (uint8 BGR, in place), parts back to front."""
    x0, neck_y, x1, hip_y = layout.torso_box
    centre_x, torso_width = layout.centre_x, layout.torso_width
    head_radius, foot_y = layout.head_radius, layout.foot_y
    leg_length = foot_y - hip_y
    back = variation.facing_back
    limb = max(2, int(round(torso_width * 0.25)))
    head_centre = _point(centre_x, neck_y - head_radius)
    head_axes = (max(1, int(round(head_radius * 0.85))), max(1, int(round(head_radius))))

    if traits.hair_style == "long":
        # Long hair falls behind the shoulders.
        cv2.rectangle(
            image,
            _point(centre_x - head_radius * 0.9, neck_y - head_radius),
            _point(centre_x + head_radius * 0.9, neck_y + head_radius * 1.6),
            traits.hair_colour,
            -1,
        )
    if traits.bag == "backpack" and not back:
        # From the front a backpack shows beside the torso.
        side_x = centre_x + traits.bag_side * torso_width * 0.45
        cv2.rectangle(
            image,
            _point(side_x - torso_width * 0.2, neck_y + head_radius * 0.5),
            _point(side_x + torso_width * 0.2, hip_y - head_radius),
            traits.bag_colour,
            -1,
        )

    # Legs: trousers all the way down, shorts and skirts show skin below.
    for side in (-1, 1):
        hip = _point(centre_x + side * torso_width * 0.22, hip_y)
        foot_x = (
            centre_x + side * torso_width * 0.22 + side * variation.leg_phase * leg_length * 0.2
        )
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
    elif traits.lower_type == "shorts":
        cv2.rectangle(
            image,
            _point(x0 + torso_width * 0.05, hip_y - 1),
            _point(x1 - torso_width * 0.05, hip_y + leg_length * 0.15),
            traits.lower_colour,
            -1,
        )
    else:
        cv2.rectangle(
            image,
            _point(x0 + torso_width * 0.05, hip_y - 1),
            _point(x1 - torso_width * 0.05, hip_y + leg_length * 0.1),
            traits.lower_colour,
            -1,
        )

    _fill_torso(image, layout, traits, back)

    # Arms: sleeves in the clothing colour; short sleeves leave the forearm bare.
    for side in (-1, 1):
        shoulder = (centre_x + side * torso_width * 0.5, neck_y + limb * 0.5)
        hand = (
            centre_x
            + side * torso_width * 0.62
            + side * variation.arm_phase * layout.body_height * 0.06,
            hip_y + leg_length * 0.1,
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

    if traits.bag == "backpack":
        if back:
            cv2.rectangle(
                image,
                _point(x0 + torso_width * 0.12, neck_y + head_radius * 0.4),
                _point(x1 - torso_width * 0.12, hip_y - head_radius * 0.2),
                traits.bag_colour,
                -1,
            )
        else:
            for side in (-1, 1):
                strap_x = centre_x + side * torso_width * 0.28
                cv2.line(
                    image,
                    _point(strap_x, neck_y),
                    _point(strap_x, neck_y + (hip_y - neck_y) * 0.6),
                    traits.bag_colour,
                    max(1, limb // 3),
                )
    elif traits.bag == "shoulder_bag":
        bag_x = centre_x + traits.bag_side * torso_width * 0.62
        cv2.line(
            image,
            _point(centre_x - traits.bag_side * torso_width * 0.4, neck_y),
            _point(bag_x, hip_y),
            traits.bag_colour,
            max(1, limb // 3),
            _LINE,
        )
        cv2.rectangle(
            image,
            _point(bag_x - torso_width * 0.22, hip_y - head_radius * 0.5),
            _point(bag_x + torso_width * 0.22, hip_y + head_radius * 1.8),
            traits.bag_colour,
            -1,
        )
    elif traits.bag == "handbag":
        hand_x = centre_x + traits.bag_side * (
            torso_width * 0.62 + variation.arm_phase * traits.bag_side * layout.body_height * 0.06
        )
        hand_y = hip_y + leg_length * 0.1
        cv2.rectangle(
            image,
            _point(hand_x - torso_width * 0.18, hand_y),
            _point(hand_x + torso_width * 0.18, hand_y + head_radius * 2.2),
            traits.bag_colour,
            -1,
        )

    # Head: face and hair from the front, hair only from the back; then the hat.
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
            max(1, limb // 3),
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

    passer_by = None
    if variation.passer_by is not None:
        stranger_ID, offset, in_front = variation.passer_by
        stranger = draw_identity_traits(seed, stranger_ID)
        stranger_variation = dataclasses.replace(
            variation, facing_back=not variation.facing_back, leg_phase=-variation.leg_phase
        )
        stranger_layout = compute_body_layout(
            stranger, camera, stranger_variation, image_height, image_width, centre_offset=offset
        )
        passer_by = (stranger, stranger_layout, stranger_variation, in_front)
        if not in_front:
            draw_person(image, stranger, stranger_layout, stranger_variation)
    layout = compute_body_layout(traits, camera, variation, image_height, image_width)
    draw_person(image, traits, layout, variation)
    if passer_by is not None and passer_by[3]:
        draw_person(image, *passer_by[:3])
    if variation.occlusion is not None:
        _draw_occluder(image, variation.occlusion)

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
    image = cv2.convertScaleAbs(np.clip(pixels, 0, 255, out=pixels))
    if variation.mirror:
        image = np.ascontiguousarray(image[:, ::-1])
    return image
