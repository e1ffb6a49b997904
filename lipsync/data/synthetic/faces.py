"""Face identities: drawn faces and faces made from public-domain photos.

An identity is a small frozen dataclass (JSON-serialisable through ``identity_to_dict``);
``build_face`` turns it into a ``FaceLayer``: a still, supersampled image of the face with
the mouth left out, the styles of the parts drawn per frame (mouth, eyelids) and the jaw
displacement field.  ``render.py`` animates the layer.

Drawn faces vary skin tone, face shape, eyes, brows, hair, glasses, clothes and background
and are drawn antialiased with soft shading; photo faces (scikit-image's astronaut,
matplotlib's grace_hopper) have their mouth removed and re-drawn along mediapipe landmarks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .mouth import JAW_SHARE, EyeStyle, MouthStyle

__all__ = [
    "DrawnIdentity",
    "FaceLayer",
    "Identity",
    "PhotoIdentity",
    "build_face",
    "identity_from_dict",
    "identity_to_dict",
    "jaw_field",
    "sample_identity",
]

SUPERSAMPLE = 2  # faces are drawn at this multiple of the output size
JAW_PER_GAP = JAW_SHARE * 0.85  # chin moves a little less than the lower lip
_SKIN = np.array(
    [
        (255, 226, 200),
        (240, 196, 165),
        (222, 170, 135),
        (196, 136, 100),
        (158, 104, 72),
        (118, 78, 54),
        (86, 58, 42),
    ],
    np.float64,
)
_HAIR = np.array(
    [
        (22, 18, 18),
        (55, 38, 28),
        (98, 68, 42),
        (196, 164, 108),
        (150, 72, 40),
        (140, 138, 136),
        (215, 212, 205),
    ],
    np.float64,
)
_IRIS = np.array([(70, 45, 25), (40, 28, 20), (70, 110, 150), (80, 110, 70), (110, 90, 50), (105, 115, 120)])
HAIR_STYLES = ("short", "long", "bald", "curly", "bob")
FRINGES = ("none", "side", "bangs", "swept")
GLASSES = ("none", "round", "rect")
BACKGROUNDS = ("solid", "gradient", "blobs", "stripes")
PHOTOS = ("astronaut", "grace_hopper")
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class DrawnIdentity:
    """A drawn face. Lengths are in face heights (forehead to chin = 1), origin at the face centre."""

    skin: RGB
    hair_color: RGB
    iris: RGB
    lip_color: RGB
    clothes: RGB
    background_colors: tuple[RGB, RGB]
    face_width: float = 0.36  # half width
    jaw: float = 0.72  # 1 = oval, lower = tapered jaw
    eye_spacing: float = 0.13  # eye centre to face midline
    eye_size: float = 0.055  # eye half width
    eye_y: float = -0.06
    brow_thickness: float = 0.02
    brow_arch: float = 0.015
    hair_style: str = "short"
    fringe: str = "side"
    nose_length: float = 0.13
    nose_width: float = 0.03
    mouth_y: float = 0.19
    mouth_width: float = 0.11  # half width at rest
    lip_upper: float = 0.02
    lip_lower: float = 0.026
    glasses: str = "none"
    glasses_color: RGB = (30, 30, 30)
    beard: float = 0.0  # stubble darkness 0..1
    background: str = "solid"
    light: float = 0.0  # horizontal light direction -1..1
    face_size: float = 0.58  # face height / frame height
    offset_x: float = 0.0  # face centre offset, fraction of frame width
    articulation: float = 1.0  # speaking style: scales the mouth opening
    kind: str = "drawn"


@dataclass(frozen=True)
class PhotoIdentity:
    """A face from a shipped public-domain photo, with its mouth re-drawn each frame."""

    photo: str = "astronaut"  # one of PHOTOS
    flip: bool = False
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel gain
    glasses: str = "none"
    glasses_color: RGB = (30, 30, 30)
    face_size: float = 0.55
    articulation: float = 1.0
    kind: str = "photo"


Identity = DrawnIdentity | PhotoIdentity


@dataclass
class FaceLayer:
    """A face ready to animate; all coordinates in layer pixels (``scale`` x the output size)."""

    image: np.ndarray  # (Hs, Ws, 3) uint8, mouth removed
    alpha: np.ndarray | None  # (Hs, Ws) float32 in [0, 1]; None = opaque (photo)
    background: np.ndarray | None  # (Hs, Ws, 3) uint8 behind a drawn face
    scale: int
    mouth: MouthStyle
    eyes: tuple[EyeStyle, ...]
    face_box: tuple[float, float, float, float]  # x1, y1, x2, y2 at rest
    pivot: tuple[float, float]  # centre of head rotation
    jaw_box: tuple[int, int, int, int]  # x1, y1, x2, y2 of the band the jaw warp touches
    jaw: np.ndarray  # (y2 - y1, x2 - x1) float32: downward shift per pixel of jaw drop


def identity_to_dict(identity: Identity) -> dict:
    """JSON-ready dict of an identity (tuples become lists)."""
    return dataclasses.asdict(identity)


def identity_from_dict(d: dict) -> Identity:
    """Inverse of ``identity_to_dict``; raises ValueError on an unknown kind or field."""
    kinds = {"drawn": DrawnIdentity, "photo": PhotoIdentity}
    kind = d.get("kind")
    if kind not in kinds:
        raise ValueError(f"identity kind {kind!r} is not one of {sorted(kinds)}")
    cls = kinds[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {kind} identity fields {sorted(unknown)}")

    def tup(v):
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    return cls(**{k: tup(v) for k, v in d.items()})


def _mix(palette: np.ndarray, rng: np.random.Generator, jitter: float) -> RGB:
    i = rng.uniform(0, len(palette) - 1)
    lo, t = int(i), i - int(i)
    c = palette[lo] * (1 - t) + palette[min(lo + 1, len(palette) - 1)] * t
    c = c * rng.uniform(1 - jitter, 1 + jitter, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def sample_identity(rng: np.random.Generator, photo_fraction: float = 0.2) -> Identity:
    """Draw a random identity: a photo face with probability ``photo_fraction``, else a drawn one."""
    art = float(rng.uniform(0.75, 1.2))
    if rng.random() < photo_fraction:
        return PhotoIdentity(
            photo=PHOTOS[rng.integers(len(PHOTOS))],
            flip=bool(rng.random() < 0.5),
            tint=tuple(float(v) for v in rng.uniform(0.9, 1.1, 3)),
            glasses=GLASSES[rng.integers(len(GLASSES))] if rng.random() < 0.3 else "none",
            glasses_color=tuple(int(v) for v in rng.integers(0, 120, 3)),
            face_size=float(rng.uniform(0.5, 0.6)),
            articulation=art,
        )
    skin = _mix(_SKIN, rng, 0.05)
    lip = np.array(skin, float) * [0.78, 0.5, 0.52] + [30, 8, 12]
    if rng.random() < 0.2:  # lipstick
        lip = lip * 0.4 + np.array([(190, 40, 60), (200, 90, 110), (140, 40, 50)][rng.integers(3)]) * 0.6
    bg = [tuple(int(v) for v in rng.integers(20, 235, 3)) for _ in range(2)]
    return DrawnIdentity(
        skin=skin,
        hair_color=_mix(_HAIR, rng, 0.1),
        iris=tuple(int(v) for v in _IRIS[rng.integers(len(_IRIS))]),
        lip_color=tuple(int(v) for v in np.clip(lip, 0, 255)),
        clothes=tuple(int(v) for v in rng.integers(10, 240, 3)),
        background_colors=(bg[0], bg[1]),
        face_width=float(rng.uniform(0.33, 0.39)),
        jaw=float(rng.uniform(0.6, 0.85)),
        eye_spacing=float(rng.uniform(0.12, 0.14)),
        eye_size=float(rng.uniform(0.048, 0.06)),
        eye_y=float(rng.uniform(-0.08, -0.04)),
        brow_thickness=float(rng.uniform(0.014, 0.028)),
        brow_arch=float(rng.uniform(0.0, 0.03)),
        hair_style=HAIR_STYLES[rng.integers(len(HAIR_STYLES))],
        fringe=FRINGES[rng.integers(len(FRINGES))],
        nose_length=float(rng.uniform(0.11, 0.15)),
        nose_width=float(rng.uniform(0.025, 0.04)),
        mouth_y=float(rng.uniform(0.18, 0.21)),
        mouth_width=float(rng.uniform(0.1, 0.125)),
        lip_upper=float(rng.uniform(0.017, 0.026)),
        lip_lower=float(rng.uniform(0.022, 0.032)),
        glasses=GLASSES[rng.integers(len(GLASSES))] if rng.random() < 0.35 else "none",
        glasses_color=tuple(int(v) for v in rng.integers(0, 140, 3)),
        beard=float(rng.uniform(0.2, 0.6)) if rng.random() < 0.15 else 0.0,
        background=BACKGROUNDS[rng.integers(len(BACKGROUNDS))],
        light=float(rng.uniform(-1, 1)),
        face_size=float(rng.uniform(0.52, 0.62)),
        offset_x=float(rng.uniform(-0.04, 0.04)),
        articulation=art,
    )


def jaw_field(
    shape: tuple[int, int],
    mouth_y: float,
    chin_y: float,
    center_x: float,
    half_width: float,
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Downward displacement per pixel of jaw drop over the lower face: 0 at the lip line, 1 at the chin.

    Returns the band (x1, y1, x2, y2) it covers and the (y2 - y1, x2 - x1) float32 field.
    """
    h, w = shape
    span = max(chin_y - mouth_y, 1.0)
    y1, y2 = int(max(0, mouth_y)), int(min(h, chin_y + 0.9 * span))
    x1, x2 = int(max(0, center_x - 1.5 * half_width)), int(min(w, center_x + 1.5 * half_width))
    ys = np.arange(y1, y2, dtype=np.float32)[:, None]
    xs = np.arange(x1, x2, dtype=np.float32)[None]
    rise = np.clip((ys - mouth_y) / (0.45 * span), 0, 1)
    fall = np.clip((chin_y + 0.9 * span - ys) / (0.8 * span), 0, 1)
    vertical = (rise * rise * (3 - 2 * rise)) * (fall * fall * (3 - 2 * fall))
    horizontal = np.exp(-(((xs - center_x) / (1.05 * half_width)) ** 4))
    return (x1, y1, x2, y2), (vertical * horizontal).astype(np.float32)


def build_face(identity: Identity, size: tuple[int, int]) -> FaceLayer:
    """Build the still face layer for ``identity`` on an output frame of ``size`` = (height, width)."""
    if isinstance(identity, DrawnIdentity):
        from .drawing import draw_face

        return draw_face(identity, size, SUPERSAMPLE)
    if isinstance(identity, PhotoIdentity):
        from .photos import photo_face

        return photo_face(identity, size, SUPERSAMPLE)
    raise TypeError(f"not an identity: {identity!r}")
