"""One synthetic clip: its specification, synthesis, and files on disk.

A ``ClipSpec`` holds everything that fixes a clip (identity, motion, speech, timing, size);
``synthesize_clip`` turns it into frames, audio and ground truth; ``write_clip`` stores

- ``<name>.mp4``: H.264 video + AAC audio (mono, 16 kHz);
- ``<name>.npz``: per-frame ground truth (``mouth`` (T, 4), ``face_box`` (T, 4), ``mouth_box``
  (T, 4), ``blink`` (T,), ``pose`` (T, 6));
- ``<name>.json``: the sidecar with the spec and phoneme timings, enough to re-render the
  same face speaking any other audio (``lipsync.data.synthetic.speak``).

Every file is written to a temporary name beside its target and renamed when complete; the
sidecar comes last, so a clip with a sidecar is complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .faces import Identity, build_face, identity_from_dict, identity_to_dict, sample_identity
from .render import MotionParams, blinks, head_pose, render_frames, sample_motion
from .speech import Phoneme, SpeechParams, Utterance, random_sentence, sample_speech_params, synthesize
from .visemes import PARAMS, mouth_track

__all__ = [
    "FORMAT",
    "Clip",
    "ClipFiles",
    "ClipSpec",
    "read_sidecar",
    "sample_clip_spec",
    "synthesize_clip",
    "write_clip",
    "write_video",
]

FORMAT = "lipsync-synthetic/1"
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one clip."""

    seed: int
    identity: Identity
    motion: MotionParams
    speech: SpeechParams
    duration: float  # seconds; the clip has round(duration * fps) frames
    lead: float = 0.25  # silence before speech starts (s)
    fps: int = 25
    size: tuple[int, int] = (256, 256)  # (height, width)
    loudness: float = 0.5  # peak amplitude of the speech
    noise_db: float = -60.0  # level of the background noise floor (keeps mel features finite)

    @property
    def n_frames(self) -> int:
        return int(round(self.duration * self.fps))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["identity"] = identity_to_dict(self.identity)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ClipSpec:
        d = dict(d)
        d["identity"] = identity_from_dict(d["identity"])
        d["motion"] = MotionParams(**d["motion"])
        d["speech"] = SpeechParams(**d["speech"])
        d["size"] = tuple(d["size"])
        return cls(**d)


@dataclass
class Clip:
    """A synthesised clip in memory. Arrays are per frame (T = spec.n_frames)."""

    spec: ClipSpec
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    audio: np.ndarray  # (T * sr / fps,) float32 mono at 16 kHz
    phonemes: tuple[Phoneme, ...]  # times relative to the clip start
    mouth: np.ndarray  # (T, 4) float32 in [0, 1]: open, width, round, teeth
    face_box: np.ndarray  # (T, 4) float32 x1, y1, x2, y2 pixels
    mouth_box: np.ndarray  # (T, 4) float32
    blink: np.ndarray  # (T,) float32 eyelid closure
    pose: np.ndarray  # (T, 6) float32 roll, yaw, pitch (deg), dx, dy, zoom


@dataclass(frozen=True)
class ClipFiles:
    """Paths of a written clip."""

    video: Path
    track: Path
    sidecar: Path


def _fit_speech(rng: np.random.Generator, available: float) -> Utterance:
    """Speak a random sentence that ends within ``available`` seconds (the clip cuts what still overruns)."""
    params = sample_speech_params(rng, "")
    words = max(1, int(available * params.rate / 60))
    for _ in range(6):
        params = dataclasses.replace(params, text=random_sentence(rng, words))
        utt = synthesize(params, SAMPLE_RATE)
        if _speech_end(utt) <= available or words == 1:
            break
        words = max(1, min(words, len(params.text.split())) - 1)
    return utt


def _speech_end(utt: Utterance) -> float:
    spoken = [p.end for p in utt.phonemes if not p.symbol.startswith("_")]
    return max(spoken) if spoken else 0.0


def sample_clip_spec(
    seed: int,
    duration: float = 3.0,
    size: tuple[int, int] = (256, 256),
    fps: int = 25,
    photo_fraction: float = 0.2,
    identity_seed: int | None = None,
) -> ClipSpec:
    """Draw a clip specification from ``seed`` (identity from ``identity_seed`` when given).

    Speech is fitted to ``duration``: a random sentence, shortened until it ends at least 0.1 s
    before the clip does, after a random leading silence.
    """
    if duration <= 0.2:
        raise ValueError(f"clip duration must be > 0.2 s, got {duration}")
    rng = np.random.default_rng([seed, 0])
    ident = sample_identity(
        np.random.default_rng([seed if identity_seed is None else identity_seed, 1]), photo_fraction
    )
    motion = sample_motion(np.random.default_rng([seed, 2]))
    lead = float(rng.uniform(0.08, min(0.35, duration * 0.15)))
    utt = _fit_speech(rng, max(duration - lead - 0.1, 0.1))
    return ClipSpec(
        seed=seed,
        identity=ident,
        motion=motion,
        speech=utt.params,
        duration=float(duration),
        lead=round(lead, 4),
        fps=fps,
        size=tuple(size),
        loudness=float(rng.uniform(0.3, 0.8)),
        noise_db=float(rng.uniform(-65, -50)),
    )


