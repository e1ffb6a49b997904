"""Test media the suite makes itself: real public-domain face photos and short clips.

No talking-face video ships anywhere, so tests build theirs from the two
public-domain photos that ship inside installed packages (scikit-image's
astronaut, matplotlib's grace_hopper), moved and scaled along known paths, and
from generated speech-like audio.  Everything is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import numpy as np


@cache
def face_photo(name: str = "astronaut") -> np.ndarray:
    """A real face photo, RGB uint8 (H, W, 3). ``name``: "astronaut" (512x512) or "grace_hopper" (600x512)."""
    if name == "astronaut":
        import skimage.data

        img = skimage.data.astronaut()
    elif name == "grace_hopper":
        import matplotlib.cbook
        from PIL import Image

        img = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    else:
        raise ValueError(f"unknown photo {name!r}; choose 'astronaut' or 'grace_hopper'")
    img = np.ascontiguousarray(img[..., :3])
    img.setflags(write=False)
    return img


def place(photo: np.ndarray, size: tuple[int, int], center: tuple[float, float], scale: float,
          background: int = 40) -> np.ndarray:
    """Paste ``photo`` scaled by ``scale`` with its centre at ``center`` (x, y) on a (h, w) canvas."""
    import cv2

    h, w = size
    ph, pw = photo.shape[:2]
    m = np.array([[scale, 0, center[0] - scale * pw / 2], [0, scale, center[1] - scale * ph / 2]], np.float32)
    return cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(background,) * 3)


def speech_like(duration: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A speech-like float32 signal: voiced harmonics under a syllable-rate envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(duration * sr))) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3.5 * t + rng.uniform(0, 6)), 0, None) ** 0.7
    signal = 0.25 * envelope * voiced + 0.01 * rng.standard_normal(len(t))
    return signal.astype(np.float32)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float | Fraction = 25,
                audio: np.ndarray | None = None, sr: int = 16000, codec: str = "libx264",
                rotation: int | None = None) -> Path:
    """Write RGB uint8 frames (and optional mono float audio) with PyAV. Returns the path.

    ``rotation`` (degrees clockwise, as phones tag it) is stored as display-matrix metadata.
    """
    path = Path(path)
    fps = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as out:
        vs = None
        if audio is not None:
            acodec = {".webm": "libopus", ".mkv": "aac", ".avi": "mp3"}.get(path.suffix, "aac")
            as_ = out.add_stream(acodec, rate=48000 if acodec == "libopus" else sr)
            as_.layout = "mono"
        for frame in frames:
            if vs is None:
                vs = out.add_stream(codec, rate=fps)
                vs.height, vs.width = frame.shape[:2]
                vs.pix_fmt = "yuv420p"
                if codec == "libx264":
                    # one encoder thread: byte-identical fixtures from run to run
                    vs.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
                if rotation is not None:
                    # FFmpeg 8 drops the legacy clockwise "rotate" tag; PyAV writes a display
                    # matrix instead, whose angle is counter-clockwise.
                    vs.set_display_rotation(-rotation)
            for packet in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
        if vs is not None:
            for packet in vs.encode():
                out.mux(packet)
        if audio is not None:
            pcm = np.clip(np.asarray(audio, np.float32), -1, 1)
            af = av.AudioFrame.from_ndarray((pcm * 32767).astype(np.int16)[None], format="s16", layout="mono")
            af.sample_rate = sr
            af.pts = 0  # a timestamp lets the encoder trim its priming samples: audio stays aligned
            af.time_base = Fraction(1, sr)
            resampler = av.AudioResampler(format=as_.format.name, layout="mono", rate=as_.rate)
            for rf in resampler.resample(af) + resampler.resample(None):
                for packet in as_.encode(rf):
                    out.mux(packet)
            for packet in as_.encode(None):
                out.mux(packet)
    return path


def moving_face_frames(n: int, size: tuple[int, int] = (240, 320), photo: str = "astronaut",
                       path: Callable[[int], tuple[float, float, float]] | None = None) -> list[np.ndarray]:
    """``n`` frames of a photo moved along ``path(i) -> (cx, cy, scale)`` (default: a slow drift)."""
    h, w = size
    img = face_photo(photo)
    if path is None:
        def path(i: int) -> tuple[float, float, float]:
            return (w / 2 + 10 * np.sin(i / 8), h / 2 + 5 * np.cos(i / 10), 0.9 * h / img.shape[0])
    return [place(img, size, path(i)[:2], path(i)[2]) for i in range(n)]
