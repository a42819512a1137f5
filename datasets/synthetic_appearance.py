"""What the Synthetic dataset draws: people's attributes, cameras' nuisances, images' variation.

Pure random draws, no pixels (``datasets.synthetic_rendering`` paints them). Every draw comes
from a numpy Generator seeded by ``(seed, stream, index)``, so an identity's attributes depend
only on the seed and its number, never on how many identities are drawn.

Identities are drawn in pairs (1, 2), (3, 4), ...: with probability ``twin_fraction`` the even
one is a look-alike "twin" of the odd one, a copy that differs in one or two visible attributes
(say, the colour of the shoes, or a bag), so that telling them apart needs those details.

Colours are BGR uint8 triples (OpenCV's order). Nuisance strengths scale with ``difficulty``
(0: clean images, 1: the default, up to 2): per-camera background clutter, colour cast, blur,
noise, low resolution and JPEG quality, and per-image occlusion and passers-by.
"""

from __future__ import annotations

import dataclasses

import numpy as np

Colour = tuple[int, int, int]

# Small palettes on purpose: many people share each colour, so only combinations identify them.
UPPER_COLOURS: tuple[Colour, ...] = (
    (40, 40, 200),
    (120, 40, 20),
    (235, 235, 235),
    (30, 30, 30),
    (128, 128, 128),
    (50, 140, 40),
    (40, 200, 220),
    (210, 160, 90),
    (150, 60, 150),
    (60, 110, 230),
)
LOWER_COLOURS: tuple[Colour, ...] = (
    (25, 25, 25),
    (110, 60, 30),
    (120, 120, 120),
    (140, 180, 200),
    (30, 60, 100),
    (220, 220, 220),
    (60, 50, 140),
)
HAIR_COLOURS: tuple[Colour, ...] = ((20, 20, 20), (30, 50, 80), (90, 170, 210), (170, 170, 170))
SKIN_COLOURS: tuple[Colour, ...] = ((160, 190, 230), (120, 160, 210), (80, 120, 170), (50, 80, 120))
SHOE_COLOURS: tuple[Colour, ...] = ((20, 20, 20), (230, 230, 230), (40, 60, 120), (30, 30, 160))
ACCESSORY_COLOURS: tuple[Colour, ...] = (
    (20, 20, 20),
    (40, 40, 160),
    (110, 80, 50),
    (60, 120, 60),
    (200, 200, 200),
)
UPPER_PATTERNS = ("solid", "horizontal_stripes", "vertical_stripes", "checks", "two_tone", "logo")
SLEEVES = ("long", "short")
LOWER_TYPES = ("trousers", "shorts", "skirt")
HAIR_STYLES = ("short", "long")
HATS = ("none", "cap", "beanie")
BAGS = ("none", "backpack", "shoulder_bag", "handbag")
OCCLUDER_TYPES = ("bottom", "pole")

# The attributes a person is told apart by, each a group of fields that shows as one thing.
# ``visible_attributes`` reads them; twins differ in one or two of the mutable ones.
ATTRIBUTE_NAMES = (
    "build",
    "skin",
    "hair",
    "hat",
    "upper_colour",
    "upper_pattern",
    "sleeves",
    "lower_type",
    "lower_colour",
    "shoes",
    "bag",
)
TWIN_MUTABLE_ATTRIBUTES = (
    "hair",
    "hat",
    "upper_colour",
    "upper_pattern",
    "sleeves",
    "lower_type",
    "lower_colour",
    "shoes",
    "bag",
)

# Seed streams, so that identity, twin, camera, image and extra draws never share a sequence.
IDENTITY_STREAM, CAMERA_STREAM, IMAGE_STREAM, EXTRA_STREAM, TWIN_STREAM = 1, 2, 3, 4, 5
# Strangers (passers-by, distractors, junk) take identity numbers from here on.
STRANGER_ID_OFFSET = 1_000_000


@dataclasses.dataclass(frozen=True)
class IdentityTraits:
    """The fixed appearance of one synthetic person (colours are BGR uint8 triples)."""

    height_fraction: float
    width_fraction: float
    leg_fraction: float
    skin_colour: Colour
    hair_colour: Colour
    hair_style: str
    hat: str
    hat_colour: Colour
    upper_colour: Colour
    upper_pattern: str
    pattern_colour: Colour
    sleeves: str
    lower_type: str
    lower_colour: Colour
    shoe_colour: Colour
    bag: str
    bag_colour: Colour
    bag_side: int
    twin_of: int | None = None