def _clip_audio(spec: ClipSpec, utt: Utterance) -> tuple[np.ndarray, tuple[Phoneme, ...]]:
    n = spec.n_frames * SAMPLE_RATE // spec.fps
    audio = np.zeros(n, np.float32)
    start = int(round(spec.lead * SAMPLE_RATE))
    speech = utt.wav[: max(0, n - start)]
    peak = float(np.abs(speech).max(initial=0.0))
    if peak > 0:
        audio[start : start + len(speech)] = speech * (spec.loudness / peak)
    noise = np.random.default_rng([spec.seed, 4]).standard_normal(n).astype(np.float32)
    audio += noise * np.float32(10 ** (spec.noise_db / 20))
    shifted = tuple(
        Phoneme(p.symbol, round(p.start + spec.lead, 5), round(p.end + spec.lead, 5))
        for p in utt.phonemes
        if p.start + spec.lead < spec.duration
    )
    return np.clip(audio, -1, 1), shifted


def synthesize_clip(spec: ClipSpec, mouth: np.ndarray | None = None) -> Clip:
    """Speak and render ``spec``; with ``mouth`` (T, 4) render that track instead of the speech's."""
    utt = synthesize(spec.speech, SAMPLE_RATE)
    audio, phonemes = _clip_audio(spec, utt)
    n = spec.n_frames
    if mouth is None:
        mouth = mouth_track(phonemes, n, spec.fps, articulation=spec.identity.articulation)
    face = build_face(spec.identity, spec.size)
    rendered = list(render_frames(face, mouth, spec.motion, spec.fps))
    times = (np.arange(n) + 0.5) / spec.fps
    return Clip(
        spec,
        np.stack([r.image for r in rendered]),
        audio,
        phonemes,
        np.asarray(mouth, np.float32),
        np.stack([r.face_box for r in rendered]),
        np.stack([r.mouth_box for r in rendered]),
        blinks(spec.motion, times),
        head_pose(spec.motion, times),
    )


def _atomic(path: Path, suffix: str):
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_video(
    path: str | Path,
    frames: np.ndarray,
    audio: np.ndarray | None,
    fps: int = 25,
    sample_rate: int = SAMPLE_RATE,
    crf: int = 20,
) -> Path:
    """Encode RGB frames (T, H, W, 3) uint8 as H.264 (+ mono AAC audio) into ``path``, atomically."""
    path = Path(path)
    tmp = _atomic(path, path.suffix or ".mp4")
    try:
        with av.open(str(tmp), "w", format="mp4") as out:
            vs = out.add_stream("libx264", rate=fps)
            vs.height, vs.width = frames.shape[1:3]
            vs.pix_fmt = "yuv420p"
            vs.options = {"crf": str(crf), "preset": "veryfast"}
            if audio is not None:
                aus = out.add_stream("aac", rate=sample_rate, layout="mono")
                aus.bit_rate = 64000
            for frame in frames:
                out.mux(vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            out.mux(vs.encode(None))
            if audio is not None:
                pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)[None]
                af = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
                af.sample_rate = sample_rate
                # a timestamp lets the encoder mark its 1024 priming samples (mp4 edit list), so
                # decoders drop them and the audio starts with the first video frame
                af.pts = 0
                af.time_base = Fraction(1, sample_rate)
                resampler = av.AudioResampler(format=aus.format.name, layout="mono", rate=sample_rate)
                for rf in resampler.resample(af) + resampler.resample(None):
                    out.mux(aus.encode(rf))
                out.mux(aus.encode(None))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_clip(clip: Clip, out_dir: str | Path, name: str) -> ClipFiles:
    """Write ``<name>.mp4``, ``<name>.npz`` and (last) ``<name>.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ClipFiles(out_dir / f"{name}.mp4", out_dir / f"{name}.npz", out_dir / f"{name}.json")
    write_video(files.video, clip.frames, clip.audio, clip.spec.fps)
    tmp = _atomic(files.track, ".npz")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                mouth=clip.mouth,
                face_box=clip.face_box,
                mouth_box=clip.mouth_box,
                blink=clip.blink,
                pose=clip.pose,
                params=np.array(PARAMS),
            )
        os.replace(tmp, files.track)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar = {
        "format": FORMAT,
        "video": files.video.name,
        "track": files.track.name,
        "n_frames": clip.spec.n_frames,
        "sample_rate": SAMPLE_RATE,
        "spec": clip.spec.to_dict(),
        "phonemes": [[p.symbol, p.start, p.end] for p in clip.phonemes],
    }
    tmp = _atomic(files.sidecar, ".json")
    try:
        tmp.write_text(json.dumps(sidecar, indent=1))
        os.replace(tmp, files.sidecar)
    finally:
        tmp.unlink(missing_ok=True)
    return files


def read_sidecar(path: str | Path) -> tuple[ClipSpec, dict]:
    """Load a clip sidecar (``.json``, or the ``.mp4`` / ``.npz`` next to it) -> (spec, raw dict).

    Raises ValueError naming the path when it is not a synthetic-clip sidecar.
    """
    path = Path(path)
    side = path if path.suffix == ".json" else path.with_suffix(".json")
    try:
        d = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{side}: not a readable synthetic-clip sidecar ({e})") from e
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        found = d.get("format") if isinstance(d, dict) else None
        raise ValueError(f"{side}: not a synthetic-clip sidecar (format {found!r}, expected {FORMAT!r})")
    return ClipSpec.from_dict(d["spec"]), d
