"""Phonemes -> visemes -> per-frame mouth parameters, with coarticulation.

Each espeak phoneme maps to a viseme, a target mouth shape of four parameters in [0, 1]:

- ``open``: jaw / lip opening (0 closed lips, 1 widest "ah");
- ``width``: lip spread (0 narrow, 0.5 neutral, 1 spread as in "ee");
- ``round``: lip rounding / protrusion ("oo", "w");
- ``teeth``: how much of the teeth shows between the lips.

Coarticulation follows the dominance model of Cohen and Massaro (1993): every segment
pulls the mouth toward its target with a weight that is flat over the segment and decays
exponentially outside it; the trajectory is the dominance-weighted mean of the targets.
Lip-critical sounds (p b m, f v, w, oo) dominate strongly, so bilabials close the lips even
between open vowels, while h, k, g take their shape from the neighbours.  The trajectory is
evaluated at 400 Hz and averaged over each video frame's exposure interval.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from .speech import Phoneme

__all__ = ["PARAMS", "VISEMES", "mouth_from_audio", "mouth_track", "opening", "phoneme_visemes"]

log = logging.getLogger(__name__)

PARAMS = ("open", "width", "round", "teeth")

# viseme name: ((open, width, round, teeth), dominance)
VISEMES: dict[str, tuple[tuple[float, float, float, float], float]] = {
    "rest": ((0.0, 0.5, 0.0, 0.0), 0.6),
    "bilabial": ((0.0, 0.45, 0.15, 0.0), 4.0),  # p b m: lips pressed shut
    "labiodental": ((0.07, 0.5, 0.0, 1.0), 2.5),  # f v: upper teeth on the lower lip
    "dental": ((0.2, 0.55, 0.0, 0.8), 1.0),  # th
    "alveolar": ((0.22, 0.55, 0.0, 0.5), 0.5),  # t d n l
    "sibilant": ((0.1, 0.62, 0.0, 0.95), 1.5),  # s z: teeth close together
    "postalveolar": ((0.17, 0.35, 0.6, 0.8), 1.5),  # sh zh ch j
    "r": ((0.2, 0.4, 0.5, 0.3), 0.7),
    "velar": ((0.3, 0.5, 0.1, 0.3), 0.3),  # k g ng
    "glottal": ((0.35, 0.5, 0.0, 0.2), 0.15),  # h
    "w": ((0.1, 0.15, 0.95, 0.0), 1.5),
    "j": ((0.2, 0.7, 0.0, 0.5), 0.7),
    "i": ((0.22, 0.88, 0.0, 0.7), 1.0),  # ee, i
    "e": ((0.48, 0.72, 0.0, 0.5), 1.0),  # e, air
    "a": ((0.9, 0.6, 0.0, 0.3), 1.2),  # ah, a
    "schwa": ((0.4, 0.5, 0.0, 0.3), 0.6),  # @, er
    "V": ((0.58, 0.52, 0.0, 0.3), 1.0),  # strut
    "o": ((0.68, 0.35, 0.7, 0.2), 1.2),  # aw, lot
    "ou": ((0.45, 0.3, 0.8, 0.1), 1.2),  # oh
    "u": ((0.18, 0.15, 0.95, 0.0), 1.5),  # oo
}

_SINGLE = {
    "p": "bilabial",
    "b": "bilabial",
    "m": "bilabial",
    "f": "labiodental",
    "v": "labiodental",
    "T": "dental",
    "D": "dental",
    "t": "alveolar",
    "d": "alveolar",
    "n": "alveolar",
    "l": "alveolar",
    "L": "alveolar",
    "?": "glottal",
    "s": "sibilant",
    "z": "sibilant",
    "S": "postalveolar",
    "Z": "postalveolar",
    "tS": "postalveolar",
    "dZ": "postalveolar",
    "r": "r",
    "k": "velar",
    "g": "velar",
    "N": "velar",
    "x": "velar",
    "h": "glottal",
    "w": "w",
    "W": "w",
    "j": "j",
    "i": "i",
    "i:": "i",
    "I": "i",
    "y": "u",
    "e": "e",
    "E": "e",
    "e:": "e",
    "&": "a",
    "a": "a",
    "A": "a",
    "A:": "a",
    "aa": "a",
    "a:": "a",
    "@": "schwa",
    "3": "schwa",
    "3:": "schwa",
    "@L": "schwa",
    "V": "V",
    "0": "o",
    "O": "o",
    "O:": "o",
    "o": "ou",
    "o:": "ou",
    "u": "u",
    "u:": "u",
    "U": "u",
}
_MULTI = {
    "aI": ("a", "i"),
    "aU": ("a", "u"),
    "eI": ("e", "i"),
    "OI": ("o", "i"),
    "oU": ("ou", "u"),
    "@U": ("schwa", "u"),
    "i@": ("i", "schwa"),
    "e@": ("e", "schwa"),
    "U@": ("u", "schwa"),
    "aI@": ("a", "i", "schwa"),
    "aU@": ("a", "u", "schwa"),
    "A@": ("a", "schwa"),
    "O@": ("o", "schwa"),
    "i@3": ("i", "schwa"),
    "o@": ("ou", "schwa"),
    "eI@": ("e", "i", "schwa"),
}
_STRIP = "0123456789#-[;,'!^%=~"
_DT = 1.0 / 400.0  # trajectory resolution (s)
_TAU = 0.025  # dominance decay time constant outside a segment (s)


def phoneme_visemes(symbol: str) -> tuple[str, ...]:
    """Viseme names for one espeak phoneme mnemonic (diphthongs give two or three)."""
    if not symbol or symbol.startswith("_") or symbol in ("|", "||"):
        return ("rest",)
    candidates = [symbol, symbol.rstrip(_STRIP), symbol.strip(_STRIP)]
    for s in candidates:
        if s in _MULTI:
            return _MULTI[s]
        if s in _SINGLE:
            return (_SINGLE[s],)
    for s in (candidates[-1][:2], candidates[-1][:1]):
        if s in _SINGLE:
            return (_SINGLE[s],)
    log.debug("no viseme for espeak phoneme %r; using schwa", symbol)
    return ("schwa",)


def _segments(phonemes: Sequence[Phoneme]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split phonemes into viseme segments -> starts, ends, targets (K, 4), dominance (K,)."""
    starts, ends, targets, dominance = [], [], [], []
    for ph in phonemes:
        names = phoneme_visemes(ph.symbol)
        edges = np.linspace(ph.start, ph.end, len(names) + 1)
        for name, a, b in zip(names, edges[:-1], edges[1:]):
            target, dom = VISEMES[name]
            starts.append(a)
            ends.append(b)
            targets.append(target)
            dominance.append(dom)
    return (np.asarray(starts), np.asarray(ends), np.asarray(targets, np.float64), np.asarray(dominance))


