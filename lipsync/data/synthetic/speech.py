"""Speech with phoneme timings from the espeak-ng library (``libespeak-ng``), through ctypes.

espeak-ng is asked for phoneme events (``espeakINITIALIZE_PHONEME_EVENTS``) while it
synthesises into a callback, so every phoneme comes with the sample index at which espeak
started it: real timings, not estimates.  The library keeps state between calls, so each
utterance is synthesised in a fresh process (``_espeak_worker.py``, standard library only).
Audio is resampled from espeak's 22050 Hz to 16 kHz.  Only the synthetic-data generator
needs espeak-ng; nothing on the inference path imports this module.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

__all__ = [
    "EspeakError",
    "Phoneme",
    "SpeechParams",
    "Utterance",
    "VOICES",
    "VARIANTS",
    "random_sentence",
    "sample_speech_params",
    "synthesize",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
VOICES = (
    "en-us",
    "en",
    "en-us-nyc",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
)
VARIANTS = (
    "",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "adam",
    "linda",
    "steph",
    "john",
    "max",
    "paul",
)

_WORDS = {
    "adj": "bright quiet tiny heavy purple gentle sharp cheap frozen happy modest brave busy curious "
    "yellow wooden smooth bold famous hungry lovely open round simple sudden tall warm wise",
    "noun": "apple bottle morning farmer window puppy garden teacher engine music ocean pebble "
    "ribbon summer village thunder kitchen bishop whistle feather mountain orange basket "
    "violin shadow monkey blanket zebra judge cheese mirror",
    "verb": "pushes follows watches opens moves throws finds keeps paints visits chooses brings "
    "carries measures fixes touches buys leaves loves misses",
    "prep": "under behind beside over through near above without before",
    "adv": "quickly slowly often maybe softly happily badly really almost",
    "name": "Peter Mary Bob Fiona Judith Oliver Vera Zoe Thomas Wendy Charles Uma",
}
_TEMPLATES = (
    "{name} {verb} the {noun}.",
    "Hello, {name}.",
    "{num} {adj} {noun}s.",
    "Oh, {name}!",
    "The {noun} is {adj}.",
    "Look at the {adj} {noun}!",
    "Is it {adv} {adj}?",
    "{name} loves {num} {noun}s.",
    "The {adj} {noun} {verb} the {noun} {prep} the {noun}.",
    "{name} {adv} {verb} a {adj} {noun}.",
    "Why does the {noun} {adv} look so {adj}?",
    "My {noun} and your {noun} are {adj} today.",
    "{name} said the {noun} was {adj}, but the {noun} was {adj}.",
    "Please bring {num} {adj} {noun}s to {name} by {num} o'clock.",
    "Every {noun} {verb} a {noun}, and {name} {verb} the {adj} {noun}.",
    "Oh, {name}! The {noun} is {adv} {adj}.",
    "We met {num} {adj} {noun}s {prep} the {noun} in {month}.",
)
_NUMBERS = "two three five seven eight nine ten twelve twenty forty".split()
_MONTHS = "January February March April May June July August September October".split()


class EspeakError(RuntimeError):
    """espeak-ng is missing or failed; the message says what to install or what went wrong."""


@dataclass(frozen=True)
class Phoneme:
    """One phoneme: espeak mnemonic (e.g. ``"aI"``, ``"p"``, ``"_:"`` for a pause), times in seconds."""

    symbol: str
    start: float
    end: float


@dataclass(frozen=True)
class SpeechParams:
    """How espeak speaks one utterance."""

    text: str
    voice: str = "en-us"  # espeak voice (language) name, see VOICES
    variant: str = ""  # espeak voice variant ("m3", "f2", "klatt", ...), "" for none
    rate: int = 165  # words per minute, espeak range 80..450
    pitch: int = 50  # 0..99
    pitch_range: int = 50  # 0..99, intonation range
    word_gap: int = 0  # extra pause between words, units of 10 ms


@dataclass(frozen=True)
class Utterance:
    """Synthesised speech: ``wav`` float32 (N,) at ``sample_rate``, phonemes in time order."""

    wav: np.ndarray
    sample_rate: int
    phonemes: tuple[Phoneme, ...]
    params: SpeechParams

    @property
    def duration(self) -> float:
        return len(self.wav) / self.sample_rate


_WORKER = Path(__file__).with_name("_espeak_worker.py")
_EV_PHONEME = 7


def _run_espeak(p: SpeechParams, library: str | None) -> tuple[int, np.ndarray, list]:
    """Synthesise in a fresh process (see ``_espeak_worker``) -> (rate, int16 samples, events)."""
    voice = f"{p.voice}+{p.variant}" if p.variant else p.voice
    req = {
        "library": library,
        "voice": voice,
        "text": p.text,
        "rate": p.rate,
        "pitch": p.pitch,
        "range": p.pitch_range,
        "word_gap": p.word_gap,
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", str(_WORKER)],
            input=json.dumps(req).encode(),
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EspeakError(f"could not run espeak-ng for {p.text!r}: {e}") from e
    head, _, body = proc.stdout.partition(b"\n")
    try:
        info = json.loads(head)
    except json.JSONDecodeError:
        info = {
            "error": f"espeak-ng worker crashed (exit {proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()[-300:]}"
        }
    if proc.returncode != 0 or "error" in info:
        message = info.get("error", f"exit {proc.returncode}")
        if "no voice" in message:
            message += f"; voices: {VOICES}, variants: {VARIANTS}"
        raise EspeakError(message)
    return int(info["sample_rate"]), np.frombuffer(body, "<i2"), info["events"]


@lru_cache(maxsize=8)
def synthesize(params: SpeechParams, sample_rate: int = SAMPLE_RATE, library: str | None = None) -> Utterance:
    """Speak ``params.text`` with espeak-ng; return 16 kHz float32 audio and timed phonemes.

    Each call runs espeak-ng in a fresh process, so the result depends only on the arguments
    (the last few results are cached; the returned ``wav`` is read-only).

    Parameters
    ----------
    params : what to say and how (voice, variant, rate, pitch).
    sample_rate : output rate in Hz (espeak synthesises at 22050 Hz; resampled polyphase).
    library : explicit path/name of libespeak-ng, default found on the system.

    Returns
    -------
    Utterance with ``wav`` float32 (N,) in [-1, 1] and phonemes covering [0, duration]
    (pauses are symbols starting with ``"_"``).

    Raises
    ------
    EspeakError : espeak-ng is not installed, the voice does not exist, or synthesis failed.
    """
    native, raw, events = _run_espeak(params, library)
    g = np.gcd(sample_rate, native)
    wav = resample_poly(raw.astype(np.float32) / 32768.0, sample_rate // g, native // g).astype(np.float32)
    duration = len(wav) / sample_rate
    starts = [(s / native, sym) for kind, s, sym in events if kind == _EV_PHONEME and sym]
    phonemes = []
    for i, (start, sym) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else duration
        if end > start:
            phonemes.append(Phoneme(sym, round(start, 5), round(min(end, duration), 5)))
    if not phonemes:
        raise EspeakError(f"espeak-ng returned no phonemes for {params.text!r}")
    wav = np.clip(wav, -1, 1)
    wav.setflags(write=False)
    return Utterance(wav, sample_rate, tuple(phonemes), params)


def _fill_template(rng: np.random.Generator, template: str) -> str:
    words = {k: v.split() for k, v in _WORDS.items()}
    words["num"], words["month"] = _NUMBERS, _MONTHS
    out = []
    for part in template.replace("{", "\0{").replace("}", "}\0").split("\0"):
        if part.startswith("{") and part.endswith("}"):
            choices = words[part[1:-1]]
            out.append(choices[rng.integers(len(choices))])
        else:
            out.append(part)
    sentence = "".join(out)
    return sentence[0].upper() + sentence[1:]


def random_sentence(rng: np.random.Generator, max_words: int | None = None) -> str:
    """A grammatical English sentence from word lists and templates, drawn with ``rng``.

    With ``max_words``, a template that fits is preferred; if none of a few draws fits, the
    sentence is cut to ``max_words`` words (keeping a final full stop).
    """
    candidates = [_fill_template(rng, _TEMPLATES[i]) for i in rng.permutation(len(_TEMPLATES))[:6]]
    if max_words is None:
        return candidates[0]
    fitting = [c for c in candidates if len(c.split()) <= max_words]
    if fitting:
        return max(fitting, key=lambda c: len(c.split()))
    tokens = candidates[0].split()[: max(1, max_words)]
    return " ".join(tokens).rstrip(",.!?") + "."


def sample_speech_params(rng: np.random.Generator, text: str) -> SpeechParams:
    """Random voice, variant, rate and pitch for ``text``."""
    return SpeechParams(
        text=text,
        voice=VOICES[rng.integers(len(VOICES))],
        variant=VARIANTS[rng.integers(len(VARIANTS))],
        rate=int(rng.integers(125, 200)),
        pitch=int(rng.integers(25, 80)),
        pitch_range=int(rng.integers(25, 90)),
        word_gap=int(rng.choice([0, 0, 0, 1, 2])),
    )