@dataclasses.dataclass(frozen=True)
class CameraConditions:
    """The nuisances of one synthetic camera.

    Attributes:
        wall_colour, floor_colour: the scene's two main colours.
        horizon_fraction: where the floor starts, as a fraction of the image height.
        clutter_seed: seed of the scene's objects (windows, posters, plants, tiles).
        clutter_strength: 0..1, how much of the scene the objects cover.
        channel_gains: per-channel (B, G, R) colour cast multiplied into every pixel.
        channel_offsets: per-channel offset added after the gains.
        saturation: 0..1, 1 keeps the colours, lower values wash them out.
        blur_sigma: Gaussian blur in pixels.
        noise_std: sensor noise standard deviation in grey levels.
        resolution_factor: >= 1; the image is drawn this many times smaller and enlarged.
        jpeg_quality: 30..95, the quality the camera's images are saved with.
        scale: the detector's box tightness (person height relative to the box).
        vertical_offset: the detector's vertical bias, a fraction of the image height.
    """

    wall_colour: Colour
    floor_colour: Colour
    horizon_fraction: float
    clutter_seed: int
    clutter_strength: float
    channel_gains: tuple[float, float, float]
    channel_offsets: tuple[float, float, float]
    saturation: float
    blur_sigma: float
    noise_std: float
    resolution_factor: float
    jpeg_quality: int
    scale: float
    vertical_offset: float


@dataclasses.dataclass(frozen=True)
class ImageVariation:
    """Per-image variation: pose, framing, view, occlusion, passer-by, mirroring, noise seed.

    ``occlusion`` is None or (type, extent, side, colour); ``passer_by`` is None or
    (stranger identity number, horizontal offset as a fraction of the width, in front: bool).
    """

    leg_phase: float
    arm_phase: float
    shift_x: float
    shift_y: float
    scale: float
    facing_back: bool
    background_x: float
    background_y: float
    brightness: float
    occlusion: tuple[str, float, int, Colour] | None
    passer_by: tuple[int, float, bool] | None
    mirror: bool
    noise_seed: int


def _pick(generator: np.random.Generator, palette):
    return palette[int(generator.integers(len(palette)))]


def _pick_other(generator: np.random.Generator, palette, current):
    return _pick(generator, [value for value in palette if value != current])


def visible_attributes(traits: IdentityTraits) -> dict[str, tuple]:
    """The value of each attribute in ``ATTRIBUTE_NAMES`` as it shows in an image.

    Fields that do not show are left out (a hat's colour when there is no hat, a pattern's
    colour on plain clothes), so two people with equal values look the same.

    Args:
        traits: A person's traits.

    Returns:
        Attribute name -> tuple of the fields that show.
    """
    hidden_pattern = traits.upper_pattern == "solid"
    return {
        "build": (traits.height_fraction, traits.width_fraction, traits.leg_fraction),
        "skin": (traits.skin_colour,),
        "hair": (traits.hair_colour, traits.hair_style),
        "hat": (traits.hat,) if traits.hat == "none" else (traits.hat, traits.hat_colour),
        "upper_colour": (traits.upper_colour,),
        "upper_pattern": (traits.upper_pattern,)
        if hidden_pattern
        else (traits.upper_pattern, traits.pattern_colour),
        "sleeves": (traits.sleeves,),
        "lower_type": (traits.lower_type,),
        "lower_colour": (traits.lower_colour,),
        "shoes": (traits.shoe_colour,),
        "bag": (traits.bag,)
        if traits.bag == "none"
        else (traits.bag, traits.bag_colour, traits.bag_side),
    }


def differing_attributes(first: IdentityTraits, second: IdentityTraits) -> list[str]:
    """Names of the attributes (``ATTRIBUTE_NAMES`` order) in which two people look different."""
    first_values, second_values = visible_attributes(first), visible_attributes(second)
    return [name for name in ATTRIBUTE_NAMES if first_values[name] != second_values[name]]


