"""Lip-sync datasets over the preprocessed clip layout (``marlin.data``, written by ``lipsync.preprocess``).

Two kinds of samples, both keyed like :class:`marlin.training.ResumableBatchSampler` keys
``(clip_index, sample_seed)`` (every random choice comes from ``sample_seed``, so a batch never
depends on worker processes and a resumed run sees the same data), or by a plain int for a fixed
sample (the centre window, used for evaluation):

* :class:`LipSyncDataset` -- generator samples: ``n_frames`` consecutive frames (5 for Wav2Lip,
  16 for the MARLIN generator), the same frames with rows ``S//2:`` zeroed, a reference window
  of ``n_frames`` other frames of the same clip, and one mel window per frame.
* :class:`SyncDataset` -- sync-expert samples: lower halves of ``n_frames`` consecutive frames
  and an audio window that is either the matching one (label 1) or one shifted by
  ``min_offset .. max_offset`` frames inside the same clip (label 0; default up to 50 frames,
  2 s at 25 fps: the release found that limiting the offset helps).

Mel windows follow the project convention, ``"inference"`` (``audio.mel_windows``): video frame
``i`` at 25 fps pairs with the 16 mel columns from ``floor(80 i / 25)``.  The audio window of a
run of ``T`` frames starting at frame ``k`` is the ``mel_columns(T)`` columns from the same
start (16 for 5 frames -- Wav2Lip's expert window -- and 64 for 16 frames); windows that run past
the end of the audio are moved back to end at its last column.  Clip mels are computed on first
use and cached per process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from audio import AudioError, load_audio, mel_window_starts, melspectrogram
from marlin.data import Clip, DataError, read_clip, split_clips
from marlin.face.regions import REGIONS

from .sync_measure import mouth_geometry, mouth_opening, mouth_teeth, mouth_width

log = logging.getLogger(__name__)

__all__ = ["FPS", "mel_columns", "frame_mel_start", "LipSyncDataset", "SyncDataset", "OpeningDataset",
           "ClipSetUnion", "fixed_keys", "collate_keys"]

FPS = 25  #: frame rate of the preprocessed layout
REFERENCES = ("window", "counterfactual")  #: where a LipSyncDataset's reference window comes from
COUNTERFACTUAL = "counterfactual.npy"  #: lipsync.data.synthetic.counterfactual's file in a clip
MEL_PER_SECOND = 80


def mel_columns(n_frames: int) -> int:
    """Mel columns covering a run of ``n_frames`` frames at 25 fps: the last frame's start plus 16.

    ``mel_columns(5) == 28``, ``mel_columns(16) == 64`` (the MARLIN sync expert's input).
    """
    return (MEL_PER_SECOND * (n_frames - 1)) // FPS + 16


def frame_mel_start(frame: int) -> int:
    """First mel column of video frame ``frame`` at 25 fps ("inference" convention)."""
    return (MEL_PER_SECOND * frame) // FPS


def _columns(mel: np.ndarray, start: int, width: int) -> np.ndarray:
    """``width`` columns of ``mel`` (80, T) from ``start``, moved back to fit inside the audio."""
    n = mel.shape[1]
    if n < width:  # shorter than one window: repeat the last column
        mel = np.concatenate([mel, np.repeat(mel[:, -1:], width - n, axis=1)], axis=1)
        n = width
    start = int(min(max(start, 0), n - width))
    return mel[:, start:start + width]


def fixed_keys(n: int, length: int, seed: int = 0) -> list[tuple[int, int]]:
    """``n`` fixed ``(clip_index, sample_seed)`` keys cycling over ``length`` clips (evaluation sets)."""
    return [(i % length, int(np.random.SeedSequence([seed, 7, i]).generate_state(1)[0])) for i in range(n)]


def collate_keys(dataset: Dataset, keys: Sequence[Any]) -> dict[str, Any]:
    """Items of ``keys`` stacked like the default collate (tensors stacked, numbers as tensors)."""
    from torch.utils.data import default_collate

    return default_collate([dataset[k] for k in keys])


class _ClipSet(Dataset):
    """Clips with audio, opened lazily; shared by both datasets."""

    def __init__(self, root: str | Path, clip_ids: Sequence[str] | None, split: str, n_frames: int,
                 min_frames: int, val_fraction: float):
        self.root = Path(root)
        ids = list(clip_ids) if clip_ids is not None else split_clips(self.root, split, val_fraction)
        if n_frames < 1:
            raise DataError(f"n_frames must be >= 1, got {n_frames}")
        self.n_frames = n_frames
        kept, lengths, short = [], [], []
        for cid in ids:
            clip = read_clip(self.root, cid)
            if clip.audio_path is None:
                raise DataError(f"{clip.path}: no audio.wav (lip-sync training needs the clip's audio)")
            if clip.n_frames < min_frames:
                short.append(cid)
                continue
            kept.append(cid)
            lengths.append(clip.n_frames)
        if short:
            log.warning("%d of %d clips are shorter than %d frames and are left out: %s", len(short),
                        len(ids), min_frames, ", ".join(short[:5]) + (" ..." if len(short) > 5 else ""))
        if not kept:
            raise DataError(f"{self.root}: no clip of split {split!r} has the {min_frames} frames "
                            "a sample needs")
        self.clip_ids = kept
        self.lengths = np.asarray(lengths)
        self._clips: dict[int, Clip] = {}
        self._mels: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.clip_ids)

    def clip(self, index: int) -> Clip:
        if index not in self._clips:
            self._clips[index] = read_clip(self.root, self.clip_ids[index])
        return self._clips[index]

    def mel(self, index: int) -> np.ndarray:
        """(80, T_mel) float32 mel of clip ``index`` (computed once per process)."""
        if index not in self._mels:
            clip = self.clip(index)
            try:
                self._mels[index] = melspectrogram(load_audio(clip.audio_path))
            except AudioError as e:
                raise DataError(f"{clip.audio_path}: {e}") from e
        return self._mels[index]

    def frame_mels(self, index: int, start: int, count: int) -> np.ndarray:
        """(count, 80, 16) per-frame mel windows of frames ``start .. start + count - 1``."""
        mel = self.mel(index)
        if mel.shape[1] < 16:
            mel = _columns(mel, 0, 16)
        starts = mel_window_starts(mel, FPS, n_frames=start + count)[start:]
        return np.stack([mel[:, s:s + 16] for s in starts])

    def frames(self, index: int, start: int, count: int, size: int | tuple[int, int],
               lower: bool = False) -> torch.Tensor:
        """(count, 3, h, w) float32 RGB in [0, 1] of frames from ``start`` (last frame repeated).

        ``size``: the side of the whole face, or ``(h, w)`` of its lower half when ``lower``.
        """
        clip = self.clip(index)
        idx = np.minimum(np.arange(start, start + count), clip.n_frames - 1)
        pixels = clip.frames[idx, clip.size // 2:] if lower else clip.frames[idx]
        return _to_tensor(pixels, size)

    def opening(self, index: int, start: int, count: int) -> torch.Tensor:
        """(count,) float32 mouth opening of frames from ``start`` (NaN without mediapipe landmarks)."""
        return self._mesh_measure(mouth_opening, index, start, count)

    def width(self, index: int, start: int, count: int) -> torch.Tensor:
        """(count,) float32 mouth width of frames from ``start`` (NaN without mediapipe landmarks)."""
        return self._mesh_measure(mouth_width, index, start, count)

    def geometry(self, index: int, start: int, count: int) -> torch.Tensor:
        """(count, 5) float32 where the mouth is in frames from ``start``
        (``lipsync.data.sync_measure.mouth_geometry``; NaN without mediapipe landmarks)."""
        size = self.clip(index).size
        return self._mesh_measure(lambda lm: mouth_geometry(lm, size), index, start, count, (5,))

    def teeth(self, index: int, start: int, count: int) -> torch.Tensor:
        """(count,) float32 tooth area showing in frames from ``start``
        (``lipsync.data.sync_measure.mouth_teeth`` of the stored frames; NaN without mediapipe landmarks)."""
        clip = self.clip(index)
        idx = np.minimum(np.arange(start, start + count), clip.n_frames - 1)
        return self._mesh_measure(lambda lm: mouth_teeth(clip.frames[idx], lm), index, start, count)

    def _mesh_measure(self, measure, index: int, start: int, count: int,
                      columns: tuple[int, ...] = ()) -> torch.Tensor:
        """``measure`` of the stored landmarks of frames from ``start``, ``(count, *columns)``
        float32; NaN for clips without mediapipe landmarks."""
        clip = self.clip(index)
        if clip.landmarks is None or clip.landmarks.shape[1] not in (468, 478):
            return torch.full((count, *columns), float("nan"))
        idx = np.minimum(np.arange(start, start + count), clip.n_frames - 1)
        return torch.from_numpy(np.asarray(measure(clip.landmarks[idx]), np.float32))

    @staticmethod
    def _key(key: int | tuple[int, int]) -> tuple[int, np.random.Generator | None]:
        if isinstance(key, (int, np.integer)):
            return int(key), None
        return int(key[0]), np.random.default_rng(int(key[1]))


def _to_tensor(pixels: np.ndarray, size: int | tuple[int, int]) -> torch.Tensor:
    """(N, h, w, 3) uint8 -> (N, 3, size) float32 in [0, 1] (bilinear, antialiased when shrinking)."""
    video = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float().div_(255.0)
    h, w = (size, size) if isinstance(size, int) else size
    if video.shape[-2:] == (h, w):
        return video
    shrink = video.shape[-1] > w
    video = F.interpolate(video, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
    return video.clamp_(0.0, 1.0)


class ClipSetUnion(Dataset):
    """Several clip datasets read as one: index ``i`` (or key ``(i, seed)``) runs through the
    first dataset's clips, then the next one's.  Items are the parts' items unchanged.

    Not ``torch.utils.data.ConcatDataset``: that one takes only integer indices, and the trainers'
    samplers give ``(clip, seed)`` keys, which must reach the part with their seed.
    """

    def __init__(self, parts: Sequence[Any]):
        if not parts:
            raise ValueError("ClipSetUnion needs at least one dataset")
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index = int(key[0] if isinstance(key, tuple) else key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        local = index - int(self.offsets[part])
        return self.parts[part][(local, key[1]) if isinstance(key, tuple) else local]


class LipSyncDataset(_ClipSet):
    """Generator samples: ``n_frames`` target frames, masked copies, a reference window, mels.

    Parameters
    ----------
    root : preprocessed data folder.
    clip_ids : clips to use (default: the ``split`` of ``root``, see ``marlin.data.split_clips``).
    split : "train", "val" or "all".
    n_frames : frames per sample (5 for Wav2Lip, 16 for the MARLIN generator).
    size : face side the generator takes (crops are resized).
    val_fraction : identity share for val when ``root`` has no val.txt.
    reference : where the reference window comes from.  ``"window"``: another window of the clip
        (see :meth:`starts`), as Wav2Lip trains.  ``"counterfactual"``: the target frames
        themselves as the clip's ``counterfactual.npy`` shows them, the same face, pose and light
        with a mouth speaking other speech (written for synthetic clips by
        ``python -m lipsync.data.synthetic.counterfactual``): what inference gives a generator,
        the frames it dubs, whose mouth does not follow the new audio.  Every clip must have one.

    Items (dict)
    ------------
    faces : (6, T, S, S) float32 RGB in [0, 1]: channels 0-2 the target with rows ``S//2:``
        zeroed, 3-5 the reference window (T other frames of the same clip, not overlapping the
        target's where the clip is long enough; see :meth:`starts`).
    target : (3, T, S, S) float32 the true frames.
    mels : (T, 1, 80, 16) float32 in [-4, 4], frame ``i``'s window ("inference" convention).
    window_mel : (1, 80, mel_columns(T)) the audio of the whole run (the sync experts' input).
    mouth : (1, T, S, S) float32 in {0, 1}: the lips' region (regions.npy id 5) grown by about
        S/16 pixels, for a mouth-weighted loss; all zeros for clips preprocessed without regions.
    opening : (T,) float32 inner-lip opening of each target frame relative to the eye-corner
        distance (``lipsync.data.sync_measure.mouth_opening`` of the stored landmarks; about 0
        closed, 0.3-0.5 wide open), NaN for clips without mediapipe landmarks.
    width : (T,) float32 distance between the mouth corners of each target frame relative to the
        eye-corner distance (``lipsync.data.sync_measure.mouth_width``), NaN without landmarks.
    teeth : (T,) float32 how much tooth shows in each target frame, tooth-like area inside the
        inner lips over the squared eye-corner distance (``lipsync.data.sync_measure.mouth_teeth`` of
        the stored frames; 0 to about 0.02), NaN without landmarks.
    geometry : (T, 5) float32 where each target frame's mouth is in the crop (mouth corners'
        midpoint, their direction, the eye-corner distance: ``mouth_geometry`` of the stored
        landmarks), for ``mouth_map`` generators; NaN without landmarks.
    rest : int, the reference window's frame with the most closed mouth (smallest landmark
        opening; 0 without landmarks), for ``reference_fill="rest"`` generators (with
        ``reference="counterfactual"``, from the target's openings: the counterfactual's are not measured).
    index, start, ref_start : ints.
    """

    def __init__(self, root: str | Path, clip_ids: Sequence[str] | None = None, *, split: str = "train",
                 n_frames: int = 5, size: int = 96, val_fraction: float = 0.1, reference: str = "window"):
        super().__init__(root, clip_ids, split, n_frames, n_frames, val_fraction)
        self.size = size
        if reference not in REFERENCES:
            raise DataError(f"reference {reference!r}: choose {' or '.join(map(repr, REFERENCES))}")
        self.reference = reference
        if reference == "counterfactual":
            missing = [cid for cid in self.clip_ids if not (self.root / cid / COUNTERFACTUAL).exists()]
            if missing:
                raise DataError(f"{self.root}: {len(missing)} of {len(self.clip_ids)} clips have no "
                                f"{COUNTERFACTUAL} (first: {missing[0]}); write them with python -m "
                                "lipsync.data.synthetic.counterfactual --data " + str(self.root))
        self._counterfactuals: dict[int, np.ndarray] = {}

    def counterfactual(self, index: int, start: int, count: int) -> torch.Tensor:
        """(count, 3, S, S) float32 RGB in [0, 1]: frames from ``start`` of clip ``index``'s
        ``counterfactual.npy`` (last frame repeated), resized to ``size``."""
        if index not in self._counterfactuals:
            array = np.load(self.clip(index).path / COUNTERFACTUAL, mmap_mode="r")
            if array.shape != self.clip(index).frames.shape:
                raise DataError(f"{self.clip(index).path / COUNTERFACTUAL}: shape {array.shape} does not "
                                f"match frames.npy {self.clip(index).frames.shape}")
            self._counterfactuals[index] = array
        array = self._counterfactuals[index]
        idx = np.minimum(np.arange(start, start + count), len(array) - 1)
        return _to_tensor(array[idx], self.size)

    def starts(self, index: int, rng: np.random.Generator | None) -> tuple[int, int]:
        """(target start, reference start) of a sample; fixed (centre, then farthest) without ``rng``.

        The reference window never overlaps the target window (when the clip is long enough:
        otherwise it is the farthest start).  Inference takes the input frames themselves as the
        reference, so a generator must learn to ignore the reference's mouth; a reference a few
        frames from the target has nearly the same mouth and teaches it to copy it instead, and
        the dub would then follow the original speech.
        """
        room = int(self.lengths[index]) - self.n_frames  # valid starts: 0 .. room
        if rng is None:
            start = room // 2
            return start, 0 if start - 0 >= room - start else room
        start = int(rng.integers(0, room + 1))
        far = np.r_[0:max(start - self.n_frames + 1, 0), min(start + self.n_frames, room + 1):room + 1]
        if len(far):
            return start, int(rng.choice(far))
        return start, 0 if start >= room - start else room

    def mouth(self, index: int, start: int, count: int, size: int) -> torch.Tensor:
        """(1, count, size, size) float32 lips mask of frames from ``start`` (zeros without regions)."""
        clip = self.clip(index)
        if clip.regions is None:
            return torch.zeros(1, count, size, size)
        idx = np.minimum(np.arange(start, start + count), clip.n_frames - 1)
        lips = clip.regions[idx] == REGIONS["mouth"]
        lips = torch.from_numpy(np.ascontiguousarray(lips)).float()[:, None]
        grow = max(1, clip.size // 16)  # the lips' surroundings (chin, teeth shadow) move with them
        lips = F.max_pool2d(lips, 2 * grow + 1, stride=1, padding=grow)
        if lips.shape[-1] != size:
            lips = F.interpolate(lips, size=(size, size), mode="bilinear", align_corners=False)
            lips = lips.gt_(0.5).float()
        return lips.transpose(0, 1)

    def rest(self, index: int, ref: int) -> int:
        """The frame of the reference window from ``ref`` with the most closed mouth (the ``rest`` item)."""
        from lipsync.models.marlin_generator import rest_frames

        return int(rest_frames(self.opening(index, ref, self.n_frames), self.n_frames)[0])

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = self._key(key)
        start, ref = self.starts(index, rng)
        t, s = self.n_frames, self.size
        target = self.frames(index, start, t, s).transpose(0, 1)  # (3, T, S, S)
        if self.reference == "counterfactual":  # the same frames, speaking other speech
            ref = start
            reference = self.counterfactual(index, start, t).transpose(0, 1)
        else:
            reference = self.frames(index, ref, t, s).transpose(0, 1)
        masked = target.clone()
        masked[:, :, s // 2:] = 0.0
        mels = torch.from_numpy(self.frame_mels(index, start, t))[:, None]  # (T, 1, 80, 16)
        window = _columns(self.mel(index), frame_mel_start(start), mel_columns(t))
        return {"faces": torch.cat([masked, reference]), "target": target, "mels": mels,
                "window_mel": torch.from_numpy(np.ascontiguousarray(window))[None],
                "mouth": self.mouth(index, start, t, s), "opening": self.opening(index, start, t),
                "width": self.width(index, start, t), "geometry": self.geometry(index, start, t),
                "teeth": self.teeth(index, start, t),
                "rest": self.rest(index, ref),
                "index": index, "start": start, "ref_start": ref}


class SyncDataset(_ClipSet):
    """Sync-expert samples: lower-half frames with an in-sync or shifted audio window.

    Parameters
    ----------
    root, clip_ids, split, val_fraction : as :class:`LipSyncDataset`.
    n_frames : 5 (Wav2Lip's expert) or 16 (the MARLIN expert).
    face_size : (h, w) of the lower halves: rows ``S//2:`` of the stored crops resized to it.
    mel_width : audio columns per sample (default ``mel_columns(n_frames)`` for ``n_frames`` > 5,
        16 for 5 frames -- the release expert's 0.2 s window).
    max_offset, min_offset : a negative's audio starts ``min_offset .. max_offset`` frames before
        or after the video (inside the clip); clips too short for any negative are left out.
    positive_fraction : share of in-sync samples.

    Items (dict)
    ------------
    lower : (3, T, h, w) float32 RGB in [0, 1].
    mel : (1, 80, mel_width) float32 in [-4, 4].
    label : float32 1.0 in sync, 0.0 shifted.
    offset : int, audio start minus video start in frames (0 for positives).
    index, start : ints.
    """

    def __init__(self, root: str | Path, clip_ids: Sequence[str] | None = None, *, split: str = "train",
                 n_frames: int = 5, face_size: tuple[int, int] = (48, 96), mel_width: int | None = None,
                 max_offset: int = 50, min_offset: int = 5, positive_fraction: float = 0.5,
                 val_fraction: float = 0.1):
        if not 1 <= min_offset <= max_offset:
            raise DataError(f"need 1 <= min_offset <= max_offset, got {min_offset}, {max_offset}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise DataError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        super().__init__(root, clip_ids, split, n_frames, n_frames + min_offset, val_fraction)
        self.face_size = (int(face_size[0]), int(face_size[1]))
        self.mel_width = mel_width or (16 if n_frames <= 5 else mel_columns(n_frames))
        self.max_offset, self.min_offset, self.positive_fraction = max_offset, min_offset, positive_fraction

    def _offsets(self, index: int, start: int) -> np.ndarray:
        room = int(self.lengths[index]) - self.n_frames
        d = np.arange(-self.max_offset, self.max_offset + 1)
        d = d[(np.abs(d) >= self.min_offset) & (start + d >= 0) & (start + d <= room)]
        return d

    def sample(self, index: int, rng: np.random.Generator | None, positive: bool | None = None
               ) -> tuple[int, int]:
        """(video start, audio offset) of a sample; without ``rng`` the fixed sample is the centre
        window, positive for even clip indices and shifted by the largest allowed offset otherwise."""
        room = int(self.lengths[index]) - self.n_frames
        if rng is None:
            start = room // 2
            positive = index % 2 == 0 if positive is None else positive
            offsets = self._offsets(index, start)
            return start, 0 if positive or not len(offsets) else int(offsets[np.argmax(np.abs(offsets))])
        positive = bool(rng.random() < self.positive_fraction) if positive is None else positive
        if positive:
            return int(rng.integers(0, room + 1)), 0
        for _ in range(8):  # a start with at least one allowed offset (always exists at the ends)
            start = int(rng.integers(0, room + 1))
            offsets = self._offsets(index, start)
            if len(offsets):
                return start, int(rng.choice(offsets))
        start = 0 if self._offsets(index, 0).size else room
        return start, int(rng.choice(self._offsets(index, start)))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = self._key(key)
        start, offset = self.sample(index, rng)
        lower = self.frames(index, start, self.n_frames, self.face_size, lower=True).transpose(0, 1)
        mel = _columns(self.mel(index), frame_mel_start(start + offset), self.mel_width)
        return {"lower": lower.contiguous(), "mel": torch.from_numpy(np.ascontiguousarray(mel))[None],
                "label": torch.tensor(1.0 if offset == 0 else 0.0), "offset": offset, "index": index,
                "start": start}


class OpeningDataset(_ClipSet):
    """Opening-reader samples: the lower half of one frame and its landmark-measured mouth opening.

    Parameters
    ----------
    root, clip_ids, split, val_fraction : as :class:`LipSyncDataset`.
    face_size : (h, w) of the lower halves: rows ``S//2:`` of the stored crops resized to it.

    Clips without mediapipe face-mesh landmarks (no opening to learn from) are left out.

    Items (dict)
    ------------
    lower : (3, h, w) float32 RGB in [0, 1].
    opening : float32 inner-lip opening of the frame (:func:`lipsync.data.sync_measure.mouth_opening`).
    index, frame : ints; a plain int key gives the clip's centre frame.
    """

    def __init__(self, root: str | Path, clip_ids: Sequence[str] | None = None, *, split: str = "train",
                 face_size: tuple[int, int] = (48, 96), val_fraction: float = 0.1):
        super().__init__(root, clip_ids, split, 1, 1, val_fraction)
        self.face_size = (int(face_size[0]), int(face_size[1]))
        keep = [i for i in range(len(self.clip_ids)) if torch.isfinite(self.opening(i, 0, 1)).all()]
        if not keep:
            raise DataError(f"{self.root}: no clip of split {split!r} has face-mesh landmarks "
                            "(preprocess with the mediapipe face pipeline)")
        if len(keep) < len(self.clip_ids):
            log.warning("%d of %d clips have no face-mesh landmarks and are left out",
                        len(self.clip_ids) - len(keep), len(self.clip_ids))
        self.clip_ids = [self.clip_ids[i] for i in keep]
        self.lengths = self.lengths[keep]
        self._clips.clear()

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = self._key(key)
        n = int(self.lengths[index])
        frame = n // 2 if rng is None else int(rng.integers(0, n))
        lower = self.frames(index, frame, 1, self.face_size, lower=True)[0]
        return {"lower": lower.contiguous(), "opening": self.opening(index, frame, 1)[0], "index": index,
                "frame": frame}
