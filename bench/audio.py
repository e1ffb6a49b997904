"""Benchmark the audio front end: feature throughput and peak memory of a long decode.

Prints two tables:

1. seconds of audio featurised per second of compute (higher is better) for the plain
   librosa computation of Wav2Lip's features, the project's numpy path and its torch
   path (CPU, batched CPU, and CUDA when available);
2. peak resident memory of ``load_audio`` decoding a long file (default: 1 hour of
   44.1 kHz stereo mp3, generated once into a cache folder outside the repository),
   measured in a fresh subprocess and compared with the size of the decoded result.

Run from the repository root: ``python -m bench.audio`` (or ``python bench/audio.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a file: bench/ would shadow the audio package
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import audio  # noqa: E402
from marlin.cli import HelpFormatter  # noqa: E402

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "marlin-lipsync-bench"


def speech_signal(seconds: float, sr: int = 16000, seed: int = 0, start: float = 0.0) -> np.ndarray:
    """A speech-like test signal: a gliding harmonic voice gated at syllable rate, plus breath noise."""
    rng = np.random.default_rng(seed)
    t = start + np.arange(int(round(seconds * sr))) / sr
    # pitch gliding 110 +- 25 Hz at 0.5 Hz: phase is the integral of 2 pi f(t)
    phase = 2 * np.pi * (110 * t - 25 / np.pi * np.cos(np.pi * t))
    voice = sum(np.cos(k * phase) / k ** 1.2 for k in range(1, 16))
    gate = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 0.5
    return (0.2 * gate * voice + 0.008 * rng.standard_normal(len(t))).astype(np.float32)


def librosa_features(wav: np.ndarray) -> np.ndarray:
    """The release's computation with plain librosa calls (reflect padding made explicit)."""
    import librosa

    y = np.concatenate([wav[:1], wav[1:] - 0.97 * wav[:-1]])
    spec = np.abs(librosa.stft(y, n_fft=800, hop_length=200, win_length=800, pad_mode="reflect"))
    bank = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, bank @ spec)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def best_time(fn, repeats: int, sync=None) -> float:
    fn()  # warm-up (imports, caches, kernel selection)
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def throughput_table(seconds: float, repeats: int, batch: int) -> list[tuple[str, str, float, float]]:
    wav = speech_signal(seconds)
    # row 0 of the batch is ``wav`` itself (seed 0), so every row of the table is checked against librosa
    batch_wav = torch.from_numpy(np.stack([speech_signal(seconds, seed=s) for s in range(batch)]))
    cpu_wav = torch.from_numpy(wav)
    rows = []
    cases = [
        ("librosa reference", "cpu", 1, lambda: librosa_features(wav), None),
        ("audio.melspectrogram (numpy)", "cpu", 1, lambda: audio.melspectrogram(wav), None),
        ("audio.melspectrogram_torch", "cpu", 1, lambda: audio.melspectrogram_torch(cpu_wav), None),
        (f"audio.melspectrogram_torch B={batch}", "cpu", batch,
         lambda: audio.melspectrogram_torch(batch_wav), None),
    ]
    if torch.cuda.is_available():
        gpu_wav, gpu_batch = torch.from_numpy(wav).cuda(), batch_wav.cuda()
        sync = torch.cuda.synchronize
        cases += [("audio.melspectrogram_torch", "cuda", 1,
                   lambda: audio.melspectrogram_torch(gpu_wav), sync),
                  (f"audio.melspectrogram_torch B={batch}", "cuda", batch,
                   lambda: audio.melspectrogram_torch(gpu_batch), sync)]
    reference = librosa_features(wav)
    for name, device, n, fn, sync in tqdm(cases, desc="features", leave=False):
        elapsed = best_time(fn, repeats, sync)
        out = fn()
        out = out.cpu().numpy() if isinstance(out, torch.Tensor) else out
        err = float(np.abs((out if out.ndim == 2 else out[0]) - reference).max())  # row 0 is ``wav``
        rows.append((name, device, n * seconds / elapsed, err))
    return rows