def mouth_track(
    phonemes: Sequence[Phoneme],
    n_frames: int,
    fps: float = 25.0,
    offset: float = 0.0,
    articulation: float = 1.0,
) -> np.ndarray:
    """Per-frame mouth parameters for timed phonemes.

    Parameters
    ----------
    phonemes : timed phonemes (seconds, relative to the audio start before ``offset``).
    n_frames : number of video frames; frame i covers [i / fps, (i + 1) / fps).
    fps : video frame rate.
    offset : seconds of audio before the first phoneme (leading silence), added to all times.
    articulation : speaker style; scales the opening (0.6 mumbles, 1.3 over-articulates).

    Returns
    -------
    (n_frames, 4) float32 in [0, 1], columns ``PARAMS`` = (open, width, round, teeth).
    Times outside every phoneme are at rest (closed lips).
    """
    if n_frames <= 0:
        return np.zeros((0, len(PARAMS)), np.float32)
    starts, ends, targets, dominance = _segments(phonemes)
    rest, rest_dom = VISEMES["rest"]
    # a rest segment before and after the speech, so silence closes the mouth
    total = n_frames / fps
    first = (starts.min() + offset) if len(starts) else total
    last = (ends.max() + offset) if len(ends) else 0.0
    starts = np.concatenate([[-1.0, last], starts + offset])
    ends = np.concatenate([[first, max(total, last) + 1.0], ends + offset])
    targets = np.concatenate([[rest, rest], targets])
    dominance = np.concatenate([[rest_dom, rest_dom], dominance])

    t = (np.arange(int(np.ceil(total / _DT))) + 0.5) * _DT  # (N,)
    outside = np.maximum(0.0, np.maximum(starts[None] - t[:, None], t[:, None] - ends[None]))  # (N, K)
    weight = dominance[None] * np.exp(-outside / _TAU)
    traj = (weight @ targets) / weight.sum(1, keepdims=True)  # (N, 4)
    # average over each frame's exposure interval
    frame_of = np.minimum((t * fps).astype(np.int64), n_frames - 1)
    counts = np.bincount(frame_of, minlength=n_frames).astype(np.float64)
    out = np.stack([np.bincount(frame_of, traj[:, j], minlength=n_frames) for j in range(traj.shape[1])], 1)
    out /= np.maximum(counts, 1)[:, None]
    out[:, 0] *= articulation
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def opening(mouth: np.ndarray) -> np.ndarray:
    """The lip opening a mouth track demands: (T, 4) -> (T,) float32 in [0, 1].

    The renderer draws the inner lip gap proportional to this value, so it is the ground
    truth against which a measured opening is correlated.
    """
    mouth = np.asarray(mouth, np.float32)
    if mouth.ndim != 2 or mouth.shape[1] != len(PARAMS):
        raise ValueError(f"mouth track must be (T, {len(PARAMS)}), got shape {mouth.shape}")
    return mouth[:, 0].copy()


def mouth_from_audio(
    wav: np.ndarray, n_frames: int, fps: float = 25.0, sample_rate: int = 16000
) -> np.ndarray:
    """Rough mouth track from a waveform alone, for audio without phoneme timings.

    The opening follows the loudness of the 300-3000 Hz band (log energy per frame, scaled
    between the 10th and 97th percentiles); width stays neutral and teeth follow the opening.
    Far less exact than ``mouth_track``; use it only when no transcript timing exists.

    Returns (n_frames, 4) float32 in [0, 1].
    """
    wav = np.asarray(wav, np.float32).ravel()
    hop = sample_rate / fps
    win = int(round(2 * hop))
    out = np.zeros((n_frames, len(PARAMS)), np.float32)
    out[:, 1] = 0.5
    if len(wav) == 0 or n_frames == 0:
        return out
    freqs = np.fft.rfftfreq(win, 1.0 / sample_rate)
    band = (freqs >= 300) & (freqs <= 3000)
    window = np.hanning(win).astype(np.float32)
    energy = np.empty(n_frames)
    for i in range(n_frames):
        c = int((i + 0.5) * hop)
        seg = wav[max(0, c - win // 2) : c + win // 2]
        seg = np.pad(seg, (0, win - len(seg)))
        spec = np.abs(np.fft.rfft(seg * window)) ** 2
        energy[i] = 10 * np.log10(spec[band].sum() + 1e-10)
    lo, hi = np.percentile(energy, 10), np.percentile(energy, 97)
    level = np.clip((energy - lo - 0.25 * (hi - lo)) / max(0.75 * (hi - lo), 1e-6), 0, 1)
    out[:, 0] = np.convolve(np.pad(level, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    out[:, 3] = 0.4 * out[:, 0]
    return out
