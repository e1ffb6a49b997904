"""Animate a face layer: mouth from a mouth track, head motion, blinks, lighting, camera noise.

Motion, blinks and lighting are smooth functions of time drawn from ``MotionParams.seed``,
so frame ``i`` of one face looks the same whatever audio it speaks and however long the clip
is: a re-render with other audio differs only in the mouth and jaw.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from .faces import JAW_PER_GAP, FaceLayer
from .mouth import GAP_PER_OPEN, draw_eyelid, draw_mouth, mouth_extent

__all__ = [
    "MotionParams",
    "RenderedFrame",
    "blinks",
    "head_pose",
    "lighting",
    "render_frames",
    "sample_motion",
]

POSE = ("roll", "yaw", "pitch", "dx", "dy", "zoom")
_N_WAVES = 3


@dataclass(frozen=True)
class MotionParams:
    """Head motion, blink and light amplitudes of one clip; ``seed`` fixes their time course."""

    seed: int = 0
    roll: float = 3.0  # degrees, in-plane rotation amplitude
    yaw: float = 6.0  # degrees, turn left/right
    pitch: float = 4.0  # degrees, nod
    shift: float = 0.025  # translation amplitude, fraction of the frame size
    zoom: float = 0.03  # relative scale amplitude
    blink_interval: float = 3.5  # mean seconds between blinks
    light: float = 0.08  # amplitude of brightness / light-direction changes
    noise: float = 1.5  # camera noise standard deviation, 0..255 levels


@dataclass(frozen=True)
class RenderedFrame:
    """One output frame: RGB uint8 (H, W, 3), face and lip boxes (x1, y1, x2, y2) in pixels."""

    image: np.ndarray
    face_box: np.ndarray
    mouth_box: np.ndarray


def sample_motion(rng: np.random.Generator) -> MotionParams:
    """Random motion amplitudes and a seed for their time course."""
    return MotionParams(
        seed=int(rng.integers(2**31)),
        roll=float(rng.uniform(1, 4)),
        yaw=float(rng.uniform(2, 8)),
        pitch=float(rng.uniform(1, 5)),
        shift=float(rng.uniform(0.005, 0.03)),
        zoom=float(rng.uniform(0.01, 0.04)),
        blink_interval=float(rng.uniform(2.5, 5)),
        light=float(rng.uniform(0.02, 0.1)),
        noise=float(rng.uniform(0.5, 2.5)),
    )


def _waves(seed: int, stream: int, channels: int, times: np.ndarray) -> np.ndarray:
    """(T, channels) smooth signals in about [-1, 1]: sums of slow sinusoids."""
    rng = np.random.default_rng([seed, stream])
    freq = rng.uniform(0.08, 0.7, (channels, _N_WAVES))
    phase = rng.uniform(0, 2 * np.pi, (channels, _N_WAVES))
    amp = rng.uniform(0.3, 1.0, (channels, _N_WAVES))
    amp /= amp.sum(1, keepdims=True)
    return np.einsum("cw,tcw->tc", amp, np.sin(2 * np.pi * freq[None] * times[:, None, None] + phase[None]))


def head_pose(motion: MotionParams, times: np.ndarray) -> np.ndarray:
    """(T, 6) pose at ``times`` (s): roll, yaw, pitch (degrees), dx, dy (frame fraction), zoom."""
    w = _waves(motion.seed, 0, 6, np.asarray(times, np.float64))
    amp = np.array([motion.roll, motion.yaw, motion.pitch, motion.shift, motion.shift * 0.7, motion.zoom])
    return (w * amp).astype(np.float32)


def blinks(motion: MotionParams, times: np.ndarray) -> np.ndarray:
    """(T,) eyelid closure in [0, 1] at ``times``: blinks of 0.12-0.25 s at random intervals."""
    times = np.asarray(times, np.float64)
    rng = np.random.default_rng([motion.seed, 1])
    out = np.zeros(len(times))
    t = rng.uniform(0.2, motion.blink_interval)
    end = times.max(initial=0.0)
    while t < end + 1.0:
        dur = rng.uniform(0.12, 0.25)
        x = (times - t) / dur
        closing = np.clip(x / 0.35, 0, 1)  # fast close, slower open
        opening = np.clip((1 - x) / 0.65, 0, 1)
        shape = np.where(x < 0.35, closing, opening) * ((x >= 0) & (x <= 1))
        out = np.maximum(out, np.sin(shape * np.pi / 2) ** 2)
        t += dur + rng.exponential(motion.blink_interval)
    return out.astype(np.float32)


def lighting(motion: MotionParams, times: np.ndarray) -> np.ndarray:
    """(T, 3): overall gain and horizontal / vertical light gradients at ``times``."""
    w = _waves(motion.seed, 2, 3, np.asarray(times, np.float64))
    return (np.array([1.0, 0.0, 0.0]) + w * motion.light * np.array([1.0, 2.0, 1.0])).astype(np.float32)


def _homography(
    pose: np.ndarray, pivot: tuple[float, float], size: tuple[int, int], radius: float
) -> np.ndarray:
    roll, yaw, pitch = np.deg2rad(pose[:3])
    dx, dy, zoom = pose[3:]
    h, w = size
    cz, sz, cy, sy, cx, sx = (
        np.cos(roll),
        np.sin(roll),
        np.cos(yaw),
        np.sin(yaw),
        np.cos(pitch),
        np.sin(pitch),
    )
    rot = (
        np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    )
    src = np.array([[-radius, -radius], [radius, -radius], [radius, radius], [-radius, radius]])
    focal = 3.0 * h
    p3 = np.concatenate([src, np.zeros((4, 1))], 1) @ rot.T + [0, 0, focal]
    dst = focal * p3[:, :2] / p3[:, 2:] * (1 + zoom) + np.asarray(pivot) + [dx * w, dy * h]
    return cv2.getPerspectiveTransform((src + pivot).astype(np.float32), dst.astype(np.float32))


def _box_through(hom: np.ndarray, box, scale: int) -> np.ndarray:
    x1, y1, x2, y2 = box
    corners = np.array([[[x1, y1], [x2, y1], [x2, y2], [x1, y2]]], np.float32)
    p = cv2.perspectiveTransform(corners, hom)[0] / scale
    return np.array([*p.min(0), *p.max(0)], np.float32)


def render_frames(
    face: FaceLayer, mouth: np.ndarray, motion: MotionParams, fps: float = 25.0, start: int = 0
) -> Iterator[RenderedFrame]:
    """Frames of ``face`` speaking the mouth track ``mouth`` (T, 4) under ``motion``.

    Frame ``i`` shows time ``(start + i + 0.5) / fps``; the output size is the layer size
    divided by ``face.scale``.  Yields ``RenderedFrame`` (image RGB uint8, face_box, mouth_box).
    """
    mouth = np.asarray(mouth, np.float32)
    if mouth.ndim != 2 or mouth.shape[1] != 4 or not np.isfinite(mouth).all():
        raise ValueError(
            f"mouth track must be finite (T, 4) (open, width, round, teeth), got shape {mouth.shape}"
        )
    mouth = np.clip(mouth, 0.0, 1.0)
    hs, ws = face.image.shape[:2]
    s = face.scale
    out_h, out_w = hs // s, ws // s
    times = (start + np.arange(len(mouth)) + 0.5) / fps
    poses, closed, light = head_pose(motion, times), blinks(motion, times), lighting(motion, times)
    jx1, jy1, jx2, jy2 = face.jaw_box
    grid_x, grid_y = np.meshgrid(np.arange(jx1, jx2, dtype=np.float32), np.arange(jy1, jy2, dtype=np.float32))
    radius = (face.face_box[3] - face.face_box[1]) / 2
    ramp_x = (np.arange(out_w, dtype=np.float32) / out_w - 0.5)[None, :, None]
    ramp_y = (np.arange(out_h, dtype=np.float32) / out_h - 0.5)[:, None, None]
    down = np.diag([1.0 / s, 1.0 / s, 1.0])
    up = np.diag([float(s), float(s), 1.0])
    opaque = face.alpha is None
    base = face.image if opaque else np.dstack([face.image, (face.alpha * 255.0 + 0.5).astype(np.uint8)])
    background = None
    if not opaque:
        background = cv2.resize(face.background, (out_w, out_h), interpolation=cv2.INTER_AREA).astype(
            np.float32
        )
    noise_rng = np.random.default_rng([motion.seed, 3])
    margin = 16
    noise_field = noise_rng.standard_normal((out_h + margin, out_w + margin, 1), np.float32) * motion.noise
    for i, params in enumerate(mouth):
        img = base.copy()
        drop = JAW_PER_GAP * GAP_PER_OPEN * face.mouth.half_width * float(params[0])
        if drop > 0.05:
            img[jy1:jy2, jx1:jx2] = cv2.remap(
                base, grid_x, grid_y - drop * face.jaw, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
        rgb = img[..., :3]
        draw_mouth(rgb, face.mouth, params)
        for eye in face.eyes:
            draw_eyelid(rgb, eye, float(closed[i]))
        hom = _homography(poses[i], face.pivot, (hs, ws), radius)
        hom_out = down @ hom @ up  # the same motion on the output-size image
        small = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_AREA)
        if opaque:
            small = cv2.warpPerspective(
                small, hom_out, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
            ).astype(np.float32)
        else:
            fg = cv2.warpPerspective(
                small, hom_out, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            ).astype(np.float32)  # body continues
            a = fg[..., 3:] * np.float32(1 / 255.0)
            small = background + (fg[..., :3] - background) * a
        gain, gx, gy = light[i]
        small *= gain * (1.0 + gx * ramp_x + gy * ramp_y)
        if motion.noise > 0:
            dy, dx = np.random.default_rng([motion.seed, 3, start + i]).integers(0, margin, 2)
            small += noise_field[dy : dy + out_h, dx : dx + out_w]
        image = np.clip(small + 0.5, 0, 255).astype(np.uint8)
        yield RenderedFrame(
            image, _box_through(hom, face.face_box, s), _box_through(hom, mouth_extent(face.mouth, params), s)
        )
