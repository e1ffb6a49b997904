"""Gradio dubbing demo: ``python -m lipsync.demo`` (or ``python demos/app.py``).

Two tabs.  *Dub*: a face video or photo (upload or webcam) and new speech (upload or
microphone) -> the dubbed video, a before/after video side by side and the run summary.
*MARLIN*: a face clip -> the masked input and the reconstruction of the loaded MARLIN model,
and the clip's features as a ``.npy`` download.  Runs offline (analytics off, fonts bundled).

Every request is checked before any work (upload size, duration, frame size, readable media)
and fails with one message in the page ("no face found" too); a failing request never stops
the server.  A queue with a concurrency limit keeps two users from exhausting memory.

>>> from lipsync.demo import DemoConfig, serve                        # doctest: +SKIP
>>> app, url = serve(DemoConfig(device="cpu"), port=7860, block=False)
>>> app.close()
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read when gradio is imported
os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ start-up chatter
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402 - after the environment above
import functools  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import OrderedDict  # noqa: E402
from collections.abc import Callable, Iterable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from .inference.options import BLEND_REGIONS, FACE_BACKENDS, LOOP_MODES, PRECISIONS, DubOptions  # noqa: E402

__all__ = ["DemoConfig", "DemoError", "Demo", "build_app", "build_options", "serve", "main", "OUTPUT_SIZES"]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".tar", ".bin", ".model")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".m4a", ".ogg", ".opus", ".aac")
OUTPUT_SIZES = {"original": None, "1080p": 1080, "720p": 720, "480p": 480, "360p": 360, "240p": 240}
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow")
MARLIN_STRATEGIES = ("random", "tube", "frame", "fasking", "fasking_opp")
SIDE_BY_SIDE_HEIGHT = 360  # each half of the before/after video is at most this tall
CELL = 160  # MARLIN tab: pixels per frame in the grid and the video (at least)


class DemoError(ValueError):
    """A request the demo refuses: names the file or value and the reason."""


@dataclass(frozen=True)
class DemoConfig:
    """How the demo server runs (``python -m lipsync.demo`` builds one from its flags)."""

    checkpoints_dir: Path = REPO_ROOT / "checkpoints"  # the files offered in the checkpoint menus
    assets_dir: Path = REPO_ROOT / "demos" / "assets"  # bundled example media
    checkpoint: str | None = None  # menu choice at start (default lipsync_default.safetensors or the first)
    device: str = "auto"  # auto (cuda, mps, cpu), cpu, cuda, cuda:N, mps
    precision: str = "auto"  # auto, fp32, fp16, bf16
    max_upload_mb: float = 100.0  # largest accepted upload, MiB
    max_seconds: float = 60.0  # longest accepted video / audio, seconds
    max_pixels: int = 3840 * 2160  # largest accepted frame, width * height
    concurrency: int = 1  # requests running at once (dubbing and MARLIN share the limit)
    max_queue: int = 16  # requests waiting; more are refused with a "queue is full" message
    work_dir: Path | None = None  # outputs of each request (default <tmp>/lipsync-demo)
    keep_hours: float = 2.0  # request folders older than this are deleted
    cached_models: int = 2  # loaded models kept in memory, per tab

    def __post_init__(self) -> None:
        problems = []
        if min(self.max_upload_mb, self.max_seconds, self.max_pixels, self.keep_hours) <= 0:
            problems.append("upload size, duration, pixel and age limits must be positive")
        if min(self.concurrency, self.max_queue, self.cached_models) < 1:
            problems.append("concurrency, queue size and model cache must be >= 1")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if problems:
            raise DemoError("; ".join(problems))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


# ----- pure helpers ---------------------------------------------------------------------------
def list_checkpoints(folder: str | os.PathLike) -> list[str]:
    """Names of the checkpoint files directly in ``folder`` (sorted; none when it is missing)."""
    p = Path(folder)
    if not p.is_dir():
        return []
    return sorted(f.name for f in p.iterdir() if f.is_file() and f.suffix.lower() in CHECKPOINT_SUFFIXES)


def find_examples(folder: str | os.PathLike) -> list[list[str | None]]:
    """Example rows ``[video, photo, speech]`` from a folder of media: every video or photo with
    the speech file of the same stem, else the first speech file.  Rows need a speech file."""
    p = Path(folder)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else []
    speech = [f for f in files if f.suffix.lower() in AUDIO_SUFFIXES]
    if not speech:
        return []
    rows = []
    for f in files:
        kind = f.suffix.lower()
        if kind in VIDEO_SUFFIXES or kind in IMAGE_SUFFIXES:
            match = next((a for a in speech if a.stem == f.stem), speech[0])
            rows.append([str(f), None, str(match)] if kind in VIDEO_SUFFIXES else [None, str(f), str(match)])
    return rows


def parse_numbers(text: str | None, n: int, what: str) -> tuple[int, ...] | None:
    """``"1, 2, 3, 4"`` -> (1, 2, 3, 4); empty -> None.  Raises :class:`DemoError`."""
    if text is None or not str(text).strip():
        return None
    try:
        values = tuple(int(round(float(v))) for v in str(text).replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise DemoError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return values


def build_options(face_backend: str = "mediapipe", face: str = "largest", box: str = "",
                  pads: str = "0,10,0,0", smooth: float = 5, max_gap: str | float | None = None,
                  resize: float = 1.0, blend: str = "lower_face", color_match: bool = False,
                  loop: str = "pingpong", keep_video: bool = False, fps: float = 25.0, crf: float = 18,
                  preset: str = "veryfast", batch_size: float = 16) -> DubOptions:
    """The :class:`DubOptions` of the advanced panel; each field means what its CLI flag means
    (``--face-backend --face --box --pads --smooth --max-gap --resize --blend --color-match --loop
    --keep-video --fps --crf --preset --batch-size``).  Bad values raise ``DubError``/``DemoError``."""
    return DubOptions().replace(
        face_backend=face_backend, face=str(face or "largest"), box=parse_numbers(box, 4, "face box"),
        pads=parse_numbers(pads, 4, "pads") or (0, 0, 0, 0), smooth_window=int(smooth),
        max_gap=_optional_int(max_gap, "max gap"), resize=float(resize), blend=blend,
        color_match=bool(color_match), loop=loop, keep_video=bool(keep_video), fps=float(fps or 25),
        crf=int(crf), preset=preset, batch_size=int(batch_size))


def _optional_int(value: str | float | None, what: str) -> int | None:
    if value is None or not str(value).strip():
        return None
    try:
        return int(round(float(value)))
    except ValueError:
        raise DemoError(f"{what} must be a whole number or empty, got {value!r}") from None


_CLI_HINTS = {"--face-backend haar": "the Haar face detector (advanced options)",
              "--box x1,y1,x2,y2": "a fixed face box (advanced options)",
              "--checkpoint PATH": "another checkpoint"}


def tidy_message(text: str, paths: Iterable[str] = ()) -> str:
    """An error for the page: upload folders cut from file paths, CLI flags named as UI options."""
    for p in paths:
        folder = os.path.dirname(str(p))
        if folder:
            text = text.replace(folder + os.sep, "")
    for flag, hint in _CLI_HINTS.items():
        text = text.replace(flag, hint)
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def even_size(width: float, height: float, max_height: int | None) -> tuple[int, int]:
    """(w, h) scaled to at most ``max_height`` tall, keeping the aspect ratio, both even."""
    scale = min(1.0, max_height / height) if max_height else 1.0
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


# ----- media checks and writing -------------------------------------------------------------
def check_upload(path: str | os.PathLike, what: str, max_bytes: int) -> Path:
    """The file exists and is at most ``max_bytes`` large."""
    p = Path(path)
    if not p.is_file():
        raise DemoError(f"{what} {p.name}: no such file")
    size = p.stat().st_size
    if size == 0:
        raise DemoError(f"{what} {p.name}: the file is empty")
    if size > max_bytes:
        raise DemoError(f"{what} {p.name}: {size / 2**20:.1f} MiB is over this demo's upload limit of "
                        f"{max_bytes / 2**20:g} MiB")
    return p


def check_visual(path: Path, max_seconds: float, max_pixels: int, what: str = "video"):
    """A readable video (at most ``max_seconds``) or photo of at most ``max_pixels``; its VideoInfo."""
    from marlin.video import VideoError, probe

    try:
        info = probe(path)
    except VideoError as e:  # names the file and why it cannot be read
        raise DemoError(f"{what} {e}") from e
    if info.width * info.height > max_pixels:
        raise DemoError(f"{path.name}: {info.width}x{info.height} frames are larger than this demo's limit "
                        f"of {max_pixels} pixels; choose a smaller output size or scale the video down")
    if not info.is_image and info.duration > max_seconds:
        raise DemoError(f"video {path.name}: {info.duration:.1f} s is longer than this demo's limit of "
                        f"{max_seconds:g} s (python -m lipsync.infer has no limit)")
    return info


def check_audio(path: Path, max_seconds: float) -> float:
    """A file with a readable audio track of at most ``max_seconds``; its duration in seconds."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DemoError(f"audio {path.name}: the file has no audio track")
            stream = container.streams.audio[0]
            seconds = container.duration / av.time_base if container.duration else None
            if seconds is None and stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise DemoError(f"audio {path.name}: cannot be read as audio ({e})") from e
    if seconds is None:  # no duration stored (some webm/ogg recordings): decode and count
        from audio import SAMPLE_RATE, load_audio

        seconds = len(load_audio(path, SAMPLE_RATE)) / SAMPLE_RATE
    if seconds > max_seconds:
        raise DemoError(f"audio {path.name}: {seconds:.1f} s is longer than this demo's limit of "
                        f"{max_seconds:g} s (python -m lipsync.infer has no limit)")
    return seconds