def make_long_file(path: Path, hours: float, sr: int = 44100) -> Path:
    """Encode ``hours`` of speech-like stereo audio as mp3/m4a, chunk by chunk (bounded memory)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = {".mp3": "libmp3lame", ".m4a": "aac"}[path.suffix]
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    chunk = 10.0
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream(codec, rate=sr)
        stream.layout = "stereo"
        stream.bit_rate = 96000
        resampler = av.AudioResampler(format=stream.format.name, layout="stereo", rate=sr)
        for k in tqdm(range(int(np.ceil(hours * 3600 / chunk))), desc=f"writing {path.name}", leave=False):
            mono = speech_signal(chunk, sr, seed=k, start=k * chunk)
            pcm = (np.stack([mono, 0.8 * mono], axis=1) * 32767).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
            frame.sample_rate = sr
            for f in resampler.resample(frame):
                for packet in stream.encode(f):
                    out.mux(packet)
        for f in resampler.resample(None):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    os.replace(tmp, path)
    return path


# Runs in a fresh interpreter.  Peak = VmHWM (this process image's high-water RSS); ru_maxrss
# would also count the parent's memory, which Linux carries over through fork/exec.
_DECODE_PROBE = r"""
import json, sys, time
import audio
def status_mb(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024
base = status_mb("VmRSS")
t0 = time.perf_counter()
wav = audio.load_audio(sys.argv[1])
elapsed = time.perf_counter() - t0
print(json.dumps({"base_mb": base, "peak_mb": status_mb("VmHWM"), "result_mb": wav.nbytes / 2**20,
                  "seconds": len(wav) / 16000, "decode_s": elapsed}))
"""


def decode_memory(path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    done = subprocess.run([sys.executable, "-c", _DECODE_PROBE, str(path)], capture_output=True, text=True,
                          env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="audio length for the feature timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    parser.add_argument("--batch", type=int, default=8, help="batch size of the batched torch row")
    parser.add_argument("--hours", type=float, default=1.0, help="length of the file decoded for peak memory")
    parser.add_argument("--format", choices=["mp3", "m4a"], default="mp3", help="container of that file")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the long file is kept")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="run the long-decode memory measurement")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.repeats < 1 or args.batch < 1 or args.hours <= 0:
        parser.error("--seconds, --repeats, --batch and --hours must be positive")
    warnings.filterwarnings("ignore", category=UserWarning, module="librosa")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}, "
          f"cuda {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}")
    print(f"\nWav2Lip mel features of {args.seconds:g} s of speech-like audio (best of {args.repeats})")
    print(f"{'path':40s} {'device':6s} {'audio s / s':>12s} {'max |diff| vs librosa':>22s}")
    for name, device, speed, err in throughput_table(args.seconds, args.repeats, args.batch):
        print(f"{name:40s} {device:6s} {speed:12.0f} {err:22.2e}")
    if args.memory:
        path = make_long_file(args.cache_dir / f"speech_{args.hours:g}h_44k_stereo.{args.format}", args.hours)
        m = decode_memory(path)
        size = path.stat().st_size / 2**20
        print(f"\nload_audio of {path} ({size:.0f} MB, 44.1 kHz stereo -> 16 kHz mono)")
        speed = m["seconds"] / m["decode_s"]
        print(f"{'decoded audio':28s} {m['seconds'] / 3600:10.3f} h  ({speed:.0f}x real time)")
        print(f"{'result array':28s} {m['result_mb']:10.1f} MB")
        print(f"{'RSS before decoding':28s} {m['base_mb']:10.1f} MB")
        print(f"{'peak RSS':28s} {m['peak_mb']:10.1f} MB")
        print(f"{'peak - before - result':28s} {m['peak_mb'] - m['base_mb'] - m['result_mb']:10.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