def _draw_base_traits(generator: np.random.Generator) -> IdentityTraits:
    upper_colour = _pick(generator, UPPER_COLOURS)
    upper_pattern = str(generator.choice(UPPER_PATTERNS, p=(0.35, 0.13, 0.13, 0.13, 0.13, 0.13)))
    pattern_colour = _pick_other(generator, UPPER_COLOURS, upper_colour)
    hat = str(generator.choice(HATS, p=(0.65, 0.2, 0.15)))
    bag = str(generator.choice(BAGS, p=(0.4, 0.2, 0.2, 0.2)))
    return IdentityTraits(
        height_fraction=float(generator.uniform(0.80, 0.94)),
        width_fraction=float(generator.uniform(0.30, 0.44)),
        leg_fraction=float(generator.uniform(0.42, 0.52)),
        skin_colour=_pick(generator, SKIN_COLOURS),
        hair_colour=_pick(generator, HAIR_COLOURS),
        hair_style=str(generator.choice(HAIR_STYLES)),
        hat=hat,
        hat_colour=_pick(generator, ACCESSORY_COLOURS),
        upper_colour=upper_colour,
        upper_pattern=upper_pattern,
        # A pattern colour on plain clothes does not show; fixing it keeps equal looks equal.
        pattern_colour=upper_colour if upper_pattern == "solid" else pattern_colour,
        sleeves=str(generator.choice(SLEEVES, p=(0.6, 0.4))),
        lower_type=str(generator.choice(LOWER_TYPES, p=(0.6, 0.25, 0.15))),
        lower_colour=_pick(generator, LOWER_COLOURS),
        shoe_colour=_pick(generator, SHOE_COLOURS),
        bag=bag,
        bag_colour=_pick(generator, ACCESSORY_COLOURS),
        bag_side=int(generator.choice((-1, 1))),
    )


def _mutate(traits: IdentityTraits, attribute: str, generator: np.random.Generator) -> dict:
    """Field changes that make ``attribute`` look different (always a visible change)."""
    if attribute == "hair":
        if generator.random() < 0.5:
            return {"hair_colour": _pick_other(generator, HAIR_COLOURS, traits.hair_colour)}
        return {"hair_style": _pick_other(generator, HAIR_STYLES, traits.hair_style)}
    if attribute == "hat":
        if traits.hat == "none":
            return {
                "hat": _pick_other(generator, HATS, "none"),
                "hat_colour": _pick(generator, ACCESSORY_COLOURS),
            }
        if generator.random() < 0.5:
            return {"hat": "none", "hat_colour": traits.hat_colour}
        return {"hat_colour": _pick_other(generator, ACCESSORY_COLOURS, traits.hat_colour)}
    if attribute == "upper_colour":
        colour = _pick_other(generator, UPPER_COLOURS, traits.upper_colour)
        if traits.upper_pattern == "solid":
            return {"upper_colour": colour, "pattern_colour": colour}
        others = [c for c in UPPER_COLOURS if c not in (traits.upper_colour, traits.pattern_colour)]
        return {"upper_colour": _pick(generator, others)}
    if attribute == "upper_pattern":
        pattern = _pick_other(generator, UPPER_PATTERNS, traits.upper_pattern)
        if pattern == "solid":
            return {"upper_pattern": pattern, "pattern_colour": traits.upper_colour}
        if traits.upper_pattern == "solid":
            colour = _pick_other(generator, UPPER_COLOURS, traits.upper_colour)
            return {"upper_pattern": pattern, "pattern_colour": colour}
        return {"upper_pattern": pattern}
    if attribute == "sleeves":
        return {"sleeves": _pick_other(generator, SLEEVES, traits.sleeves)}
    if attribute == "lower_type":
        return {"lower_type": _pick_other(generator, LOWER_TYPES, traits.lower_type)}
    if attribute == "lower_colour":
        return {"lower_colour": _pick_other(generator, LOWER_COLOURS, traits.lower_colour)}
    if attribute == "shoes":
        return {"shoe_colour": _pick_other(generator, SHOE_COLOURS, traits.shoe_colour)}
    if attribute == "bag":
        if traits.bag == "none":
            return {"bag": _pick_other(generator, BAGS, "none")}
        if generator.random() < 0.5:
            return {"bag": "none"}
        return {"bag_colour": _pick_other(generator, ACCESSORY_COLOURS, traits.bag_colour)}
    raise ValueError(f"Unknown attribute {attribute!r}; valid ones: {TWIN_MUTABLE_ATTRIBUTES}")


def draw_identity_traits(seed: int, identity_ID: int, twin_fraction: float = 0.0) -> IdentityTraits:
    """Draws the traits of one identity; the same arguments always give the same traits.

    Args:
        seed: Dataset seed.
        identity_ID: Identity number (>= 1; strangers use numbers from ``STRANGER_ID_OFFSET``).
        twin_fraction: Probability in [0, 1] that an even-numbered identity is a look-alike of
            the identity just before it, differing in one or two attributes.

    Returns:
        The identity's traits; ``twin_of`` names the look-alike, if any.
    """
    if identity_ID % 2 == 0 and identity_ID < STRANGER_ID_OFFSET:
        twin_generator = np.random.default_rng([seed, TWIN_STREAM, identity_ID])
        if twin_generator.random() < twin_fraction:
            original = draw_identity_traits(seed, identity_ID - 1, 0.0)
            num_changes = 1 + int(twin_generator.random() < 0.5)
            attributes = twin_generator.choice(TWIN_MUTABLE_ATTRIBUTES, num_changes, False)
            changes = {}
            for attribute in attributes:
                changes.update(
                    _mutate(dataclasses.replace(original, **changes), attribute, twin_generator)
                )
            return dataclasses.replace(original, **changes, twin_of=identity_ID - 1)
    return _draw_base_traits(np.random.default_rng([seed, IDENTITY_STREAM, identity_ID]))