def write_mp4(frames: Iterable[np.ndarray], path: Path, fps: float | Fraction) -> Path:
    """Write RGB uint8 frames (all one even size) as h264 mp4, atomically; returns ``path``."""
    import av

    tmp = path.with_name(f".{path.stem}.partial.mp4")
    try:
        with av.open(str(tmp), "w", format="mp4") as out:
            stream = None
            for image in frames:
                if stream is None:
                    stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                    stream.height, stream.width = image.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": "20", "preset": "veryfast"}
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
            if stream is None:
                raise DemoError(f"{path.name}: no frames to write")
            for packet in stream.encode(None):
                out.mux(packet)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _resize(image: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    import cv2

    if image.shape[1] == size[0] and image.shape[0] == size[1]:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def scale_input(path: Path, max_height: int, work: Path) -> Path:
    """The video or photo scaled down to ``max_height`` (unchanged when it is not taller)."""
    from marlin.video import iter_frames, probe

    info = probe(path)
    if info.height <= max_height:
        return path
    size = even_size(info.width, info.height, max_height)
    frames = (_resize(f.image, size) for f in iter_frames(path, fps=None if info.is_image else info.fps))
    if info.is_image:
        from PIL import Image

        out = work / "input.png"
        Image.fromarray(next(frames)).save(out)
        return out
    return write_mp4(frames, work / "input.mp4", info.fps)


def _label(image: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the bottom-left corner (players cover the top corners with buttons)."""
    import cv2

    for colour, width in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(image, text, (6, image.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, width,
                    cv2.LINE_AA)
    return image


def before_frames(source, n: int, loop: str) -> Iterator[np.ndarray]:
    """The ``n`` input frames the dubbed frames were made from (looped as the dub was)."""
    count = 0
    forward = source.forward()
    try:
        for _, image in forward:
            if count >= n:
                break
            yield image
            count += 1
    finally:
        forward.close()
    if 0 < count < n:
        for _, image in source.replay(count, n, "freeze" if source.is_image else loop):
            yield image


def side_by_side(source: Path, dubbed: Path, out: Path, loop: str, image_fps: float) -> Path:
    """Input (left) and dubbed output (right), at most SIDE_BY_SIDE_HEIGHT tall, with the dub's audio."""
    from marlin.video import iter_frames, probe

    from .inference.source import FrameSource
    from .inference.writer import DubWriter

    src = FrameSource(source, image_fps=image_fps)
    info = probe(dubbed)
    w, h = even_size(*src.size, SIDE_BY_SIDE_HEIGHT)
    writer = DubWriter(out, (2 * w, h), src.fps, str(dubbed), info.duration, crf=23, preset="veryfast",
                       pad_audio_to_video=True)
    with writer:
        pairs = zip(before_frames(src, info.n_frames, loop), iter_frames(dubbed, fps=src.fps))
        for before, after in pairs:
            writer.write(np.concatenate([_label(_resize(before, (w, h)).copy(), "before"),
                                         _label(_resize(after.image, (w, h)).copy(), "after")], axis=1))
        writer.close()
    return out


def remove_old(folder: Path, max_age_s: float) -> None:
    """Delete request folders (``run-*``) older than ``max_age_s``."""
    limit = time.time() - max_age_s
    for child in folder.glob("run-*"):
        try:
            if child.stat().st_mtime < limit:
                shutil.rmtree(child, ignore_errors=True)
        except OSError:
            pass


# ----- MARLIN tab -----------------------------------------------------------------------------
def load_marlin_any(path: Path, device: Any = "cpu"):
    """A :class:`marlin.Marlin` from a MARLIN checkpoint, or the encoder (no decoder) of a
    MARLIN-conditioned lip-sync checkpoint."""
    import torch

    from marlin import Marlin

    try:
        return Marlin.from_file(path, map_location=device)
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        first = tidy_message(str(e))
    from . import checkpoints

    try:
        loaded = checkpoints.load(path)
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        raise DemoError(f"checkpoint {path.name}: neither a MARLIN checkpoint nor a lip-sync model "
                        f"({first})") from e
    encoder, config = getattr(loaded.model, "encoder", None), getattr(loaded.model, "marlin_config", None)
    if encoder is None or config is None:
        raise DemoError(f"checkpoint {path.name}: its {type(loaded.model).__name__} has no MARLIN encoder; "
                        "choose a MARLIN checkpoint or a MARLIN-conditioned lip-sync model")
    with torch.device("meta"):
        model = Marlin(config, with_decoder=False)
    model.encoder.load_state_dict(encoder.state_dict(), assign=True)
    return model.float().to(device).eval()


def first_window(path: Path, size: int, n_frames: int, crop_face: bool, sample_rate: int
                 ) -> tuple[list[np.ndarray], list[np.ndarray] | None, int]:
    """The first ``n_frames`` sampled frames as (size, size, 3) uint8 crops (the last one repeated
    for short clips), their region label maps when ``crop_face``, and how many had a face."""
    from marlin.features import prepare_frames
    from marlin.video import iter_frames

    def centre(image: np.ndarray) -> np.ndarray:
        return prepare_frames(image[None], size)[:, 0].permute(1, 2, 0).mul(255).round().byte().numpy()

    if crop_face:
        from marlin.face import marlin_crop, region_labels, track_video

        pairs = track_video(path)
    else:
        pairs = ((frame, None) for frame in iter_frames(path))
    crops, labels, found, box, marks = [], [], 0, None, None
    try:
        for i, (frame, track) in enumerate(pairs):
            if i % sample_rate:
                continue
            if track is not None and track.found:
                box, marks, found = track.box, track.landmarks, found + 1
            if box is None:
                crops.append(centre(frame.image))
                labels.append(np.zeros((size, size), np.uint8))
            else:
                crop, where = marlin_crop(frame.image, box, size)
                crops.append(crop)
                labels.append(region_labels(None if marks is None else where.to_crop(marks), crop.shape))
            if len(crops) == n_frames:
                break
    finally:
        pairs.close()
    if not crops:
        raise DemoError(f"clip {path.name}: no frames could be decoded")
    crops += [crops[-1]] * (n_frames - len(crops))
    labels += [labels[-1]] * (n_frames - len(labels))
    return crops, (labels if crop_face else None), found


def _frames(x) -> list[np.ndarray]:
    """(3, T, S, S) float in [0, 1] -> T uint8 (S, S, 3) images."""
    return list(x.clamp(0, 1).mul(255).round().byte().permute(1, 2, 3, 0).cpu().numpy())


@dataclass
class MarlinResult:
    grid: str  # png: rows clip / masked input / reconstruction, every other frame
    video: str  # mp4: clip | masked | reconstruction
    features: str  # npy: (W, E) or (W, N, E) float32
    summary: dict[str, Any] = field(default_factory=dict)


def explore_clip(model, clip: Path, work: Path, strategy: str = "tube", mask_ratio: float = 0.75,
                 crop_face: bool = True, seed: int = 0, keep_seq: bool = False,
                 progress: Callable[..., None] | None = None) -> MarlinResult:
    """Mask the first window of ``clip``, reconstruct it (when the model has a decoder) and save
    the features of every window (``marlin.extract_video``)."""
    import torch

    from marlin import extract_video, make_mask, patchify, unpatchify
    from marlin.video import probe

    report = progress or (lambda *a, **k: None)
    started = time.perf_counter()
    cfg = model.config
    if strategy.startswith("fasking") and not crop_face:
        raise DemoError(f"masking {strategy!r} needs face crops with landmarks: tick 'Crop the face'")
    if not 0 <= mask_ratio < 1:
        raise DemoError(f"mask ratio {mask_ratio} must be in [0, 1)")
    rate = 2 if probe(clip).n_frames >= 2 * cfg.n_frames else 1
    report(0.1, desc="reading the clip")
    crops, labels, found = first_window(clip, cfg.img_size, cfg.n_frames, crop_face, rate)
    if crop_face and found == 0:
        raise DemoError(f"clip {clip.name}: no face found in the sampled frames; untick 'Crop the face' "
                        "to use the centre of the frame")
    x = torch.from_numpy(np.stack(crops)).permute(3, 0, 1, 2).float().div(255)[None]  # (1, 3, T, S, S)
    regions = torch.from_numpy(np.stack(labels))[None] if labels is not None else None
    mask = make_mask(strategy, 1, cfg, regions=regions, generator=torch.Generator().manual_seed(seed),
                     mask_ratio=mask_ratio)
    patches = patchify(x, cfg)
    patches[~mask] = 0.5  # hidden tokens shown grey
    rows = [("clip", _frames(x[0])), ("masked input", _frames(unpatchify(patches, cfg)[0]))]
    summary: dict[str, Any] = {"model": cfg.name, "img_size": cfg.img_size, "n_frames": cfg.n_frames,
                               "tokens": cfg.n_tokens, "visible_tokens": int(mask.sum()),
                               "strategy": strategy, "mask_ratio": mask_ratio, "frame_step": rate,
                               "faces_in_window": found}
    if model.has_decoder:
        report(0.3, desc="reconstructing")
        recon = model.reconstruct(x.to(model.device), mask.to(model.device)).cpu()
        rows.append(("reconstruction", _frames(recon[0])))
        hidden = ~mask[0]
        err = (patchify(recon, cfg)[0][hidden] - patchify(x, cfg)[0][hidden]).pow(2).mean()
        summary["masked_patch_mse"] = round(float(err), 5)
    else:
        summary["reconstruction"] = "not available: this checkpoint holds only the encoder"
    report(0.5, desc="features of every window")
    feats = extract_video(model, clip, crop_face=crop_face, keep_seq=keep_seq, batch_size=4)
    features = work / f"{clip.stem}_marlin_features.npy"
    np.save(features, feats.features.numpy().astype(np.float32))
    scale = max(1, -(-CELL // cfg.img_size))
    side = cfg.img_size * scale

    def cell(image: np.ndarray, text: str = "") -> np.ndarray:
        big = _resize(image, (side, side), nearest=True).copy()
        return _label(big, text) if text else big

    strips = [[cell(f, name if k == 0 else "") for k, f in enumerate(frames[::2])] for name, frames in rows]
    grid = np.concatenate([np.concatenate(strip, axis=1) for strip in strips], axis=0)
    from PIL import Image

    grid_path = work / "marlin_grid.png"
    Image.fromarray(grid).save(grid_path)
    movie = (np.concatenate([cell(frames[t], name) for name, frames in rows], axis=1)
             for t in range(cfg.n_frames))
    video = write_mp4(movie, work / "marlin_masked_reconstruction.mp4", 8)
    summary.update(windows=len(feats), feature_shape=list(feats.features.shape),
                   window_start_s=[round(float(t), 3) for t in feats.start_times],
                   seconds=round(time.perf_counter() - started, 2))
    return MarlinResult(str(grid_path), str(video), str(features), summary)


# ----- request handlers ----------------------------------------------------------------------
class _ModelCache:
    """Loaded models by (path, size, mtime); least recently used dropped first; thread-safe."""

    def __init__(self, loader: Callable[[Path], Any], size: int) -> None:
        self.loader, self.size = loader, size
        self.items: OrderedDict[tuple, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, path: Path) -> Any:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        with self.lock:
            if key not in self.items:
                self.items[key] = self.loader(path)
                while len(self.items) > self.size:
                    self.items.popitem(last=False)
            self.items.move_to_end(key)
            return self.items[key]


class Demo:
    """The demo's request handlers, usable without a browser (tests, scripts).

    :meth:`dub` and :meth:`marlin` take file paths and option values and return output paths and
    a summary dict; bad input raises :class:`DemoError` (or the ``ValueError`` subclasses of the
    lower layers: ``DubError``, ``VideoError``, ``AudioError``), which the app shows as a message.
    """

    def __init__(self, config: DemoConfig | None = None) -> None:
        self.config = config or DemoConfig()
        self.work_dir = Path(self.config.work_dir or Path(tempfile.gettempdir()) / "lipsync-demo")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._dubbers = _ModelCache(self._load_dubber, self.config.cached_models)
        self._marlins = _ModelCache(self._load_marlin, self.config.cached_models)

    def checkpoint_choices(self) -> list[str]:
        return list_checkpoints(self.config.checkpoints_dir)

    def default_choice(self, prefer: str = "lipsync_default") -> str | None:
        """The configured checkpoint, else the first file whose name contains ``prefer``, else the first."""
        choices = self.checkpoint_choices()
        if self.config.checkpoint in choices:
            return self.config.checkpoint
        return next((c for c in choices if prefer in c.lower()), choices[0] if choices else None)

    def resolve_checkpoint(self, choice: str | None, path: str | None) -> Path:
        """A typed path wins over the menu choice; the menu names files in ``checkpoints_dir``."""
        if path and str(path).strip():
            p = Path(str(path).strip()).expanduser()
        elif choice:
            p = self.config.checkpoints_dir / Path(str(choice)).name
        else:
            raise DemoError(f"no checkpoint: put one in {self.config.checkpoints_dir} or type its path")
        if not p.is_file():
            raise DemoError(f"checkpoint {p}: {'is a directory' if p.is_dir() else 'no such file'}")
        return p

    def _load_dubber(self, path: Path):
        from .api import LipSync

        return LipSync.from_checkpoint(path, device=self.config.device, precision=self.config.precision)

    def _load_marlin(self, path: Path):
        from .inference.plan import resolve_device

        return load_marlin_any(path, resolve_device(self.config.device))

    def _request_dir(self) -> Path:
        remove_old(self.work_dir, self.config.keep_hours * 3600)
        return Path(tempfile.mkdtemp(prefix="run-", dir=self.work_dir))

    def dub(self, video: str | None, photo: str | None, audio: str | None, checkpoint: str | None = None,
            checkpoint_path: str | None = None, output_size: str = "original",
            options: DubOptions | None = None, progress: Callable[..., None] | None = None
            ) -> tuple[str, str, dict[str, Any]]:
        """Dub ``video`` (or, without one, ``photo``) with the speech in ``audio``.

        Returns
        -------
        (dubbed mp4, before/after mp4, summary dict: frames, faces_found, fps_achieved, ...)
        """
        report = progress or (lambda *a, **k: None)
        if not (video or photo):
            raise DemoError("give a video or a photo with a face (upload one or use the webcam)")
        if not audio:
            raise DemoError("give the new speech: upload an audio file or record one with the microphone")
        if output_size not in OUTPUT_SIZES:
            raise DemoError(f"output size {output_size!r} is not one of {', '.join(OUTPUT_SIZES)}")
        cfg = self.config
        source = check_upload(video or photo, "video" if video else "photo", cfg.max_upload_bytes)
        speech = check_upload(audio, "audio", cfg.max_upload_bytes)
        check_visual(source, cfg.max_seconds, cfg.max_pixels, "video" if video else "photo")
        check_audio(speech, cfg.max_seconds)
        options = options or DubOptions()
        ckpt = self.resolve_checkpoint(checkpoint, checkpoint_path)
        report(0.0, desc="loading the model")
        ls = self._dubbers.get(ckpt)
        work = self._request_dir()
        if OUTPUT_SIZES[output_size]:
            report(0.0, desc="scaling the input")
            source = scale_input(source, OUTPUT_SIZES[output_size], work)
        out = work / "dubbed.mp4"

        def frames_done(done: int, total: int) -> None:
            report((done, max(total, done)), desc="dubbing", unit="frames")

        summary = ls.dub(source, speech, out, options=options, progress=frames_done)
        report(0.99, desc="before/after video")
        both = side_by_side(source, out, work / "before_after.mp4", options.loop, options.fps)
        info = {"frames": summary.frames, "faces_found": summary.faces_found,
                "source_frames": summary.source_frames, "width": summary.width, "height": summary.height,
                "fps": round(summary.fps, 3), "duration_s": round(summary.duration, 3),
                "seconds": round(summary.seconds, 2), "fps_achieved": round(summary.fps_achieved, 2),
                "stage_seconds": {k: round(v, 2) for k, v in summary.stage_times.as_dict().items()},
                "checkpoint": ckpt.name, "device": str(ls.device), "summary": summary.line().split(" -> ")[0]}
        return str(out), str(both), info

    def marlin(self, clip: str | None, checkpoint: str | None = None, checkpoint_path: str | None = None,
               strategy: str = "tube", mask_ratio: float = 0.75, crop_face: bool = True, seed: float = 0,
               keep_seq: bool = False, progress: Callable[..., None] | None = None) -> MarlinResult:
        """Mask and reconstruct the first window of ``clip``; save the features of every window."""
        if not clip:
            raise DemoError("give a face clip (upload a video or record one with the webcam)")
        if strategy not in MARLIN_STRATEGIES:
            raise DemoError(f"masking strategy {strategy!r} is not one of {', '.join(MARLIN_STRATEGIES)}")
        cfg = self.config
        path = check_upload(clip, "clip", cfg.max_upload_bytes)
        check_visual(path, cfg.max_seconds, cfg.max_pixels, "clip")
        ckpt = self.resolve_checkpoint(checkpoint, checkpoint_path)
        (progress or (lambda *a, **k: None))(0.0, desc="loading MARLIN")
        model = self._marlins.get(ckpt)
        result = explore_clip(model, path, self._request_dir(), strategy, float(mask_ratio), bool(crop_face),
                              int(seed or 0), bool(keep_seq), progress)
        result.summary["checkpoint"] = ckpt.name
        return result


def _release_gpu_memory() -> None:
    """Give cached CUDA blocks back after a failed request (an out-of-memory error above all)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def guarded(fn: Callable) -> Callable:
    """A handler whose bad input becomes one clear message in the page (``gr.Error``); any other
    failure is logged and reported too, and the server keeps serving."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        files = [a for a in (*args, *kwargs.values()) if isinstance(a, str) and os.path.isfile(a)]
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as e:  # DemoError, DubError, AudioError, VideoError, CheckpointError
            message = tidy_message(str(e), files)
            log.warning("request refused: %s", message)
            raise gr.Error(message, duration=None, title="Cannot do this", print_exception=False) from e
        except MemoryError as e:
            _release_gpu_memory()
            raise gr.Error("out of memory: try a shorter clip or a smaller output size", duration=None) from e
        except Exception as e:  # noqa: BLE001 - one request's failure must not stop the server
            log.exception("request failed")
            _release_gpu_memory()
            text = tidy_message(f"{type(e).__name__}: {e}", files)
            if "out of memory" in text.lower():
                text = "out of GPU memory: try a shorter clip or a smaller output size"
            raise gr.Error(f"the request failed ({text}); the server is still running", duration=None) from e

    return wrapper


# ----- the app --------------------------------------------------------------------------------
_INTRO = """# MARLIN lip-sync
Give a face (video or photo) and new speech; the mouth is re-animated to speak it.
Runs on this machine; nothing is uploaded anywhere."""


def build_app(config: DemoConfig | None = None, demo: Demo | None = None):
    """The queued Gradio Blocks app: tab *Dub* (API name ``/dub``) and tab *MARLIN* (``/marlin``)."""
    import gradio as gr

    demo = demo or Demo(config)
    cfg, d = demo.config, DubOptions()
    choices = demo.checkpoint_choices()
    limits = f"Limits: {cfg.max_upload_mb:g} MiB per file, {cfg.max_seconds:g} s of video or audio."

    def dub(video: str | None, photo: str | None, audio: str | None, checkpoint: str | None,
            checkpoint_path: str, face_backend: str, face: str, box: str, pads: str, smooth: float,
            max_gap: str, resize: float, blend: str, color_match: bool, loop: str, keep_video: bool,
            fps: float, output_size: str, crf: float, preset: str, batch_size: float,
            progress=gr.Progress()):  # noqa: B008 - Gradio's progress idiom
        options = build_options(face_backend, face, box, pads, smooth, max_gap, resize, blend, color_match,
                                loop, keep_video, fps, crf, preset, batch_size)
        return demo.dub(video, photo, audio, checkpoint, checkpoint_path, output_size, options, progress)

    def marlin(clip: str | None, checkpoint: str | None, checkpoint_path: str, strategy: str,
               mask_ratio: float, crop_face: bool, seed: float, keep_seq: bool,
               progress=gr.Progress()):  # noqa: B008
        r = demo.marlin(clip, checkpoint, checkpoint_path, strategy, mask_ratio, crop_face, seed, keep_seq,
                        progress)
        return r.grid, r.video, r.features, r.summary

    def rescan():
        found = demo.checkpoint_choices()
        return gr.Dropdown(choices=found), gr.Dropdown(choices=found)

    age = int(cfg.keep_hours * 3600)  # Gradio's copies of uploads and outputs are deleted after this
    with gr.Blocks(title="MARLIN lip-sync", analytics_enabled=False, delete_cache=(max(60, age // 4), age)
                   ) as app:
        gr.Markdown(_INTRO)
        with gr.Tab("Dub", id="dub"):
            with gr.Row():
                with gr.Column():
                    with gr.Tab("Video"):
                        video = gr.Video(label="Face video", sources=["upload", "webcam"], include_audio=True,
                                         elem_id="dub-video")
                    with gr.Tab("Photo"):
                        photo = gr.Image(label="Face photo", sources=["upload", "webcam", "clipboard"],
                                         type="filepath", format="png", elem_id="dub-photo")
                    audio = gr.Audio(label="New speech", sources=["upload", "microphone"], type="filepath",
                                     elem_id="dub-audio")
                    with gr.Row():
                        ckpt = gr.Dropdown(choices, value=demo.default_choice(), label="Checkpoint",
                                           info=f"files in {cfg.checkpoints_dir}", scale=3)
                        rescan_btn = gr.Button("Rescan", size="sm", scale=1)
                    ckpt_path = gr.Textbox("", label="...or a checkpoint path",
                                           placeholder="/path/to/wav2lip_gan.pth")
                    with gr.Accordion("Advanced options (as python -m lipsync.infer)", open=False):
                        with gr.Row():
                            backend = gr.Dropdown(list(FACE_BACKENDS), value=d.face_backend,
                                                  label="Face detector")
                            face = gr.Textbox("largest", label="Face", info="largest, index:N or point:X,Y")
                            box = gr.Textbox("", label="Fixed face box",
                                             info="x1,y1,x2,y2 pixels: no detection")
                        with gr.Row():
                            pads = gr.Textbox(",".join(map(str, d.pads)), label="Pads",
                                              info="top,bottom,left,right")
                            smooth = gr.Slider(1, 25, d.smooth_window, step=1, label="Box smoothing (frames)")
                            max_gap = gr.Textbox("", label="Max gap (frames)",
                                                 info="empty: the tracker's default")
                        with gr.Row():
                            resize = gr.Slider(1, 4, d.resize, step=0.5, label="Detect on frames shrunk by")
                            blend = gr.Dropdown(list(BLEND_REGIONS), value=d.blend, label="Blend region")
                            color = gr.Checkbox(d.color_match, label="Match colour")
                        with gr.Row():
                            loop = gr.Radio(list(LOOP_MODES), value=d.loop, label="Audio longer than video")
                            keep = gr.Checkbox(d.keep_video, label="Keep the rest of a longer video")
                            fps = gr.Number(d.fps, label="Frame rate for a photo", minimum=1, maximum=240)
                        with gr.Row():
                            size = gr.Dropdown(list(OUTPUT_SIZES), value="original", label="Output size")
                            crf = gr.Slider(0, 51, d.crf, step=1, label="Quality (x264 CRF)")
                            preset = gr.Dropdown(list(X264_PRESETS), value=d.preset, label="x264 preset")
                            batch = gr.Slider(1, 64, d.batch_size, step=1, label="Batch size")
                    run = gr.Button("Dub", variant="primary", elem_id="dub-button")
                    gr.Markdown(limits)
                with gr.Column():
                    dubbed = gr.Video(label="Dubbed video", interactive=False, elem_id="dub-output")
                    both = gr.Video(label="Before | after", interactive=False, elem_id="dub-before-after")
                    summary = gr.JSON(label="Run summary", elem_id="dub-summary")
            rows = find_examples(cfg.assets_dir)
            if rows:
                gr.Examples(rows, inputs=[video, photo, audio], label=f"Examples from {cfg.assets_dir}")
            else:
                gr.Markdown(f"No bundled examples: put face videos and speech files in `{cfg.assets_dir}`.")
        with gr.Tab("MARLIN", id="marlin"):
            gr.Markdown("Mask a face clip as in MARLIN pretraining, see what the model reconstructs, and "
                        "download the clip's features (one row per window of frames).")
            with gr.Row():
                with gr.Column():
                    clip = gr.Video(label="Face clip", sources=["upload", "webcam"], include_audio=True,
                                    elem_id="marlin-clip")
                    m_ckpt = gr.Dropdown(choices, value=demo.default_choice("marlin"),
                                         label="MARLIN checkpoint",
                                         info="a MARLIN file, or a MARLIN lip-sync model (its encoder)")
                    m_path = gr.Textbox("", label="...or a checkpoint path",
                                        placeholder="marlin_vit_base_ytf.full.pt")
                    strategy = gr.Radio(list(MARLIN_STRATEGIES), value="tube", label="Masking")
                    ratio = gr.Slider(0.0, 0.95, 0.75, step=0.05, label="Mask ratio")
                    with gr.Row():
                        crop = gr.Checkbox(True, label="Crop the face")
                        seed = gr.Number(0, label="Seed", precision=0)
                        seq = gr.Checkbox(False, label="Per-token features")
                    m_run = gr.Button("Mask and reconstruct", variant="primary", elem_id="marlin-button")
                with gr.Column():
                    grid = gr.Image(label="Clip / masked input / reconstruction", type="filepath",
                                    interactive=False, elem_id="marlin-grid")
                    m_video = gr.Video(label="Clip | masked | reconstruction", interactive=False)
                    feats = gr.File(label="Features (.npy)", interactive=False, elem_id="marlin-features")
                    m_summary = gr.JSON(label="Summary", elem_id="marlin-summary")
        rescan_btn.click(rescan, None, [ckpt, m_ckpt], api_name=False, queue=False)
        dub_inputs = [video, photo, audio, ckpt, ckpt_path, backend, face, box, pads, smooth, max_gap, resize,
                      blend, color, loop, keep, fps, size, crf, preset, batch]
        run.click(guarded(dub), dub_inputs, [dubbed, both, summary], api_name="dub",
                  concurrency_limit=cfg.concurrency, concurrency_id="model")
        m_run.click(guarded(marlin), [clip, m_ckpt, m_path, strategy, ratio, crop, seed, seq],
                    [grid, m_video, feats, m_summary], api_name="marlin", concurrency_limit=cfg.concurrency,
                    concurrency_id="model")
    app.queue(max_size=cfg.max_queue, default_concurrency_limit=cfg.concurrency)
    app.demo = demo  # the handlers, for scripts and tests
    return app


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve(config: DemoConfig | None = None, host: str = "127.0.0.1", port: int | None = None,
          block: bool = True, quiet: bool = False):
    """Start the app on ``host:port`` (``None``: a free port).  Returns ``(app, url)``; with
    ``block=False`` it serves in the background until ``app.close()``."""
    app = build_app(config)
    demo: Demo = app.demo
    cfg = demo.config
    allowed = [str(p) for p in (cfg.assets_dir, demo.work_dir) if Path(p).is_dir()]
    _, url, _ = app.launch(server_name=host, server_port=port or free_port(host), prevent_thread_lock=True,
                           share=False, inbrowser=False, quiet=quiet, show_error=True, ssr_mode=False,
                           max_file_size=cfg.max_upload_bytes, allowed_paths=allowed, mcp_server=False,
                           enable_monitoring=False, pwa=False)
    if block:
        try:
            app.block_thread()
        finally:
            app.close()
    return app, url


def build_parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    p = argparse.ArgumentParser(
        prog="python -m lipsync.demo", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Local Gradio app: dub a face video or photo with new speech, and look inside MARLIN. "
                    "Runs offline; open the printed URL in a browser.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="TCP port (0: any free port)")
    p.add_argument("--checkpoints-dir", type=Path, default=d.checkpoints_dir,
                   help="checkpoints offered in the menus")
    p.add_argument("--checkpoint", help="menu choice at start, a file name in --checkpoints-dir (default: "
                                        "lipsync_default.safetensors when present, else the first file)")
    p.add_argument("--assets-dir", type=Path, default=d.assets_dir, help="folder of bundled example media")
    p.add_argument("--device", default=d.device,
                   help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision, help="compute precision")
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="requests that run at once")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="requests that may wait in the queue")
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help="largest upload, MiB")
    p.add_argument("--max-seconds", type=float, default=d.max_seconds, help="longest accepted video or audio")
    p.add_argument("--work-dir", type=Path, help="where outputs are written (default: <tmp>/lipsync-demo)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests
    try:
        if not args.checkpoints_dir.is_dir():
            raise DemoError(f"checkpoints folder {args.checkpoints_dir}: no such folder")
        if not 0 <= args.port < 65536:
            raise DemoError(f"port {args.port} is not in 0..65535")
        from .inference.plan import resolve_device

        resolve_device(args.device)
        config = DemoConfig(checkpoints_dir=args.checkpoints_dir, assets_dir=args.assets_dir,
                            checkpoint=args.checkpoint, device=args.device, precision=args.precision,
                            concurrency=args.concurrency, max_queue=args.max_queue,
                            max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds,
                            work_dir=args.work_dir)
        serve(config, host=args.host, port=args.port or None)
    except (ValueError, OSError) as e:  # bad flags, a taken port, an unwritable work folder
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