def _random_colour(generator: np.random.Generator, low: int, high: int) -> Colour:
    return tuple(int(value) for value in generator.integers(low, high, size=3))


def draw_camera_conditions(seed: int, camera_ID: int, difficulty: float = 1.0) -> CameraConditions:
    """Draws the nuisances of one camera; deterministic in (seed, camera_ID, difficulty).

    Args:
        seed: Dataset seed.
        camera_ID: Camera number (>= 1).
        difficulty: Nuisance strength in [0, 2]; 0 gives a plain, neutral camera.

    Returns:
        The camera's conditions.
    """
    generator = np.random.default_rng([seed, CAMERA_STREAM, camera_ID])
    uniform = generator.uniform(-1.0, 1.0, size=12)
    strength = float(difficulty)
    return CameraConditions(
        wall_colour=_random_colour(generator, 40, 220),
        floor_colour=_random_colour(generator, 40, 200),
        horizon_fraction=float(0.7 + 0.15 * uniform[0]),
        clutter_seed=int(generator.integers(2**31)),
        clutter_strength=float(np.clip(0.5 * strength, 0.0, 1.0)),
        # Casts of up to +-35 % per channel at difficulty 1: a white shirt turns visibly blue or
        # orange, as across real surveillance cameras.
        channel_gains=tuple(
            float(np.clip(1 + 0.35 * strength * v, 0.2, 2.0)) for v in uniform[1:4]
        ),
        channel_offsets=tuple(float(20 * strength * v) for v in uniform[4:7]),
        saturation=float(np.clip(1 - 0.3 * strength * (uniform[7] + 1) / 2, 0.2, 1.0)),
        blur_sigma=float(max(0.0, 0.6 * strength * (uniform[8] + 1) / 2)),
        noise_std=float(1.0 + 4.0 * strength * (uniform[9] + 1) / 2),
        resolution_factor=float(1.0 + 0.6 * strength * max(0.0, uniform[10])),
        jpeg_quality=int(np.clip(round(92 - 25 * strength * (uniform[11] + 1) / 2), 30, 95)),
        scale=float(generator.uniform(0.9, 1.04)),
        vertical_offset=float(generator.uniform(-0.03, 0.03)),
    )


def draw_image_variation(
    generator: np.random.Generator,
    *,
    occlusion_probability: float = 0.2,
    passer_by_probability: float = 0.2,
) -> ImageVariation:
    """Draws one image's pose, framing, view, occlusion and passer-by from ``generator``.

    Args:
        generator: The image's random generator.
        occlusion_probability: Chance of an occluder (an object from below, or a pole).
        passer_by_probability: Chance of another person partly in the box.

    Returns:
        The variation.
    """
    occlusion = None
    if generator.random() < occlusion_probability:
        occlusion = (
            str(generator.choice(OCCLUDER_TYPES)),
            float(generator.uniform(0.2, 0.45)),
            int(generator.choice((-1, 1))),
            _random_colour(generator, 0, 256),
        )
    passer_by = None
    if generator.random() < passer_by_probability:
        passer_by = (
            STRANGER_ID_OFFSET + int(generator.integers(1_000_000)),
            float(generator.choice((-1, 1)) * generator.uniform(0.45, 0.75)),
            bool(generator.random() < 0.5),
        )
    return ImageVariation(
        leg_phase=float(generator.uniform(-1.0, 1.0)),
        arm_phase=float(generator.uniform(-1.0, 1.0)),
        shift_x=float(generator.uniform(-0.07, 0.07)),
        shift_y=float(generator.uniform(-0.04, 0.04)),
        scale=float(generator.uniform(0.92, 1.08)),
        facing_back=bool(generator.random() < 0.4),
        background_x=float(generator.random()),
        background_y=float(generator.random()),
        brightness=float(generator.uniform(0.85, 1.15)),
        occlusion=occlusion,
        passer_by=passer_by,
        mirror=bool(generator.random() < 0.5),
        noise_seed=int(generator.integers(2**31)),
    )
